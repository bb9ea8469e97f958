"""Raw interleaved PCM from a pipe: stdin or a named pipe fed by a capture process."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import BinaryIO, Literal

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

_PCM_DTYPES: dict[str, np.dtype] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
# An audio file piped in whole had its header and encoded frames read as samples (a
# 3 s 6-channel WAV became an 18 s mono "ok" recording with detections). Each format is
# told by 4-8 fixed bytes: raw PCM begins so by chance about once in 2^32 streams or less.
_CONTAINERS = (  # (name, bytes at offset 0, bytes at offset 8)
    ("WAV", b"RIFF", b"WAVE"),
    ("WAV (RF64)", b"RF64", b"WAVE"),
    ("AIFF", b"FORM", b"AIF"),
    ("Ogg", b"OggS\x00", b""),
    ("FLAC", b"fLaC", b""),
    ("MP3", b"ID3", b""),
)


def container_of(head: bytes) -> str | None:
    """The audio file format a stream's first 12 bytes begin with; None: raw PCM."""
    for name, at_0, at_8 in _CONTAINERS:
        if head.startswith(at_0) and head[8:].startswith(at_8):
            return name
    return None


class StdinSource(SourceBase):
    """Raw interleaved PCM from a binary stream (e.g. `arecord ... | animalclap-edge run --source -`).

    Raw PCM has no timestamps: `start_time` is what the caller passes (default None).
    """

    def __init__(
        self,
        stream: BinaryIO,
        sample_rate: int,
        channels: int,
        dtype: Literal["s16le", "f32le"],
        target_sr: int,
        block_seconds: float = 1.0,
        start_time: datetime | None = None,
        name: str = "stdin",
        owns_stream: bool = False,
        live_clock: bool = False,
        watch: Callable[[], ClockWatch] = ClockWatch,
    ):
        super().__init__()
        # live_clock: a step of the wall clock mid-stream (NTP answering a board that
        # booted at 2000-01-01) ends the recording, and the next starts at the clock as
        # set: one opened before the step kept the year 2000 for weeks
        self._watch = watch
        self._stepped: tuple[float, float, float] | None = None
        self._carry = b""  # an incomplete frame's bytes, across that cut
        # live_clock: stamp the recording with the wall clock when its first bytes
        # arrive, as MicSource does (a pipe fed by a capture process is live audio).
        self.live_clock = live_clock
        self.owns_stream = owns_stream  # close the stream with the source (a FIFO we opened)
        if dtype not in _PCM_DTYPES:
            raise SourceError(f"raw PCM format must be one of {sorted(_PCM_DTYPES)}, got {dtype!r}")
        if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
            raise SourceError(
                f"raw PCM sample rate {sample_rate} Hz outside the supported {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
            )
        if channels < 1:
            raise SourceError(f"raw PCM needs at least 1 channel, got {channels}")
        self.stream = stream
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.dtype = dtype
        self.target_sr = int(target_sr)
        self.block_frames = max(1, round(block_seconds * sample_rate))
        self.start_time = start_time
        self.name = name

    def recordings(self) -> Iterator[Recording | Skipped]:
        first = b""
        start, trusted = self.start_time, False
        note = (
            "start time given by the caller" if start else f"{self.name}: raw PCM has no timestamps"
        )
        watch = None
        if self.live_clock and start is None:
            watch = self._watch()
            first = self.stream.read(
                self.block_frames * self.channels * _PCM_DTYPES[self.dtype].itemsize
            )
            frames = len(first) / (self.channels * _PCM_DTYPES[self.dtype].itemsize)
            start = datetime.fromtimestamp(watch.now() - frames / self.sample_rate, timezone.utc)
            trusted, sync = system_clock_synchronized()
            note = f"wall clock when the first audio arrived; {sync}"
        opening = True
        while True:
            self._stepped = None
            yield Recording(
                id=live_recording_id(self.name, start),
                sample_rate=self.target_sr,
                start_time=start,
                clock_trusted=trusted,
                clock_note=note,
                blocks=self._track(self._blocks(first, watch, opening)),
                audio_note=band_note(self.sample_rate, self.target_sr),
            )
            if self._stepped is None:  # the stream ended (or the run stopped reading)
                return
            stepped, _, now = self._stepped
            first, opening = b"", False
            start, trusted, note = after_clock_step(stepped, now)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.owns_stream:
                with contextlib.suppress(OSError):
                    self.stream.close()

    def _refuse_a_file(self, first: bytes) -> bytes:
        """`first` read on to 12 bytes (a pipe may return fewer), refused where they are
        an audio file's header: AudioError."""
        while len(first) < 12 and (more := self.stream.read(12 - len(first))):
            first += more
        if (kind := container_of(first)) is not None:
            raise AudioError(
                f"{self.name} begins with a {kind} file's header, not raw PCM: give the "
                "file as --source FILE, or decode it to raw samples first (e.g. "
                "`ffmpeg -i FILE -f s16le -ac 1 -`, and its rate as --stdin-rate)"
            )
        return first

    def _blocks(
        self, first: bytes = b"", watch: ClockWatch | None = None, opening: bool = True
    ) -> Iterator[np.ndarray]:
        """The stream's blocks, to its end, or (with `watch`) to a step of the wall
        clock: then `_stepped` holds it, and an incomplete frame waits in `_carry`.
        `opening`: the stream's start, where a file's header is refused."""
        dt = _PCM_DTYPES[self.dtype]
        frame_bytes = dt.itemsize * self.channels
        rs = resampler(self.sample_rate, self.target_sr)
        carry, self._carry = self._carry, b""  # bytes of an incomplete frame
        done = 0  # frames so far
        if opening:
            first = self._refuse_a_file(first)
        while True:
            chunk, first = first or self.stream.read(self.block_frames * frame_bytes), b""
            if not chunk:
                break
            if carry:
                chunk, carry = carry + chunk, b""
            usable = len(chunk) - len(chunk) % frame_bytes
            carry = chunk[usable:]
            if not usable:
                continue
            # (frames, channels) as float32 in [-1, 1)
            x = np.frombuffer(chunk, dt, count=usable // dt.itemsize).reshape(-1, self.channels)
            if dt.kind == "f":
                bad = ~np.isfinite(x).all(axis=1)
                if bad.any():
                    t = (done + int(np.argmax(bad))) / self.sample_rate
                    raise AudioError(f"non-finite samples (NaN/Inf) at {t:.2f} s")
                x = x.astype(np.float32)
            else:
                x = x.astype(np.float32) * np.float32(1 / 32768)
            done += len(x)
            mono = x[:, 0] if self.channels == 1 else x.mean(axis=1, dtype=np.float32)
            out = mono if rs is None else rs.resample_chunk(mono)
            if len(out):
                yield out
            if watch is not None and (step := watch.step()) is not None:
                self._stepped, self._carry, carry = step, carry, b""
                break
        if rs is not None:
            tail = rs.resample_chunk(np.zeros(0, np.float32), last=True)
            if len(tail):
                yield tail
        if carry:
            raise AudioError(
                f"truncated or corrupt after {done / self.sample_rate:.2f} s: {self.name} ended mid-frame ({len(carry)} stray bytes)"
            )
