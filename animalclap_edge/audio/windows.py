"""Cut a stream of mono blocks into fixed-length model windows, in bounded memory.

Windows start at 0, hop, 2*hop, ... (in samples of the stream). At the end of
the stream `flush` adds at most one more window:

- nothing emitted yet and at least `min_samples` seen: the whole clip,
  repeat-padded to the window length (CLAP "repeatpad"), `padded=True`;
- otherwise, when more than half a hop of audio follows the last window's end:
  a window ending at the last sample (start = total - window), so the tail is
  scored without inventing audio.

State is one preallocated float32 buffer holding the last `window_samples`
samples plus three integers; pushing hours of audio does not grow it.

`WindowBatcher` cuts windows straight into one preallocated (batch, window) array,
the encoder's input: no array per window and no stacked copy per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from animalclap_edge.contracts.frontend import repeat_pad


@dataclass(frozen=True)
class Window:
    start_sample: int  # position of samples[0] in the stream
    samples: np.ndarray  # float32 (window_samples,)
    padded: bool  # True when repeat-padded from a clip shorter than a window
    length: int | None = None  # samples of real audio when padded; None: the whole window


class Windower:
    """Streaming window cutter; `push` blocks, `flush` at end of stream, `reset` to reuse."""

    def __init__(self, window_samples: int, hop_samples: int, min_samples: int) -> None:
        if window_samples <= 0 or hop_samples <= 0:
            raise ValueError(
                f"window and hop must be positive, got window={window_samples}, hop={hop_samples}"
            )
        if min_samples < 0:
            raise ValueError(f"min_samples must be >= 0, got {min_samples}")
        self.window_samples = int(window_samples)
        self.hop_samples = int(hop_samples)
        self.min_samples = int(min_samples)
        # history[i] is stream sample (total - window + i); entries before sample 0 are unused.
        self._history = np.zeros(self.window_samples, np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the stream; the next `push` starts at sample 0."""
        self._total = 0
        self._next_start = 0
        self._emitted = 0
        self._flushed = False
        self._history.fill(0.0)

    @property
    def samples_seen(self) -> int:
        return self._total

    @property
    def windows_emitted(self) -> int:
        return self._emitted

    @property
    def buffer_size(self) -> int:
        """Samples of history held (always `window_samples`): the windower's whole memory."""
        return self._history.size

    def push(self, block: np.ndarray, into: Callable[[], np.ndarray] | None = None) -> list[Window]:
        """Append a 1-D block; return every window that is now complete, in order.

        `into`, when given, returns the float32 (window_samples,) array each window is
        written into (a row of a batch); otherwise each window gets a new array."""
        if self._flushed:
            raise RuntimeError("Windower.push after flush: call reset() for a new stream")
        x = np.asarray(block, np.float32)
        if x.ndim != 1:
            raise ValueError(f"Windower.push needs a 1-D block, got shape {x.shape}")
        n, w, t0 = len(x), self.window_samples, self._total
        t1 = t0 + n
        out: list[Window] = []
        while self._next_start + w <= t1:
            s = self._next_start
            samples = np.empty(w, np.float32) if into is None else into()
            if s < t0:
                h = t0 - s  # 0 < h < w: samples taken from history
                samples[:h] = self._history[w - h :]
                samples[h:] = x[: w - h]
            else:
                samples[:] = x[s - t0 : s - t0 + w]
            out.append(Window(s, samples, False))
            self._next_start += self.hop_samples
        self._emitted += len(out)
        if n >= w:
            self._history[:] = x[n - w :]
        elif n:
            self._history[: w - n] = self._history[n:]  # numpy handles the overlap
            self._history[w - n :] = x
        self._total = t1
        return out

    def flush(self) -> list[Window]:
        """End of stream: the repeat-padded short clip or the end-aligned tail window, if any."""
        if self._flushed:
            return []
        self._flushed = True
        w, total = self.window_samples, self._total
        if self._emitted == 0:
            if total == 0 or total < self.min_samples:
                return []
            self._emitted = 1
            return [Window(0, repeat_pad(self._history[w - total :], w), True, total)]
        last_end = self._next_start - self.hop_samples + w
        if total - last_end > self.hop_samples / 2:
            self._emitted += 1
            return [Window(total - w, self._history.copy(), False)]
        return []


class WindowBatcher:
    """Windows of a stream, `batch_size` at a time, in one preallocated array.

    `push(block)` yields `(x, windows)` each time `batch_size` windows are ready;
    `flush()` yields the last, partial batch at the end of the stream. `x` is
    float32 (n, window_samples) and each window's `samples` is a row of it: both
    are views of the one buffer, valid until the generator is advanced (copy what
    must outlive it). Consume each generator to its end. Memory: the windower's
    history plus this buffer, whatever the block size (a 10 s block at 48 kHz used
    to hold its 7 windows and a stacked copy of each batch besides).
    """

    def __init__(self, windower: Windower, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.windower = windower
        self.batch_size = int(batch_size)
        self._buf = np.zeros((self.batch_size, windower.window_samples), np.float32)
        self._windows: list[Window] = []

    def _next_row(self) -> np.ndarray:
        return self._buf[len(self._windows)]

    def _full(self) -> tuple[np.ndarray, list[Window]]:
        windows, self._windows = self._windows, []
        return self._buf[: len(windows)], windows

    def push(self, block: np.ndarray) -> Iterator[tuple[np.ndarray, list[Window]]]:
        x = np.asarray(block, np.float32)
        if x.ndim != 1:
            raise ValueError(f"WindowBatcher.push needs a 1-D block, got shape {x.shape}")
        # A piece of at most one hop completes at most one window (window starts are
        # a hop apart), so a row is always free when the windower asks for one.
        step = self.windower.hop_samples
        for i in range(0, len(x), step):
            self._windows += self.windower.push(x[i : i + step], into=self._next_row)
            if len(self._windows) == self.batch_size:
                yield self._full()

    def ready(self) -> Iterator[tuple[np.ndarray, list[Window]]]:
        """The windows completed so far, as a partial batch (none when none are): live
        audio, whose next block is half a second away, must not wait for a full batch."""
        if self._windows:
            yield self._full()

    def flush(self) -> Iterator[tuple[np.ndarray, list[Window]]]:
        for w in self.windower.flush():  # at most one window, in its own array
            row = self._next_row()
            row[:] = w.samples
            self._windows.append(Window(w.start_sample, row, w.padded, w.length))
            if len(self._windows) == self.batch_size:
                yield self._full()
        if self._windows:
            yield self._full()

    def reset(self) -> None:
        """Forget the stream and any windows not yet yielded."""
        self.windower.reset()
        self._windows = []
