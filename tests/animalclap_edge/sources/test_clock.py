"""Whether the system clock is synchronized: never raises, reads timedatectl."""

from __future__ import annotations

from pathlib import Path

import pytest

from animalclap_edge.sources import (
    system_clock_synchronized,
)


def test_system_clock_check_never_raises():
    ok, why = system_clock_synchronized()
    assert isinstance(ok, bool) and why and "\n" not in why


@pytest.mark.skipif(
    Path("/run/systemd/timesync/synchronized").exists(),
    reason="timesyncd's flag file answers before timedatectl is asked",
)
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("yes", (True, "system clock synchronized (timedatectl NTPSynchronized=yes)")),
        ("no", (False, "system clock not synchronized (timedatectl NTPSynchronized=no)")),
        (
            "",
            (
                False,
                "cannot tell whether the system clock is synchronized (timedatectl gave no answer)",
            ),
        ),
        (None, (False, "cannot tell whether the system clock is synchronized (FileNotFoundError)")),
    ],
)
def test_system_clock_check_reads_timedatectl(tmp_path, monkeypatch, answer, expected):
    """Every live detection's clock_trusted comes from this answer."""
    if answer is not None:  # None: no timedatectl at all (a minimal image)
        fake = tmp_path / "timedatectl"
        fake.write_text(f"#!/bin/sh\nprintf '{answer}\\n'\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert system_clock_synchronized() == expected
