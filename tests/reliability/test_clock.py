"""Clocks that reset or jump backwards must not make new audio look like a replay.

A recorder without a real-time clock boots at the same wall time every day, so two
live sessions can carry identical start times; a raw PCM pipe has no time at all.
Detection ids derive from (recording id, window offset), so these sessions must get
distinct recording ids or the second one's detections are dropped as duplicates.
"""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from animalclap_edge.config import EdgeConfig
from animalclap_edge.detector import Detector
from animalclap_edge.sources import StdinSource
from animalclap_edge.store import DetectionStore

REPO = Path(__file__).resolve().parents[2]
SR = 48_000


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_the_same_pipe_audio_twice_is_logged_twice_not_passed_over(orca_pcm, tmp_path):
    """`arecord | animalclap-edge run --source -` restarted: the second session is new audio."""
    pcm, db = orca_pcm(20.0), tmp_path / "d.db"
    cmd = [sys.executable, "-m", "animalclap_edge", "run", "--source", "-", "--db", str(db)]
    cmd += ["--stdin-rate", str(SR), "--quiet"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    counts = []
    for _ in range(2):
        p = subprocess.run(cmd, input=pcm, cwd=REPO, env=env, capture_output=True, timeout=300)
        assert p.returncode == 0, p.stderr.decode()[-2000:]
        assert b"already done" not in p.stderr
        counts.append(_count(db, "detections"))
    assert counts[0] > 0 and counts[1] == 2 * counts[0]
    assert _count(db, "recordings") == 2
    # raw PCM does not say its rate: without --stdin-rate it is refused, not guessed
    bare = [c for c in cmd if c not in ("--stdin-rate", str(SR))]
    p = subprocess.run(bare, input=pcm, cwd=REPO, env=env, capture_output=True, timeout=300)
    assert p.returncode == 2 and b"needs its sample rate: add --stdin-rate" in p.stderr
    assert _count(db, "recordings") == 2


def test_two_sessions_with_the_same_reset_clock_keep_both(orca_pcm, tmp_path):
    """Both sessions start at 2000-01-01T00:00Z, as a board without an RTC does after boot."""
    pcm = orca_pcm(12.0)
    boot = datetime(2000, 1, 1, tzinfo=timezone.utc)
    cfg = EdgeConfig.model_validate({"scoring": {"threshold": 0.0, "top_k": 2}})
    det = Detector.load(None, cfg)
    try:
        with DetectionStore(tmp_path / "d.db") as store:
            for _ in range(2):
                src = StdinSource(io.BytesIO(pcm), SR, 1, "s16le", SR, start_time=boot)
                det.run(src, store)
            recs = store.recordings()
            dets = store.detections()
    finally:
        det.close()
    assert len(recs) == 2 and recs[0].recording_id != recs[1].recording_id
    assert all(r.status == "ok" and r.start_time_utc.startswith("2000-01-01") for r in recs)
    per_rec = {r.recording_id: r.n_detections for r in recs}
    assert len(dets) == sum(per_rec.values()) and set(per_rec.values()) == {len(dets) // 2}
    # window times come from the sample clock: the same offsets in both sessions
    starts = [sorted(d.window_start_s for d in dets if d.recording_id == r) for r in per_rec]
    assert starts[0] == starts[1]
