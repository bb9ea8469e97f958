"""The terminal status line: printed lines scroll above it, and the CLI shows it on a
real pseudo-terminal (and never when stderr is a file or a pipe)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from animalclap_edge.console import CLEAR, StatusLine
from animalclap_edge.records import Detection, RecordingResult
from animalclap_edge.sinks import ConsoleSink

REPO = Path(__file__).resolve().parents[2]


def _det(i: int, name: str) -> Detection:
    return Detection(
        detection_id=f"id{i}",
        run_id="r",
        recording_id="rec.wav",
        window_start_s=1.5 * i,
        window_end_s=1.5 * i + 3,
        start_time_utc=None,
        clock_trusted=False,
        bundle_id="b",
        config_hash="c",
        rank=1,
        level="species",
        taxon=name[:6].lower(),
        scientific_name=name,
        common_name=name,
        score=0.3,
        probability=0.8,
        traits_json="{}",
        created_utc="2026-01-01T00:00:00+00:00",
    )


def _rec(path: str, seconds: float, n: int) -> RecordingResult:
    return RecordingResult(
        recording_id=path,
        run_id="r",
        source_path=path,
        status="ok",
        reason=None,
        duration_s=seconds,
        n_windows=int(seconds // 1.5),
        n_detections=n,
        start_time_utc=None,
        clock_trusted=False,
        clock_note="",
        finished_utc="2026-01-01T00:00:00+00:00",
    )


def test_detection_lines_start_at_column_zero_and_the_status_stays_last():
    term = io.StringIO()
    ticks = iter(range(100))
    status = StatusLine(term, [ConsoleSink(term)], total_files=5, clock=lambda: next(ticks))
    status.on_detection(_det(0, "Turdus merula"))
    status.on_detection(_det(1, "Turdus merula"))
    status.on_detection(_det(2, "Parus major"))
    status.on_recording(_rec("rec.wav", 30.0, 3))
    status.close()
    out = term.getvalue()
    # every printed detection line begins right after an erase of the status line
    printed = [line for line in out.split("\n") if "p=0.80" in line]
    assert len(printed) == 3
    # (the status line before each erase is whatever was drawn last; after the last
    # erase comes the detection itself, at column zero)
    assert all(line.rsplit(CLEAR, 1)[-1].startswith("-  rec.wav") for line in printed), printed
    final = out.rstrip("\n").split(CLEAR)[-1]
    assert final.startswith("1/5 files | 0:00:30 audio")
    assert "3 detections" in final and "top: Turdus merula 2, Parus major 1" in final
    assert out.endswith("\n")


def test_a_narrow_terminal_cuts_the_top_labels_before_the_last_one():
    term = io.StringIO()
    ticks = iter(range(100))
    status = StatusLine(term, total_files=5, width=90, clock=lambda: next(ticks))
    status.on_detection(_det(0, "Turdus merula"))
    line = status.render()
    assert len(line) == 90 and line.endswith("…")
    assert "last: Turdus merula 0.80" in line and line.index("last:") < line.index("top:")


def test_audio_shown_never_goes_back_when_a_short_file_ends():
    """A 1.2 s file's padded window ends at 3.0 s; the file then counts 1.2 s."""
    ticks = iter(range(100))
    status = StatusLine(io.StringIO(), total_files=3, width=200, clock=lambda: next(ticks))
    shown = []
    for i in range(3):
        status.on_detection(_det(0, "Turdus merula"))  # window 0-3 s
        shown.append(status.render().split(" audio")[0].split("| ")[-1])
        status.on_recording(_rec(f"{i}.wav", 1.2, 1))
        shown.append(status.render().split(" audio")[0].split("| ")[-1])
    assert shown == sorted(shown), shown  # h:mm:ss strings sort as times
    assert shown[-1] == "0:00:03"  # 3.6 s of audio in all, in whole seconds


def test_the_cli_draws_it_on_a_terminal_and_not_on_a_pipe(realaudio, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for f in sorted(realaudio.glob("srkw*.wav"))[:3]:
        (src / f.name).write_bytes(f.read_bytes())
    cmd = [sys.executable, "-m", "animalclap_edge", "run", "--source", str(src)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}

    parent, child = pty.openpty()  # a real terminal device for stderr, 80 columns wide
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env.pop("COLUMNS", None)
    try:
        p = subprocess.run(
            [*cmd, "--db", str(tmp_path / "a.db")],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=child,
            timeout=300,
        )
        os.close(child)
        child = -1
        chunks = []
        while True:
            try:
                data = os.read(parent, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if child != -1:
            os.close(child)
        os.close(parent)
    assert p.returncode == 0
    tty_err = b"".join(chunks).decode()
    final = tty_err.split("\x1b[K")[-1]
    drawn = [p.split("\n")[0].rstrip("\r") for p in tty_err.split("\x1b[K") if "/3 files |" in p]
    assert drawn and max(len(line) for line in drawn) <= 79  # fits the 80-column terminal
    assert final.startswith("3/3 files | ") and " detections" in final
    # the summary line comes after the status line, on a line of its own
    assert "3 recordings: 3 ok" in final.split("\n", 1)[1]

    piped = subprocess.run(
        [*cmd, "--db", str(tmp_path / "b.db")], cwd=REPO, env=env, capture_output=True, timeout=300
    )
    assert piped.returncode == 0 and b"\x1b[K" not in piped.stderr
    assert b"progress:" not in piped.stderr  # a run shorter than a minute says nothing more


def test_an_unwatched_run_logs_progress_at_most_once_a_minute():
    """nohup, cron or a journal: no status line to redraw, a line a minute instead."""
    from animalclap_edge.console import ProgressLog

    now = [0.0]
    out = io.StringIO()
    log = ProgressLog(out, total_files=400, clock=lambda: now[0])
    for i in range(200):  # one recording every 0.5 s: 100 s in all
        log.on_detection(_det(i, "Turdus merula"))
        now[0] += 0.5
        log.on_recording(_rec(f"{i}.wav", 60.0, 1))
    lines = out.getvalue().splitlines()
    assert lines == [
        "progress: 120 of 400 recordings, 2:00:00 audio (120x real time), 120 detections"
    ]
