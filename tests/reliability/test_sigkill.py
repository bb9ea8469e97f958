"""SIGKILL at random moments, restart, repeat: the database stays intact and every
committed detection survives, exactly once (the fault test of the reliability issue)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 1800  # generous: a busy 2-core machine runs 30 s of audio per ~1.5 s


def _run(src: Path, db: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "animalclap_edge",
        "run",
        "--source",
        str(src),
        "--db",
        str(db),
        "--quiet",
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute("SELECT detection_id FROM detections")]


def _check(db: Path) -> tuple[str, int, int]:
    with sqlite3.connect(db) as c:
        ok = c.execute("PRAGMA integrity_check").fetchone()[0]
        n = c.execute("SELECT count(*) FROM detections").fetchone()[0]
        queued = c.execute("SELECT count(*) FROM detections WHERE queued = 1").fetchone()[0]
    return ok, n, queued


def _finished(db: Path) -> int:
    """Recordings the run has finished so far, read without creating the file."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return c.execute(  # an open recording has its row from the start
                "SELECT count(*) FROM recordings WHERE coalesce(reason, '') NOT LIKE 'open:%'"
            ).fetchone()[0]
    except sqlite3.OperationalError:  # schema not written yet, or a writer holds it
        return 0


def _kill_after_progress(proc: subprocess.Popen, db: Path, delay_s: float) -> bool:
    """SIGKILL once the run has finished one more recording, plus delay_s.

    Waiting for progress, not a fixed time, keeps the kills inside the run on fast and
    slow machines alike (a fixed sleep lets a fast CI machine finish before the kill).
    Returns whether the process was still running when killed."""
    before, deadline = _finished(db), time.monotonic() + TIMEOUT_S
    while proc.poll() is None and _finished(db) <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay_s)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    return True


def kill_and_restart(
    orca_folder, tmp: Path, kills: int, files: int, seed: int = 0, spread: float = 1.0
) -> dict:
    """Each kill lands a random time (up to `spread` recordings' worth) after the run
    finished its next recording, so it may fall mid-window, mid-commit or mid-decode."""
    src = orca_folder(tmp / "in", files)
    reference = tmp / "reference.db"
    t0 = time.monotonic()
    assert _run(src, reference).wait(TIMEOUT_S) == 0
    per_file_s = (time.monotonic() - t0) / files  # an overestimate: includes start-up
    want = set(_ids(reference))
    db, rng = tmp / "killed.db", random.Random(seed)
    committed: set[str] = set()
    survived = mid_run = partial = 0
    for _ in range(kills):
        proc = _run(src, db)
        mid_run += _kill_after_progress(proc, db, rng.uniform(0, spread * per_file_s))
        proc.wait(60)
        if not db.exists():
            continue  # killed before the database was created
        ok, n, queued = _check(db)
        assert ok == "ok", ok
        ids = _ids(db)
        assert len(ids) == len(set(ids)) == n == queued  # no duplicates; each one queued
        assert committed <= set(ids), "a committed detection was lost"
        partial += len(set(ids) - committed) > 0 and len(ids) < len(want)
        committed = set(ids)
        survived += 1
    assert _run(src, db).wait(TIMEOUT_S) == 0  # and a final uninterrupted run finishes the job
    final = _ids(db)
    assert len(final) == len(set(final)) and set(final) == want
    with sqlite3.connect(db) as c:  # the rows the kills left open are closed by the rerun
        assert c.execute("SELECT status, count(*) FROM recordings GROUP BY 1").fetchall() == [
            ("ok", files)
        ]
    return {
        "kills": kills,
        "killed_mid_run": mid_run,
        "checked": survived,
        "kills_that_had_added_rows": partial,
        "detections": len(want),
        "files": files,
        "reference_s_per_file": round(per_file_s, 3),
    }


def test_ten_sigkills_lose_nothing(orca_folder, tmp_path):
    r = kill_and_restart(orca_folder, tmp_path, kills=10, files=30)
    print(r)
    # the kills must land while detections are being written, or the test proves nothing
    assert r["killed_mid_run"] >= 8 and r["kills_that_had_added_rows"] >= 5, r


@pytest.mark.slow
def test_a_hundred_sigkills_lose_nothing(orca_folder, tmp_path):
    r = kill_and_restart(orca_folder, tmp_path, kills=100, files=200, seed=1, spread=0.5)
    print(r)
    assert r["killed_mid_run"] >= 90 and r["kills_that_had_added_rows"] >= 20, r
