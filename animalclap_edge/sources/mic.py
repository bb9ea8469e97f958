"""A live input device through PortAudio (sounddevice, imported only when one is made)."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np

from animalclap_edge.audio.decode import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioError, band_note
from animalclap_edge.clock_step import ClockWatch
from animalclap_edge.sources.base import (
    Recording,
    Skipped,
    SourceBase,
    SourceError,
    live_recording_id,
    resampler,
)
from animalclap_edge.sources.clock import after_clock_step, system_clock_synchronized

MIC_INSTALL_HINT = "live input needs sounddevice and PortAudio: pip install 'animalclap-edge[mic]' (and libportaudio2)"


def import_sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as e:  # OSError: the module is there, libportaudio is not
        raise SourceError(MIC_INSTALL_HINT) from e
    return sounddevice


class _FloatRing:
    """Single-producer single-consumer ring of float32 frames, preallocated.

    The producer (PortAudio's callback) only moves `written`, the consumer only
    `read`; both are monotonic frame counts, so no lock is needed under the GIL.
    """

    def __init__(self, frames: int, channels: int):
        self.buf = np.zeros((max(1, frames), channels), np.float32)  # (capacity, channels)
        self.capacity = len(self.buf)
        self.written = 0
        self.read = 0

    def available(self) -> int:
        return self.written - self.read

    def write(self, x: np.ndarray) -> bool:
        """Copy all of `x` (frames, channels) in, or nothing (False) when it does not fit."""
        n = len(x)
        if n > self.capacity - (self.written - self.read):
            return False
        i = self.written % self.capacity
        k = min(n, self.capacity - i)
        self.buf[i : i + k] = x[:k]
        if k < n:
            self.buf[: n - k] = x[k:]
        self.written += n
        return True

    def read_into(self, out: np.ndarray) -> int:
        """Move up to len(out) frames into `out`; returns how many."""
        n = min(len(out), self.written - self.read)
        i = self.read % self.capacity
        k = min(n, self.capacity - i)
        out[:k] = self.buf[i : i + k]
        if k < n:
            out[k:n] = self.buf[: n - k]
        self.read += n
        return n


def _describe_inputs(inputs: list[tuple[int, dict]]) -> str:
    if not inputs:
        return "available input devices: none found by PortAudio"
    return "available input devices: " + "; ".join(
        f"[{i}] {d['name']} ({d['max_input_channels']} ch, {d['default_samplerate']:g} Hz)"
        for i, d in inputs
    )


# MicSources of this process whose stream is open: re-initialising PortAudio would cut them
_OPEN: weakref.WeakSet = weakref.WeakSet()


def _refresh_devices(sd: Any) -> bool:
    """Re-initialise PortAudio so that it lists the devices there now; False where a
    stream is open (it would be cut) or it cannot. PortAudio fixes its device list at
    initialisation: a USB microphone unplugged and plugged back (a new ALSA card) was
    never found again, the watchdog retrying in one process for as long as it ran."""
    if any(m._stream is not None for m in _OPEN):
        return False
    try:  # python-sounddevice's own pair, what its docs give for a changed device list
        sd._terminate()
        sd._initialize()
    except Exception:
        return False
    return True


def _resolve_input_device(sd: Any, device: str | int | None) -> tuple[int, dict, str]:
    """(index, device info, listing of all inputs); SourceError naming the choices otherwise."""
    try:
        devices = sd.query_devices()
    except Exception as e:
        raise SourceError(f"cannot list audio devices: {e}") from e
    inputs = [(i, dict(d)) for i, d in enumerate(devices) if d["max_input_channels"] > 0]
    listing = _describe_inputs(inputs)
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    if device is None or device == "":
        default = sd.default.device[0]
        match = [x for x in inputs if x[0] == default]
        if not match:
            raise SourceError(f"no default input device; {listing}")
    elif isinstance(device, int):
        match = [x for x in inputs if x[0] == device]
        if not match:
            raise SourceError(f"input device {device} not found; {listing}")
    else:
        needle = device.lower()
        match = [x for x in inputs if x[1]["name"].lower() == needle] or [
            x for x in inputs if needle in x[1]["name"].lower()
        ]
        if not match:
            raise SourceError(f"input device '{device}' not found; {listing}")
        if len(match) > 1:
            names = ", ".join(f"[{i}] {d['name']}" for i, d in match)
            raise SourceError(
                f"input device '{device}' is ambiguous ({names}): give more of the name or an index; {listing}"
            )
    index, info = match[0]
    return index, info, listing


class MicSource(SourceBase):
    """A live input device through PortAudio; one endless `Recording`.

    The PortAudio callback only copies into a preallocated ring of
    `ring_seconds`; the consumer drains it in `block_seconds` blocks and
    resamples to `target_sr`. If the consumer falls behind by more than the
    ring, new audio is dropped: `overflows` counts such events (and PortAudio's
    own input overflows), `dropped_frames` the frames lost; after a drop, sample
    times lag the wall clock by `dropped_frames / capture_rate` seconds.
    `stop()` ends `blocks` after draining what was captured; `close()` releases
    the device at once.
    """

    def __init__(
        self,
        device: str | int | None = None,
        sample_rate: int | None = None,
        channels: int = 1,
        block_seconds: float = 0.5,
        *,
        target_sr: int,
        ring_seconds: float = 30.0,
        first_audio_timeout_s: float = 5.0,
        watch: Callable[[], ClockWatch] = ClockWatch,
    ):
        super().__init__()
        # a step of the wall clock mid-stream ends the recording, and the next starts at
        # the clock as set (as StdinSource does): NTP answering a board that booted at
        # 2000-01-01 left the stream's every detection in the year 2000
        self._watch = watch
        self._stepped: tuple[float, float, float] | None = None
        sd = import_sounddevice()
        self._sd = sd
        try:
            index, info, listing = _resolve_input_device(sd, device)
        except SourceError:
            if not _refresh_devices(sd):
                raise
            index, info, listing = _resolve_input_device(sd, device)
        self.device_index = index
        self.device_name = str(info["name"])
        self.capture_rate = int(sample_rate or round(info["default_samplerate"]))
        self.channels = int(channels)
        if not MIN_SAMPLE_RATE <= self.capture_rate <= MAX_SAMPLE_RATE:
            raise SourceError(
                f"input sample rate {self.capture_rate} Hz outside the supported {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
            )
        try:
            sd.check_input_settings(
                device=index, channels=self.channels, dtype="float32", samplerate=self.capture_rate
            )
        except Exception as e:
            raise SourceError(
                f"input device [{index}] {self.device_name} refuses {self.capture_rate} Hz x {self.channels} ch ({e}); "
                f"its default rate is {info['default_samplerate']:g} Hz, max {info['max_input_channels']} ch; {listing}"
            ) from e
        self.target_sr = int(target_sr)
        self.block_frames = max(1, round(block_seconds * self.capture_rate))
        self.first_audio_timeout_s = first_audio_timeout_s
        self.name = f"mic:{self.device_name}"
        self.overflows = 0
        self.dropped_frames = 0
        self._ring = _FloatRing(round(ring_seconds * self.capture_rate), self.channels)
        self._stream: Any = None
        self._t_first: float | None = None  # wall time (time.time()) of the first captured frame
        self._stop = threading.Event()

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's thread: no locks, no allocation beyond small ints.
        if self._t_first is None:
            self._t_first = time.time() - frames / self.capture_rate
        if status.input_overflow:
            self.overflows += 1
        if not self._ring.write(indata):
            self.overflows += 1
            self.dropped_frames += frames

    def _start(self) -> None:
        self._stop.clear()
        try:
            _OPEN.add(self)
            self._stream = self._sd.InputStream(
                device=self.device_index,
                samplerate=self.capture_rate,
                channels=self.channels,
                dtype="float32",
                callback=self._callback,
            )
            self._stream.start()
        except Exception as e:
            self._close_stream()
            raise SourceError(
                f"cannot start input device [{self.device_index}] {self.device_name}: {e}"
            ) from e
        deadline = time.monotonic() + self.first_audio_timeout_s
        while self._t_first is None:
            if time.monotonic() > deadline:
                self._close_stream()
                raise SourceError(
                    f"input device [{self.device_index}] {self.device_name} delivered no audio in {self.first_audio_timeout_s:g} s"
                )
            time.sleep(0.01)

    def recordings(self) -> Iterator[Recording | Skipped]:
        self._start()
        assert self._t_first is not None
        watch = self._watch()
        trusted, note = system_clock_synchronized()
        start = datetime.fromtimestamp(self._t_first, timezone.utc)
        note = f"wall clock at stream start; {note}"
        while True:
            self._stepped = None
            yield Recording(
                id=live_recording_id(self.name, start),
                sample_rate=self.target_sr,
                start_time=start,
                clock_trusted=trusted,
                clock_note=note,
                blocks=self._track(self._blocks(watch)),
                audio_note=band_note(self.capture_rate, self.target_sr),
            )
            if self._stepped is None:  # stopped, or the run stopped reading
                return
            stepped, _, now = self._stepped
            # the ring's unread frames were captured before now
            at = now - self._ring.available() / self.capture_rate
            start, trusted, note = after_clock_step(stepped, at)

    def _blocks(self, watch: ClockWatch | None = None) -> Iterator[np.ndarray]:
        """The stream's blocks until it stops, or (with `watch`) to a step of the wall
        clock: then `_stepped` holds it, and the stream goes on for the next recording."""
        out = np.empty((self.block_frames, self.channels), np.float32)
        rs = resampler(self.capture_rate, self.target_sr)
        poll_s = min(0.05, self.block_frames / self.capture_rate / 4)
        try:
            while True:
                stopping = self._stop.is_set()
                if stopping:
                    self._close_stream(graceful=True)  # no callback writes after this
                if stopping or self._ring.available() >= self.block_frames:
                    n = self._ring.read_into(out)
                    last = stopping and self._ring.available() == 0
                    block = out[:n]
                    mono = (
                        block[:, 0].copy()
                        if self.channels == 1
                        else block.mean(axis=1, dtype=np.float32)
                    )
                    y = mono if rs is None else rs.resample_chunk(mono, last=last)
                    if len(y):
                        yield y
                    if last:
                        return
                    if watch is not None and (step := watch.step()) is not None:
                        self._stepped = step
                        if rs is not None and len(tail := rs.resample_chunk(out[:0, 0], last=True)):
                            yield tail  # the resampler's last samples, before the cut
                        return
                    continue
                stream = self._stream
                if stream is None or not stream.active:
                    seen = self._ring.written / self.capture_rate
                    raise AudioError(
                        f"live input stopped after {seen:.2f} s (device disconnected?)"
                    )
                time.sleep(poll_s)
        finally:
            if self._stepped is None:  # cut by a clock step: the stream goes on
                self._close_stream()

    def stop(self) -> None:
        """End `blocks` gracefully: what was captured is drained and the resampler flushed."""
        self._stop.set()

    def _close_stream(self, graceful: bool = False) -> None:
        s, self._stream = self._stream, None
        if s is not None:
            with contextlib.suppress(Exception):
                if graceful:
                    s.stop()  # lets PortAudio deliver the buffers it holds
                s.close(ignore_errors=True)  # aborts a stream still active

    def close(self) -> None:
        self._stop.set()
        try:
            super().close()
        finally:
            self._close_stream()
