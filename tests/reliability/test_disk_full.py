"""Fill the disk: the database and clips on a real 16 MB tmpfs, and clip audio for
about three times that. The runtime stays up, retention makes room (clips resume),
and nothing committed is lost: the detections equal those of the same run on a
roomy disk (the fault test of the reliability issue)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from animalclap_edge.diskspace import percent_full

DISK_MB = 16
FILES = 12  # x 30 s: ~45 MB of clips, about 3x the disk
TIMEOUT_S = 600
# Relative paths, and each run started in its own folder: the two configs are the same
# file, so the config hash (part of every row) is the same on both disks.
# threshold 0 / top_k 3 / windows that do not overlap: every window gives three events,
# so three clips, for half the inference of the default hop.
CONFIG = """\
audio:
  hop_s: 3.0
scoring:
  threshold: 0.0
  top_k: 3
storage:
  save_clips: true
  clips_dir: clips
  max_disk_percent: 90
  retention_low_percent: 70
  keep_examples_per_species: 1
"""


def _start(src: Path, workdir: Path) -> subprocess.Popen:
    (workdir / "edge.yaml").write_text(CONFIG, encoding="utf-8")
    cmd = [sys.executable, "-m", "animalclap_edge", "run", "--source", str(src)]
    cmd += ["--db", "detections.db", "--config", "edge.yaml", "--quiet"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _rows(db: Path, sql: str) -> list[tuple]:
    # closing(): a connection left open would keep the tmpfs busy at unmount
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return c.execute(sql).fetchall()


# Everything a run decides about a detection or event, not when or in which run.
_DET = (
    "detection_id, recording_id, window_start_s, window_end_s, start_time_utc, clock_trusted, "
    "bundle_id, config_hash, rank, level, taxon, score, probability, traits_json"
)
_EVENT = (
    "event_id, recording_id, level, taxon, start_s, end_s, n_windows, max_probability, "
    "mean_probability, config_hash"
)


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "sd"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small real filesystem")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        why = (r.stderr.strip() or f"exit {r.returncode}").splitlines()[-1]
        pytest.skip(f"cannot mount a {DISK_MB} MB tmpfs (needs root): {why}")
    try:
        yield mnt
    finally:
        # lazy (-l) only if a straggler still holds a file: never leave a mount behind
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_keeps_the_runtime_up_and_loses_nothing(orca_folder, tmp_path, small_disk):
    src = orca_folder(tmp_path / f"in-{uuid.uuid4().hex[:6]}", FILES)
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    # Both at once: two cores, and the test stays under a minute.
    procs = {"full": _start(src, small_disk), "roomy": _start(src, roomy)}
    errs = {k: p.communicate(timeout=TIMEOUT_S)[1] for k, p in procs.items()}
    for k, p in procs.items():
        assert p.returncode == 0, f"{k} disk run failed:\n{errs[k][-3000:]}"

    full_db, ref_db = small_disk / "detections.db", roomy / "detections.db"
    clip_bytes = sum(f.stat().st_size for f in (roomy / "clips").rglob("*.flac"))
    assert clip_bytes > 2.5 * DISK_MB * 2**20, "the run must write several disks' worth of clips"

    # nothing committed lost: the same detections and events as on the roomy disk
    assert _rows(full_db, f"SELECT {_DET} FROM detections ORDER BY detection_id") == _rows(
        ref_db, f"SELECT {_DET} FROM detections ORDER BY detection_id"
    )
    assert _rows(full_db, f"SELECT {_EVENT} FROM events ORDER BY event_id") == _rows(
        ref_db, f"SELECT {_EVENT} FROM events ORDER BY event_id"
    )
    assert _rows(full_db, "SELECT count(*) FROM detections WHERE queued = 1") == _rows(
        ref_db, "SELECT count(*) FROM detections"
    )  # every one queued to be sent
    recs = _rows(full_db, "SELECT status FROM recordings")
    assert recs == [("ok",)] * FILES
    assert _rows(full_db, "PRAGMA integrity_check") == [("ok",)]

    # retention acted, said so on stderr and in each event it took audio from
    notes = [
        n for (n,) in _rows(full_db, "SELECT clip_note FROM events WHERE clip_note IS NOT NULL")
    ]
    deleted = [n for n in notes if n.startswith("clip deleted by retention")]
    assert deleted and all("storage.max_disk_percent 90" in n for n in deleted)
    assert len(deleted) == len(notes), "clips were refused: retention did not make room"
    assert "retention (disk)" in errs["full"] and "for disk space" in errs["full"]
    n_events = _rows(ref_db, "SELECT count(*) FROM events")[0][0]
    assert len(deleted) > n_events / 2

    # the clips left are exactly those the events point at, and the best of each label
    on_disk = {
        f.relative_to(small_disk / "clips").as_posix()
        for f in (small_disk / "clips").rglob("*.flac")
    }
    pointed = {
        p for (p,) in _rows(full_db, "SELECT clip_path FROM events WHERE clip_path IS NOT NULL")
    }
    assert on_disk == pointed
    best = _rows(
        full_db,
        "SELECT clip_path FROM (SELECT clip_path, ROW_NUMBER() OVER (PARTITION BY level, taxon "
        "ORDER BY max_probability DESC, rowid) AS nth FROM events) WHERE nth = 1",
    )
    assert all(p is not None for (p,) in best), "an example of each label must be kept"
    assert not list((small_disk / "clips").rglob(".*.tmp"))
    pct = percent_full(small_disk)
    assert pct <= 90
    print(
        f"\nclips written {clip_bytes / 2**20:.1f} MB on a {DISK_MB} MB disk; "
        f"{len(deleted)} of {n_events} clips deleted by retention; "
        f"{len(pointed)} kept; disk {pct:.0f}% at the end"
    )


def test_a_clip_write_that_hits_enospc_is_a_refusal_not_a_crash(small_disk):
    """The disk filled by something else, with clips allowed up to 100%: the FLAC
    write itself fails, and that must cost the clip, not the run."""
    import numpy as np

    from animalclap_edge.clips import ClipWriter
    from animalclap_edge.records import Event

    free = shutil.disk_usage(small_disk).free
    with open(small_disk / "filler", "wb") as f:
        f.write(b"\0" * (free - 32 * 1024))  # leave 32 KB: less than one 3 s clip
    writer = ClipWriter(small_disk / "clips", 48_000, max_disk_percent=100.0)
    event = Event(
        event_id="event:00000000-0000-5000-8000-000000000000",
        run_id="r",
        recording_id="rec",
        level="species",
        taxon="t",
        scientific_name="t",
        common_name="t",
        start_s=0.0,
        end_s=3.0,
        start_time_utc="2026-06-01T00:00:00+00:00",
        clock_trusted=True,
        n_windows=1,
        max_probability=0.9,
        mean_probability=0.9,
        bundle_id="b",
        config_hash="c",
        created_utc="2026-06-01T00:00:00.000+00:00",
    )
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * 48_000).astype(np.float32)
    path, note = writer.write(event, noise)
    assert path is None and note.startswith("clip not written: disk full (")  # not "System error."
    assert not list((small_disk / "clips").rglob("*.tmp"))
    assert writer.refused == {"write error": 1}


def test_a_database_disk_with_no_room_left_stops_in_one_line(orca_folder, tmp_path, small_disk):
    """No retention can free a disk that other files filled: the run must stop with one
    line (it ended in two tracebacks, the health thread's and the store's), keeping
    what it had committed."""
    src = orca_folder(tmp_path / f"in-{uuid.uuid4().hex[:6]}", 4)
    st = os.statvfs(small_disk)
    with open(small_disk / "filler", "wb") as f:  # leave 384 KB: the schema fits, a run not
        f.write(b"\0" * (st.f_bavail * st.f_frsize - 384 * 1024))
    (small_disk / "edge.yaml").write_text("scoring:\n  threshold: 0.0\n  top_k: 3\n")
    cmd = [sys.executable, "-m", "animalclap_edge", "run", "--source", str(src)]
    cmd += ["--db", "detections.db", "--config", "edge.yaml", "--quiet"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=small_disk, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert "disk is full" in p.stderr.strip().splitlines()[-1]
    assert _rows(small_disk / "detections.db", "PRAGMA integrity_check") == [("ok",)]
