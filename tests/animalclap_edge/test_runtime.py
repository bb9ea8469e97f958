"""One analysing process per database (runtime.RunLock): a second `run` on a card's
database is refused in one line while the first lives, and is let in once it dies."""

import socket
import sqlite3
import subprocess
import sys

import numpy as np
import soundfile as sf

from animalclap_edge.cli import main

HOLDER = """
import sys, time
from animalclap_edge.runtime import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def _recordings(db) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from recordings").fetchone()[0]


def _folder(path, seconds: float = 3.0):
    path.mkdir()
    t = np.arange(int(48_000 * seconds)) / 48_000
    sf.write(path / "tone.wav", (0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32), 48_000)
    return path


def test_a_second_run_on_one_database_is_refused_while_the_first_lives(
    tiny_bundle, tmp_path, capsys
):
    db = tmp_path / "card" / "detections.db"
    first, second = _folder(tmp_path / "first"), _folder(tmp_path / "second")
    run = ["run", "--bundle", str(tiny_bundle), "--db", str(db), "--quiet", "--source"]
    assert main([*run, str(first)]) == 0
    assert _recordings(db) == 1
    capsys.readouterr()

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([*run, str(second)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert [line for line in err if "error" in line] == [err[-1]]  # after the banner
        assert err[-1] == (
            f"animalclap-edge: error: another run (pid {holder.pid}) is logging to {db}: stop it first, or "
            "give this run its own --db (two runs on one database log the same recordings "
            "twice)"
        )
        assert _recordings(db) == 1  # the refused run touched nothing
    finally:
        holder.kill()  # as a crash would: the kernel drops its lock
        holder.wait()
    assert main([*run, str(second)]) == 0
    assert _recordings(db) == 2
    # and a run that ended released it: the next one on the card goes ahead
    assert main([*run, str(second), "--redo"]) == 0


def test_the_next_run_marks_a_recording_its_dead_predecessor_left_open(
    tiny_bundle, tmp_path, capsys
):
    """After a power cut a live recording's row said "open: still being analysed" for
    good, beside runs that had long ended (found in a deployment trial)."""
    from animalclap_edge.records import CUT_OFF_REASON, OPEN_REASON
    from animalclap_edge.store import DetectionStore

    from .factories import RUN, detection, event, recording

    db = tmp_path / "d.db"
    with DetectionStore(db) as s:
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.record_recording(recording("partial", "mic@x#1", reason=OPEN_REASON, duration_s=12.5))
        s.record_recording(recording("partial", "mic@x#2", reason="stopped after 3.0 s"))
        # at the cut: a blackbird event open over three windows (events are written
        # when they close, so it was lost), a robin event closed and logged before
        s.add_detections([detection(72_000 * k, recording_id="mic@x#1") for k in range(3)])
        robin = dict(taxon="eurrob1", scientific_name="Erithacus rubecula", recording_id="mic@x#1")
        s.add_detections([detection(0, **robin)])
        s.add_events([event(0, n_windows=1, event_id="event:robin", end_s=3.0, **robin)])
    empty = tmp_path / "cards"
    empty.mkdir()
    assert main(["run", "--bundle", str(tiny_bundle), "--source", str(empty), "--db", str(db)]) == 0
    err = capsys.readouterr().err
    assert "1 recording(s) left open by a run that died" in err
    assert "1 event(s) open then rebuilt from their detections" in err
    with sqlite3.connect(db) as c:
        rows = dict(c.execute("SELECT recording_id, reason FROM recordings").fetchall())
        events = c.execute(
            "SELECT taxon, start_s, end_s, n_windows, clip_note, queued FROM events ORDER BY rowid"
        ).fetchall()
    assert rows == {"mic@x#1": CUT_OFF_REASON, "mic@x#2": "stopped after 3.0 s"}
    assert events[0][0] == "eurrob1" and len(events) == 2  # the robin's not made twice
    taxon, start, end, n, note, queued = events[1]
    assert (taxon, start, end, n, queued) == ("eurbla", 0.0, 6.0, 3, 1)  # and sent upstream
    assert note.startswith("rebuilt from its detections at restart")


def test_a_live_token_file_run_cannot_use_leaves_the_recorder_recording(
    tiny_bundle, realaudio, tmp_path, capsys
):
    """A token file of mode 644 (a permissions slip after a copy) stopped `run` at
    start: the unit restarted every 10 s and recorded nothing. The live view is
    optional, as for a port already taken."""
    from animalclap_edge.store import DetectionStore

    token = tmp_path / "live.token"
    token.write_text("t" * 32 + "\n")
    token.chmod(0o644)
    cfg = tmp_path / "edge.yaml"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    live = f"messaging:\n  live:\n    enabled: true\n    port: {port}\n    token_file: {token}\n"
    cfg.write_text(live)
    clip = next(iter(sorted(realaudio.glob("srkw*.wav"))))
    db = tmp_path / "d.db"
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(clip), "--db", str(db)]
    assert main([*argv, "--config", str(cfg), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: token file {token} is open to other users (mode 644)" in err
    assert "recording goes on without the live view" in err
    with DetectionStore(db) as s:
        assert [r.status for r in s.recordings()] == ["ok"]
        assert "live_unavailable" in [h["kind"] for h in s.health()]
