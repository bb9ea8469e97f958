"""Detector.run's accounting of a recording while it is open, and when it is stopped."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import numpy as np
import pytest

from animalclap_edge.audio.decode import read_all
from animalclap_edge.detector import OPEN_REASON, Detector
from animalclap_edge.sources import Recording
from animalclap_edge.store import DetectionStore

SR = 48_000


class _LiveOnce:
    """A source of one live recording, as a microphone gives it (no file, no digest)."""

    name = "mic:test"

    def __init__(self, rec: Recording):
        self.rec = rec

    def recordings(self) -> Iterator[Recording]:
        yield self.rec

    def close(self) -> None:
        pass


def _row(db) -> tuple:
    with sqlite3.connect(db) as c:
        return c.execute(
            "SELECT status, reason, duration_s, n_windows, n_detections FROM recordings"
        ).fetchone()


def test_an_open_recording_keeps_its_row_current_and_says_when_it_was_stopped(
    tiny_bundle, realaudio, tmp_path
):
    """A live stream cut by a power failure left no recordings row at all, so months of
    effort (minutes recorded) were missing from the card; a stop (SIGTERM) as well."""
    calls = np.concatenate([read_all(f, SR) for f in sorted(realaudio.glob("srkw*.wav"))])
    audio = np.resize(calls, 12 * SR)  # orca calls end to end, repeated to 12 s
    db, seen = tmp_path / "d.db", []

    def blocks() -> Iterator[np.ndarray]:
        for i in range(4):
            yield audio[i * 3 * SR : (i + 1) * 3 * SR]
            seen.append(_row(db))  # what a kill -9 at this moment would leave
        raise KeyboardInterrupt  # how SIGTERM and Ctrl-C reach the run

    det = Detector.load(tiny_bundle, warn_notice=False)
    det.progress_every_s = 0.0  # every batch: the default 30 s would outlast the test
    rec = Recording("mic:test@2026-11-27T12:00:00Z", SR, None, False, "test clock", blocks())
    try:
        with DetectionStore(db) as store, pytest.raises(KeyboardInterrupt):
            det.run(_LiveOnce(rec), store)
    finally:
        det.close()
    assert [s[:2] for s in seen] == [("partial", OPEN_REASON)] * 4
    durations = [s[2] for s in seen]
    assert durations == sorted(durations) and durations[-1] > 0
    status, reason, duration, n_windows, n_dets = _row(db)
    assert status == "partial" and duration == pytest.approx(12.0)
    assert reason == "stopped after 12.0 s: the process was stopped (Ctrl-C or SIGTERM)"
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM detections").fetchone()[0] == n_dets
    assert n_windows >= 6
