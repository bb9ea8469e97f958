"""The watchdog on a real named pipe of raw PCM: writers that die, freeze, go silent or
vanish, as `arecord` feeding a recorder does when its microphone misbehaves."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from animalclap_edge.audio.decode import AudioError
from animalclap_edge.sources import Recording, SourceError, open_source
from animalclap_edge.watchdog import WatchdogSettings, WatchedSource

SR = 16_000

# A writer process: raw s16le mono at SR, `seconds` of a tone (or zeros), then optionally
# SIGSTOP itself (a frozen device) before exiting.
WRITER = r"""
import os, sys, signal, time, numpy as np
path, seconds, kind, freeze = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
t = np.arange(int(seconds * 16000)) / 16000
x = np.zeros_like(t) if kind == "zeros" else 0.3 * np.sin(2 * np.pi * 440 * t)
with open(path, "wb", buffering=0) as f:
    f.write((x * 32767).astype("<i2").tobytes())
    if freeze:
        time.sleep(freeze)  # the pipe stays open and delivers nothing
"""


class Log:
    def __init__(self):
        self.rows: list[tuple[str, str, dict]] = []

    def record(self, kind, source, detail):
        self.rows.append((kind, source, detail))

    def kinds(self):
        return [k for k, _, _ in self.rows]


def _writer(fifo: Path, seconds: float, kind: str = "tone", freeze: float = 0.0):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(fifo), str(seconds), kind, str(freeze)]
    )


def _open(fifo: Path):
    return open_source(str(fifo), SR, stdin_rate=SR)


def _consume(
    src: WatchedSource, recordings: int, timeout_s: float = 60.0
) -> list[tuple[str, float, str]]:
    """(recording id, seconds of audio, "ok" or the error) for the first `recordings`."""
    out: list[tuple[str, float, str]] = []
    deadline = time.monotonic() + timeout_s
    for rec in src.recordings():
        assert isinstance(rec, Recording)
        n, status = 0, "ok"
        try:
            for b in rec.blocks:
                n += len(b)
        except AudioError as e:
            status = str(e)
        out.append((rec.id, n / SR, status))
        if len(out) == recordings or time.monotonic() > deadline:
            break
    return out


@pytest.fixture()
def fifo(tmp_path):
    p = tmp_path / "mic.pcm"
    os.mkfifo(p)
    return p


FAST = WatchdogSettings(stall_s=1.0, silence_s=1.0, backoff_min_s=0.05, backoff_max_s=0.2)


def _back_on_reopen(fifo: Path, writers: list, seconds: float):
    """A reopen that starts the next writer (the microphone is back) once the watchdog
    has closed the last opening: started earlier, it joined that opening, whose close
    lost what it wrote, and the reopen then waited for a writer forever (a slow
    consumer, as on a loaded machine, hung the test)."""

    def reopen():
        if len(writers) == 1:
            writers.append(_writer(fifo, seconds))
        return _open(fifo)

    return reopen


def test_a_writer_that_dies_and_comes_back_is_reopened(fifo):
    writers = [_writer(fifo, 2.0)]
    log = Log()
    first = _open(fifo)
    src = WatchedSource(first, _back_on_reopen(fifo, writers, 3.0), log, FAST)
    try:
        got = _consume(src, 2)
    finally:
        src.close()
        for w in writers:
            w.wait(10)
    assert [round(s, 1) for _, s, _ in got] == [2.0, 3.0]
    assert [status for _, _, status in got] == ["ok", "ok"]
    assert got[0][0] != got[1][0] and all(i.startswith("pipe:mic.pcm@") for i, _, _ in got)
    assert log.kinds()[:2] == ["source_ended", "source_reopened"]
    assert src.counters.opens == 2


def _fails_then_reopens(fifo: Path, writer, error: str) -> tuple[list[str], Log, WatchedSource]:
    """The first recording of `writer`'s pipe must end with `error`; a new writer then
    starts (the microphone is back) and the watchdog must open a second recording."""
    writers = [writer]
    log = Log()
    src = WatchedSource(_open(fifo), _back_on_reopen(fifo, writers, 1.0), log, FAST)
    ids = []
    try:
        for rec in src.recordings():
            ids.append(rec.id)
            if len(ids) == 2:  # reopened: what the new writer sends is not the point here
                break
            with pytest.raises(AudioError, match=error):
                for _ in rec.blocks:
                    pass
    finally:
        src.close()
        for w in writers:
            w.wait(10)
    return ids, log, src


def test_a_frozen_writer_is_noticed_and_the_pipe_reopened(fifo):
    frozen = _writer(fifo, 1.0, freeze=3.0)
    ids, log, src = _fails_then_reopens(fifo, frozen, "stalled: no audio for 1 s")
    assert log.kinds()[:2] == ["source_stalled", "source_reopened"]
    # more stalls may follow while the next writer starts (a Python process, seconds
    # on a loaded machine): the first read of an opening is watched too
    assert src.counters.stalls >= 1 and src.counters.opens == 2 and ids[0] != ids[1]


def test_a_writer_frozen_for_long_is_said_again_and_again_not_once(fifo):
    """A frozen capture process was said once: the reopened pipe's first read (which
    times the recording) then waited, unwatched, for as long as the freeze lasted, and
    the health log showed a recorder recording nothing as quiet (a deployment trial)."""
    frozen = _writer(fifo, 0.5, freeze=4.5)
    log = Log()
    src = WatchedSource(_open(fifo), lambda: _open(fifo), log, FAST)
    try:
        _consume(src, 2, timeout_s=20)
    finally:
        src.close()
        frozen.wait(10)
    kinds = log.kinds()
    ended = kinds.index("source_ended")  # the writer exits after its freeze
    # stalled after the audio, then again and again while the reopened pipe waited,
    # every stall_s (the gaps double, up to backoff_max_s, which FAST has below stall_s)
    assert kinds[:ended].count("source_stalled") >= 3, log.rows
    waits = [d["why"] for k, _, d in log.rows if k == "source_stalled"][1:]
    assert waits[:2] == ["no audio for 1 s", "no audio for 2 s"]


def test_a_pipe_without_a_writer_is_said_while_the_open_waits(fifo):
    """With its writer gone for good (arecord failing in its loop), the reopen blocked
    in open() and the health log said nothing at all (a deployment trial)."""
    first = _writer(fifo, 0.5)
    log = Log()
    later: list = []
    timer = threading.Timer(3.5, lambda: later.append(_writer(fifo, 0.5)))
    timer.start()
    src = WatchedSource(_open(fifo), lambda: _open(fifo), log, FAST)
    try:
        got = _consume(src, 2, timeout_s=20)
    finally:
        timer.cancel()
        src.close()
        for w in [first, *later]:
            w.wait(10)
    assert [round(s, 1) for _, s, _ in got] == [0.5, 0.5]
    whys = [d["why"] for k, _, d in log.rows if k == "source_stalled"]
    assert whys[:2] == ["no writer opened the pipe for 1 s", "no writer opened the pipe for 2 s"]


def test_digital_silence_is_reported_and_reopened(fifo):
    zeros = _writer(fifo, 3.0, kind="zeros")
    ids, log, src = _fails_then_reopens(fifo, zeros, r"silent: 1 s below -90 dBFS")
    assert log.kinds()[:2] == ["source_silent", "source_reopened"]
    assert (src.counters.silences, src.counters.opens) == (1, 2) and ids[0] != ids[1]


def test_a_pipe_that_disappears_is_retried_with_backoff_until_it_is_back(fifo):
    """The first writer ends; the pipe is removed (the capture service is down) and only
    created again later. Openings fail with their reason, waits grow, nothing is lost."""
    w1 = _writer(fifo, 1.0)
    log, waits = Log(), []
    first = _open(fifo)
    fifo.unlink()

    def sleep(s: float) -> None:
        waits.append(s)
        if len(waits) == 4:  # the service comes back
            os.mkfifo(fifo)
            threading.Thread(target=lambda: _writer(fifo, 1.5).wait(10), daemon=True).start()
        time.sleep(min(s, 0.05))

    src = WatchedSource(first, lambda: _open(fifo), log, FAST, sleep=sleep)
    try:
        got = _consume(src, 2)
    finally:
        src.close()
        w1.wait(10)
    assert [round(s, 1) for _, s, _ in got] == [1.0, 1.5]
    assert log.kinds().count("open_failed") >= 3
    assert any("not found" in d["why"] for k, _, d in log.rows if k == "open_failed")
    assert waits[3] > waits[2] > waits[1]  # backoff grows while the pipe is missing


def test_a_named_pipe_needs_its_rate_and_a_missing_one_is_one_line(tmp_path, fifo):
    with pytest.raises(SourceError, match="--stdin-rate"):
        open_source(str(fifo), SR)
    with pytest.raises(SourceError, match="not found"):
        open_source(str(tmp_path / "gone.pcm"), SR, stdin_rate=SR)


def test_a_writer_killed_mid_frame_leaves_a_partial_recording_with_the_reason(fifo):
    code = (
        f"f = open({str(fifo)!r}, 'wb', buffering=0); f.write(b'\\x01\\x02\\x03'); "
        "print('written', flush=True); import time; time.sleep(30)"
    )
    w = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    s = _open(fifo)
    try:
        # killed once its bytes are in the pipe (a fixed 0.3 s was a guess at that)
        assert w.stdout.readline() == b"written\n"
        w.send_signal(signal.SIGKILL)
        w.wait(10)
        w.stdout.close()
        (rec,) = list(s.recordings())
        with pytest.raises(AudioError, match=r"pipe:mic.pcm ended mid-frame \(1 stray bytes\)"):
            list(rec.blocks)
    finally:
        s.close()


@pytest.mark.timeout(60)
def test_a_network_source_whose_host_is_down_is_retried_not_ended(tmp_path):
    """An integrator's hydrophone over TCP: its reopen raised ConnectionRefusedError
    (an OSError, not a SourceError) while the host was down, and that ended the run.
    Here a real socket refuses twice, then a server comes up on the same port."""
    import socket

    from animalclap_edge.sources import StdinSource

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR) * 32767).astype("<i2").tobytes()

    def serve(server: socket.socket) -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.sendall(tone)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tries = []

    def reopen():
        tries.append(time.monotonic())
        if len(tries) == 3:  # the host is back
            server = socket.create_server(("127.0.0.1", port))
            threading.Thread(target=serve, args=(server,), daemon=True).start()
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        return StdinSource(conn.makefile("rb"), SR, 1, "s16le", SR, name=f"tcp:{port}")

    log = Log()
    first = StdinSource(io.BytesIO(tone), SR, 1, "s16le", SR, name=f"tcp:{port}")
    src = WatchedSource(first, reopen, log, FAST, sleep=lambda s: time.sleep(min(s, 0.05)))
    try:
        got = _consume(src, 2)
    finally:
        src.close()
    assert [round(s, 1) for _, s, _ in got] == [1.0, 1.0]
    refused = [d["why"] for k, _, d in log.rows if k == "open_failed"]
    assert len(refused) == 2 and refused[0].startswith("ConnectionRefusedError: [Errno 111]")
