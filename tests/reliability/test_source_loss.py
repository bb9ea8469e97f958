"""The real CLI on a named pipe whose writer (the capture process) dies and comes back,
then is stopped by SIGTERM as systemd does: nothing logged is lost, every opening is a
recording, and the health table tells what happened."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SR = 48_000

WRITER = r"""
import sys
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb", buffering=0) as f:
    left = memoryview(src.read())
    while left:  # a pipe takes what fits: a short write is not an error, a lost reader is
        left = left[f.write(left):]
"""


def _pcm(orca_pcm, tmp: Path, seconds: float) -> Path:
    out = tmp / "calls.s16"
    out.write_bytes(orca_pcm(seconds))
    return out


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def _recordings(db: Path) -> int:
    """Recordings finished so far (an open one has its row too); 0 before the run has
    created its database's tables (the file exists a moment before: a loaded machine
    once caught that moment)."""
    try:
        return len(_rows(db, "SELECT 1 FROM recordings WHERE status = 'ok'"))
    except sqlite3.OperationalError:
        return 0


def _start_run(fifo: Path, db: Path, cfg: Path) -> subprocess.Popen:
    """The real CLI reading raw 48 kHz PCM from the named pipe `fifo`."""
    cmd = [sys.executable, "-m", "animalclap_edge", "run", "--source", str(fifo)]
    cmd += ["--db", str(db), "--config", str(cfg), "--stdin-rate", str(SR), "--quiet"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)


def _holds(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (Linux /proc; the named-pipe tests need it)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:  # the process is gone
        return False
    links = []
    for fd in fds:
        with contextlib.suppress(OSError):  # closed while listed
            links.append(os.readlink(fd))
    return str(path) in links


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_capture_process_that_dies_twice_loses_nothing(orca_pcm, tmp_path):
    fifo, db, cfg = tmp_path / "mic.pcm", tmp_path / "d.db", tmp_path / "c.yaml"
    os.mkfifo(fifo)
    pcm = _pcm(orca_pcm, tmp_path, 12.0)
    cfg.write_text(
        "scoring: {threshold: 0.0, top_k: 1}\n"
        "health: {interval_s: 0.5, reopen_backoff_s: [0.1, 0.5], stall_s: 30}\n"
    )
    run = _start_run(fifo, db, cfg)
    try:
        for i in range(3):  # the first opening waits in open() for this writer
            # The run commits a recording a moment before it closes that opening of the
            # pipe: a writer that came in between wrote into the old opening, whose
            # close lost its audio, and no recording followed (a pause there, as on a
            # loaded machine, failed the test every time)
            assert _wait_for(lambda: not _holds(run.pid, fifo), 60), "the pipe stayed open"
            w = subprocess.run([sys.executable, "-c", WRITER, str(pcm), str(fifo)], timeout=120)
            assert w.returncode == 0
            assert _wait_for(
                lambda i=i: (
                    db.exists()
                    and len(_rows(db, "SELECT 1 FROM recordings WHERE status = 'ok'")) == i + 1
                ),
                120,
            ), f"recording {i + 1} never finished"
        run.send_signal(signal.SIGTERM)  # waiting in open() for a fourth writer
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err[-2000:]
    assert "interrupted; everything logged so far is in the database" in err
    recs = _rows(db, "SELECT recording_id, status, n_windows, n_detections FROM recordings")
    assert len(recs) == 3 and len({r[0] for r in recs}) == 3
    assert all(r[1] == "ok" and r[2] == 7 for r in recs), recs  # 12 s: 7 windows of 3 s / 1.5 s
    dets = _rows(db, "SELECT recording_id FROM detections")
    assert len(dets) == sum(r[3] for r in recs) and len(dets) >= 3 * 7
    # what the stopped run had done is said, as a finished run says it
    assert (
        f"until stopped: 3 recordings: 3 ok, 0 skipped, 0 partial; 21 windows; {len(dets)} detections"
        in err
    )
    kinds = [k for (k,) in _rows(db, "SELECT kind FROM health ORDER BY health_id")]
    assert kinds.count("source_ended") == 3 and kinds.count("source_reopened") == 2
    snaps = [
        json.loads(d)
        for (d,) in _rows(db, "SELECT detail_json FROM health WHERE kind = 'snapshot'")
    ]
    assert len(snaps) >= 2
    last = snaps[-1]
    assert last["counters"]["opens"] == 3 and last["counters"]["ended"] == 3
    assert 0 <= last["disk_percent"] <= 100 and last["rss_mb"] > 10
    events = _rows(db, "SELECT event_id FROM events")
    # no uplink configured: every detection's and merged event's message still queued
    assert events and last["outbox_backlog"] == len(dets) + len(events)
    assert _rows(db, "PRAGMA integrity_check") == [("ok",)]


# A capture process paced at real time that starts again whenever the reader goes away
# (the recorder closes the pipe between scheduled periods).
PACED_WRITER = r"""
import sys, time
data, fifo = open(sys.argv[1], "rb").read(), sys.argv[2]
step = 4800 * 2  # 0.1 s of s16 mono at 48 kHz
pos = 0
while True:
    try:
        with open(fifo, "wb", buffering=0) as f:
            while True:
                f.write(data[pos : pos + step])
                pos = (pos + step) % (len(data) - step)
                time.sleep(0.1)
    except BrokenPipeError:
        time.sleep(0.05)
