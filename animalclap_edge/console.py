"""A live status line for a person at a terminal: progress through a card of files, or
what a live microphone has heard so far.

`StatusLine` is a `DetectionSink` that wraps the other sinks: it erases its line,
lets them print (detection lines, skip reasons), then redraws one line: files done of the total, audio processed and its speed against real
time, detections, the last label and the most frequent ones. So printed lines scroll
above a status line that stays at the bottom, as with tqdm. The CLI uses it only when
stderr is a terminal.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TextIO

from animalclap_edge.records import Detection, Event, RecordingResult
from animalclap_edge.sinks import DetectionSink

CLEAR = "\r\033[K"  # carriage return, erase to end of line


class StatusLine:
    def __init__(
        self,
        out: TextIO,
        inner: Iterable[DetectionSink] = (),
        total_files: int | None = None,
        width: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        # width None: the terminal's, read at every draw (a window can be resized)
        self.out, self.total, self.width = out, total_files, width
        self.inner = list(inner)
        self._clock = clock
        self.t0 = clock()
        self.files = self.detections = 0
        self.audio_s = 0.0  # finished recordings
        # Furthest window *start* in the recording in progress: a window's end can lie
        # past a short file's end (padding), and the audio shown went back when the
        # file's real length replaced it.
        self._current_s = 0.0
        self.labels: Counter[str] = Counter()
        self.last = ""
        self._drawn = False
        # set by `run` when MQTT is on: what the uplink has sent and set aside
        self.uplink: Callable[[], str] | None = None

    # -- DetectionSink -----------------------------------------------------------

    def on_detection(self, d: Detection) -> None:
        self.clear()
        for sink in self.inner:
            sink.on_detection(d)
        self.detections += 1
        name = d.scientific_name if d.level == "species" else f"{d.taxon} ({d.level})"
        self.labels[name] += 1
        self.last = f"{name} {d.probability:.2f}"
        self._current_s = max(self._current_s, d.window_start_s)
        self.draw()

    def on_event(self, e: Event) -> None:
        self.clear()
        for sink in self.inner:
            sink.on_event(e)
        self.draw()

    def on_recording(self, r: RecordingResult) -> None:
        self.clear()
        for sink in self.inner:
            sink.on_recording(r)
        self.files += 1
        self.audio_s += r.duration_s
        self._current_s = 0.0
        self.draw()

    # -- drawing -----------------------------------------------------------------

    def render(self) -> str:
        wall = max(1e-9, self._clock() - self.t0)
        audio = self.audio_s + self._current_s
        parts = [f"{self.files}/{self.total} files" if self.total else f"{self.files} recordings"]
        parts.append(f"{_hms(audio)} audio ({audio / wall:.0f}x real time)")
        parts.append(f"{self.detections} detections")
        if self.uplink is not None:
            parts.append(f"uplink: {self.uplink()}")
        if self.last:  # before the top labels: a narrow terminal cuts those first
            parts.append(f"last: {self.last}")
        if self.labels:
            top = ", ".join(f"{n} {c}" for n, c in self.labels.most_common(3))
            parts.append(f"top: {top}")
        line = " | ".join(parts)
        # one column short of the terminal: a full-width line wraps on some terminals
        width = self.width or _columns(self.out) - 1
        return line if len(line) <= width else line[: width - 1] + "…"

    def draw(self) -> None:
        self.out.write(CLEAR + self.render())
        self.out.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the status line, so that what other sinks print starts at column 0."""
        if self._drawn:
            self.out.write(CLEAR)
            self._drawn = False

    def close(self) -> None:
        """The final state stays on screen, on its own line."""
        self.draw()
        self.out.write("\n")
        self.out.flush()


def _columns(out: TextIO) -> int:
    """The width of the terminal `out` writes to (COLUMNS overrides; 121 when unknown).

    Not shutil.get_terminal_size: it asks stdout's terminal, and `run --jsonl > file`
    keeps its status line on stderr's."""
    if os.environ.get("COLUMNS", "").isdigit() and int(os.environ["COLUMNS"]) > 0:
        return int(os.environ["COLUMNS"])
    try:
        cols = os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        cols = 0
    return cols if cols > 0 else 121


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressLog:
    """For a run nobody watches at a terminal (nohup, cron, a service's journal): a
    progress line on `out` at most every `every_s` seconds, after a recording ends,
    where `StatusLine` would redraw; nothing when the run is shorter than that."""

    def __init__(
        self,
        out: TextIO,
        total_files: int | None = None,
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.out, self.total, self.every_s, self._clock = out, total_files, every_s, clock
        self.t0 = self._last = clock()
        self.files = self.detections = 0
        self.audio_s = 0.0

    def on_detection(self, d: Detection) -> None:
        self.detections += 1

    def on_event(self, e: Event) -> None:
        pass

    def on_recording(self, r: RecordingResult) -> None:
        self.files += 1
        self.audio_s += r.duration_s
        now = self._clock()
        if now - self._last >= self.every_s:
            self._last = now
            done = f"{self.files} of {self.total}" if self.total else str(self.files)
            wall = max(1e-9, now - self.t0)
            self.out.write(
                f"progress: {done} recordings, {_hms(self.audio_s)} audio "
                f"({self.audio_s / wall:.0f}x real time), {self.detections} detections\n"
            )
            self.out.flush()
