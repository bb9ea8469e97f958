"""Whether the system clock, which stamps live audio, can be trusted."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path


def system_clock_synchronized() -> tuple[bool, str]:
    """Whether the system clock is NTP-synchronized, and how we know. Never raises."""
    if Path("/run/systemd/timesync/synchronized").exists():
        return True, "system clock synchronized (systemd-timesyncd)"
    try:
        r = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"cannot tell whether the system clock is synchronized ({type(e).__name__})"
    value = r.stdout.strip().lower()
    if value == "yes":
        return True, "system clock synchronized (timedatectl NTPSynchronized=yes)"
    if value == "no":
        return False, "system clock not synchronized (timedatectl NTPSynchronized=no)"
    return (
        False,
        "cannot tell whether the system clock is synchronized (timedatectl gave no answer)",
    )


def after_clock_step(stepped: float, at: float) -> tuple[datetime, bool, str]:
    """(start, trusted, clock_note) of the live recording that begins at wall time `at`
    (seconds) because the clock was set by `stepped` seconds mid-stream."""
    trusted, sync = system_clock_synchronized()
    note = (
        f"wall clock after it was set {stepped:+.0f} s mid-stream, which ended the "
        f"recording before; {sync}"
    )
    return datetime.fromtimestamp(at, timezone.utc), trusted, note