"""


def test_a_duty_cycle_opens_the_pipe_only_in_its_on_periods(orca_pcm, tmp_path):
    fifo, db, cfg = tmp_path / "mic.pcm", tmp_path / "d.db", tmp_path / "c.yaml"
    os.mkfifo(fifo)
    pcm = _pcm(orca_pcm, tmp_path, 30.0)
    cfg.write_text(
        "scoring: {threshold: 0.0, top_k: 1}\n"
        "health: {interval_s: 1, stall_s: 5}\n"
        "schedule: {duty_cycle: {on_s: 4, period_s: 6}}\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", PACED_WRITER, str(pcm), str(fifo)], stderr=subprocess.DEVNULL
    )
    run = _start_run(fifo, db, cfg)
    try:
        assert _wait_for(lambda: _recordings(db) >= 4, 90), "three whole on-periods never finished"
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    finally:
        for p in (run, writer):
            if p.poll() is None:
                p.kill()
    assert "schedule:" in err
    assert f"note: the named pipe {fifo} is closed in each off period" in err
    recs = _rows(
        db,
        "SELECT recording_id, duration_s, status, start_time_utc FROM recordings ORDER BY rowid",
    )
    done = recs[1:4]  # the first may have started in the middle of an on-period
    assert len({r[0] for r in recs}) == len(recs)
    assert all(r[3] is not None and "@undated" not in r[0] for r in recs)  # the pipe's live clock
    starts = [datetime.fromisoformat(r[3]) for r in done]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert all(5.0 <= g <= 7.0 for g in gaps), gaps  # one period (6 s) apart
    # each on-period is its own recording of about on_s (cut after the block in progress)
    assert all(3.0 <= r[1] <= 5.5 and r[2] == "ok" for r in done), recs
    kinds = [k for (k,) in _rows(db, "SELECT kind FROM health")]
    assert "source_stalled" not in kinds  # the off-periods are not mistaken for a frozen device


def test_run_serves_its_detections_live_while_it_records(orca_pcm, tmp_path):
    """`messaging.live.enabled`: a browser or `curl -N` sees detections as they are logged."""
    import http.client
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fifo, db, cfg = tmp_path / "mic.pcm", tmp_path / "d.db", tmp_path / "c.yaml"
    os.mkfifo(fifo)
    pcm = _pcm(orca_pcm, tmp_path, 12.0)
    cfg.write_text(
        "scoring: {threshold: 0.0, top_k: 1}\n"
        f"messaging: {{live: {{enabled: true, port: {port}, poll_s: 0.05}}}}\n"
    )
    run = _start_run(fifo, db, cfg)
    conn = None
    try:
        # the server starts once the first writer has opened the pipe
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(pcm), str(fifo)])
        assert _wait_for(lambda: db.exists(), 60)
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/events?since=all")
                resp = conn.getresponse()
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        assert resp.status == 200
        ids: list[str] = []
        while len(ids) < 7:  # 12 s of audio, top-1 per window, threshold 0: 7 detections
            line = resp.readline().decode()
            if line.startswith("data: "):
                ids.append(json.loads(line[6:])["detection_id"])
        writer.wait(60)
        run.send_signal(signal.SIGTERM)
        run.communicate(timeout=60)
    finally:
        if conn is not None:
            conn.close()
        if run.poll() is None:
            run.kill()
    logged = [i for (i,) in _rows(db, "SELECT detection_id FROM detections ORDER BY rowid")]
    assert ids == logged[:7]
