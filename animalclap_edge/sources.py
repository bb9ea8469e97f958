"""Where audio comes from: a file, a folder, raw PCM on stdin, a live input device.

Every source yields, per input, either a `Recording` (mono float32 blocks at
the target rate, plus what is known about its wall-clock time) or a `Skipped`
(id and a one-line reason), so every file of a folder is accounted for.

Files are probed before their `Recording` is yielded: unreadable headers become
`Skipped`. Problems found later while streaming (NaN/Inf samples, a file cut
short, a decoder error) are raised as `AudioError` from `Recording.blocks`;
the blocks yielded before are valid audio.

`MicSource` needs sounddevice and PortAudio, imported only when one is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

import numpy as np
import soxr

from animalclap_edge.audio.decode import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    RESAMPLE_QUALITY,
    SUPPORTED_EXTENSIONS,
    AudioError,
    AudioInfo,
    band_note,
    probe,
    read_blocks,
)
from animalclap_edge.audio.header_time import header_time

MIC_INSTALL_HINT = "live input needs sounddevice and PortAudio: pip install 'animalclap-edge[mic]' (and libportaudio2)"
# Common audio containers libsndfile cannot read: a more useful reason than "not an audio file".
_UNSUPPORTED_AUDIO = frozenset({".m4a", ".aac", ".mp4", ".wma", ".ape", ".wv", ".amr", ".3gp"})
# AudioMoth "20240315_053000.WAV", Song Meter "SMM01234_20240315_053000.wav".
# YYYYMMDD_HHMMSS, then optionally Z or a UTC offset as some recorders and renaming
# tools write it: +0200, +02:00, -03:30. A minus needs its colon: "-0001" after the time
# is as likely a file counter as an offset.
_NAME_TIME = re.compile(
    r"(?<!\d)(\d{4})(\d{2})(\d{2})[_T-](\d{2})(\d{2})(\d{2})"
    r"(?:Z|(\+)(\d{2}):?(\d{2})|(-)(\d{2}):(\d{2}))?(?!\d)"
)


class SourceError(Exception):
    """A source cannot be opened; `str(e)` says what to do instead."""


@dataclass
class Recording:
    id: str  # file path, "mic:<device>" or "stdin"
    sample_rate: int  # rate of `blocks` (the target rate)
    start_time: datetime | None  # UTC wall time of sample 0
    clock_trusted: bool
    clock_note: str  # why the time is (not) trusted
    blocks: Iterator[np.ndarray]  # float32 (n,) mono; may raise AudioError mid-stream
    audio_note: str = ""  # what of the audio the model does not hear (decode.band_note)
    digest: str = ""  # files: content_digest, which tells two files at one path apart
    source_path: str = ""  # where it came from: the path of a file, the id of a stream
    # a file, which a later run can read again from its start; a live stream cannot be
    replayable: bool = False

    def __post_init__(self) -> None:
        self.source_path = self.source_path or self.id


@dataclass(frozen=True)
class Skipped:
    id: str
    reason: str
    source_path: str = ""  # the path; the id, unless a row of an analysis holds that

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_path", self.source_path or self.id)


@runtime_checkable
class Source(Protocol):
    name: str

    def recordings(self) -> Iterator[Recording | Skipped]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: object) -> None: ...


class _SourceBase:
    """Context manager that closes the block iterators it handed out (files, streams)."""

    name: str = ""

    def __init__(self) -> None:
        # Weak: a folder of 10^5 files must not keep 10^5 finished generators alive.
        self._iters: weakref.WeakSet = weakref.WeakSet()

    def _track(self, it: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        self._iters.add(it)
        return it

    def close(self) -> None:
        for it in list(self._iters):
            # ValueError: "generator already executing" (closed from another thread)
            with contextlib.suppress(ValueError):
                it.close()  # type: ignore[attr-defined]

    def __enter__(self) -> _SourceBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- files ---------------------------------------------------------------------


def _not_audio_reason(path: Path) -> str:
    ext = path.suffix.lower()
    if not ext:
        return "not an audio file (no extension)"
    if ext in _UNSUPPORTED_AUDIO:
        return f"audio format not supported ({ext}): convert to WAV or FLAC"
    return f"not an audio file ({ext})"


def time_from_name(name: str) -> datetime | None:
    """UTC time in a recorder file name (`YYYYMMDD_HHMMSS`, AudioMoth/Song Meter; a
    trailing UTC offset such as `+0200` is applied), else None."""
    return _name_time(name)[0]


def _name_time(name: str) -> tuple[datetime | None, str]:
    """The time in a file name, and how it was read (or why none was)."""
    why = ""
    for m in _NAME_TIME.finditer(name):
        parts = m.groups()[:6]
        sign, oh, om = m.group(7, 8, 9) if m.group(7) else m.group(10, 11, 12)
        try:
            t = datetime(*(int(g) for g in parts), tzinfo=timezone.utc)  # type: ignore[misc]
        except ValueError:  # 8+6 digits that are not a date, e.g. a serial number
            why = f"{m.group(0)} in the file name is no date and time"
            continue
        if sign is None or int(oh) > 14 or om not in ("00", "15", "30", "45"):
            return t, "time from file name (read as UTC)"
        offset = timedelta(hours=int(oh), minutes=int(om))
        t -= offset if sign == "+" else -offset
        return t, f"time from file name (its offset {sign}{oh}:{om} applied)"
    return None, why


def _file_clock(path: Path, info: AudioInfo) -> tuple[datetime | None, bool, str]:
    """The recorder's header time (it knows its zone, which its file names follow, so a
    name read as UTC is off by it), then the file name's, then the mtime. A name that
    says another time than its header's (a file renamed, or cut into parts that each
    keep the first part's header) gives the time, read in the header's zone."""
    t, how = _name_time(path.name)
    h = header_time(info)
    if h is not None:
        device = f"; {h.device}" if h.device else ""
        if t is None or t in (h.start_utc, h.local.replace(tzinfo=timezone.utc)):
            return h.start_utc, True, f"time from the recorder's header ({h.zone} applied{device})"
        if how.endswith("(read as UTC)"):  # a name without its own offset: the recorder's
            t = (t.replace(tzinfo=None) - h.offset).replace(tzinfo=timezone.utc)
            how = f"time from file name (the header's {h.zone} applied)"
        return t, True, f"{how}; its header says {h.local:%Y-%m-%d %H:%M:%S} {h.zone}{device}"
    if t is not None:
        return t, True, how
    try:
        mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError as e:
        return None, False, f"no time: {e}"
    # mtime is usually when the recorder closed the file, i.e. the last sample.
    return (
        mtime - timedelta(seconds=info.duration_s),
        False,
        "time from file mtime: not a recorder clock" + (f" ({how})" if how else ""),
    )


DIGEST_BYTES = 1 << 14


def content_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's first 16 KiB: its header and the first samples of its
    audio, which no two recordings share (AudioMoth's header also names the device and
    its battery and temperature). Two cards whose recorders named files alike, mounted
    in turn at one path, are then two recordings. Not the size nor the tail: a file
    copied again whole after a torn copy stays the same recording. 16 KiB: a pass over
    a card of 10^5 files that are done already reads 1.6 GB, not the whole card."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(DIGEST_BYTES)).hexdigest()


def _file_recording(
    path: Path, target_sr: int, block_seconds: float, track: Any
) -> Recording | Skipped:
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        return Skipped(str(path), _not_audio_reason(path))
    try:
        info = probe(path)
        digest = content_digest(path)
    except AudioError as e:
        return Skipped(str(path), str(e))
    except OSError as e:  # probed, then gone or unreadable (a card pulled)
        return Skipped(str(path), f"cannot read: {e.strerror or e}")
    start, trusted, note = _file_clock(path, info)
    return Recording(
        id=str(path),
        sample_rate=target_sr,
        start_time=start,
        clock_trusted=trusted,
        clock_note=note,
        blocks=track(read_blocks(path, target_sr, block_seconds)),
        audio_note=band_note(info.sample_rate, target_sr),
        digest=digest,
        replayable=True,
    )


class FileSource(_SourceBase):
    """One audio file; yields one `Recording` or one `Skipped`."""

    def __init__(self, path: str | os.PathLike, target_sr: int, block_seconds: float = 10.0):
        super().__init__()
        # absolute: a recording's id is its path, and `x.wav` run from here and
        # `/card/x.wav` run from elsewhere must be one recording, logged once
        self.path = Path(os.path.abspath(path))
        self.target_sr = int(target_sr)
        self.block_seconds = float(block_seconds)
        self.name = str(self.path)

    def recordings(self) -> Iterator[Recording | Skipped]:
        yield _file_recording(self.path, self.target_sr, self.block_seconds, self._track)


class FolderSource(_SourceBase):
    """Every file under `root`, sorted by relative path; non-audio files come back as `Skipped`.

    Hidden files and folders (name starting with ".") are ignored. With
    `recursive=False`, subfolders are reported as `Skipped` rather than searched.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        target_sr: int,
        recursive: bool = True,
        block_seconds: float = 10.0,
    ):
        super().__init__()
        self.root = Path(os.path.abspath(root))  # absolute, as FileSource's path
        self.target_sr = int(target_sr)
        self.recursive = recursive
        self.block_seconds = float(block_seconds)
        self.name = str(self.root)
        self._listing: list[tuple[Path, bool]] | None = None  # from count(), used once
        if not self.root.is_dir():
            raise SourceError(f"source folder '{root}' is not a folder")

    def _entries(self) -> list[tuple[Path, bool]]:
        """(path, is_dir_not_searched), sorted by relative path parts for a stable order."""
        found: list[tuple[Path, bool]] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            visible = sorted(d for d in dirnames if not d.startswith("."))
            if self.recursive:
                dirnames[:] = visible
            else:
                dirnames[:] = []
                found.extend((here / d, True) for d in visible)
            found.extend((here / f, False) for f in filenames if not f.startswith("."))
        found.sort(key=lambda e: e[0].relative_to(self.root).parts)
        return found

    def count(self) -> int:
        """How many entries `recordings` will yield (for a progress display); the
        listing is kept for it, so a card of 10^5 files is walked once, not twice."""
        self._listing = self._entries()
        return len(self._listing)

    def recordings(self) -> Iterator[Recording | Skipped]:
        listing, self._listing = self._listing or self._entries(), None
        for path, is_dir in listing:
            if is_dir:
                yield Skipped(str(path), "folder not searched (recursive=False)")
            elif not path.is_file():
                yield Skipped(str(path), "not a regular file (broken link or special file)")
            else:
                yield _file_recording(path, self.target_sr, self.block_seconds, self._track)


# -- raw PCM on stdin ----------------------------------------------------------

_PCM_DTYPES = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


class StdinSource(_SourceBase):
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
    ):
        super().__init__()
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
        if self.live_clock and start is None:
            first = self.stream.read(
                self.block_frames * self.channels * _PCM_DTYPES[self.dtype].itemsize
            )
            frames = len(first) / (self.channels * _PCM_DTYPES[self.dtype].itemsize)
            start = datetime.fromtimestamp(time.time() - frames / self.sample_rate, timezone.utc)
            trusted, sync = system_clock_synchronized()
            note = f"wall clock when the first audio arrived; {sync}"
        yield Recording(
            id=live_recording_id(self.name, start),
            sample_rate=self.target_sr,
            start_time=start,
            clock_trusted=trusted,
            clock_note=note,
            blocks=self._track(self._blocks(first)),
            audio_note=band_note(self.sample_rate, self.target_sr),
        )

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.owns_stream:
                with contextlib.suppress(OSError):
                    self.stream.close()

    def _blocks(self, first: bytes = b"") -> Iterator[np.ndarray]:
        dt = _PCM_DTYPES[self.dtype]
        frame_bytes = dt.itemsize * self.channels
        rs = _resampler(self.sample_rate, self.target_sr)
        carry = b""  # bytes of an incomplete frame from the previous read
        done = 0  # frames so far
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
        if rs is not None:
            tail = rs.resample_chunk(np.zeros(0, np.float32), last=True)
            if len(tail):
                yield tail
        if carry:
            raise AudioError(
                f"truncated or corrupt after {done / self.sample_rate:.2f} s: {self.name} ended mid-frame ({len(carry)} stray bytes)"
            )


def live_recording_id(prefix: str, start: datetime | None) -> str:
    """A new id for every opening of a live stream (microphone, raw PCM pipe).

    Detection ids derive from the recording id and the window's offset in it, and a
    recording id seen before is passed over as done. A fixed id ("stdin", the device
    name) would make every restart replay offsets 0, 1.5, 3... of "the same" recording
    and drop its detections as duplicates; a wall-clock stamp alone is not enough on a
    recorder without a real-time clock, which boots at the same time every day. Hence
    stamp plus random suffix: live audio cannot be replayed, so nothing needs these ids
    to be reproducible.
    """
    stamp = start.strftime("%Y%m%dT%H%M%S.%fZ") if start else "undated"
    return f"{prefix}@{stamp}#{uuid.uuid4().hex[:8]}"


def _resampler(sr_in: int, sr_out: int) -> soxr.ResampleStream | None:
    return (
        None
        if sr_in == sr_out
        else soxr.ResampleStream(sr_in, sr_out, 1, "float32", RESAMPLE_QUALITY)
    )


# -- live input ----------------------------------------------------------------


def system_clock_synchronized() -> tuple[bool, str]:
    """Whether the system clock is NTP-synchronized, and how we know. Never raises."""
    if Path("/run/systemd/timesync/synchronized").exists():
        return True, "system clock synchronized (systemd-timesyncd)"
    try:
        r = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"cannot tell whether the system clock is synchronized ({type(e).__name__})"
    value = r.stdout.strip().lower()
    if value == "yes":
        return True, "system clock synchronized (timedatectl NTPSynchronized=yes)"
    if value == "no":
        return False, "system clock not synchronized (timedatectl NTPSynchronized=no)"
    return (
        False,
        "cannot tell whether the system clock is synchronized (timedatectl gave no answer)",
    )


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


class MicSource(_SourceBase):
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
    ):
        super().__init__()
        sd = import_sounddevice()
        self._sd = sd
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
        trusted, note = system_clock_synchronized()
        start = datetime.fromtimestamp(self._t_first, timezone.utc)
        yield Recording(
            id=live_recording_id(self.name, start),
            sample_rate=self.target_sr,
            start_time=start,
            clock_trusted=trusted,
            clock_note=f"wall clock at stream start; {note}",
            blocks=self._track(self._blocks()),
            audio_note=band_note(self.capture_rate, self.target_sr),
        )

    def _blocks(self) -> Iterator[np.ndarray]:
        out = np.empty((self.block_frames, self.channels), np.float32)
        rs = _resampler(self.capture_rate, self.target_sr)
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
                    continue
                stream = self._stream
                if stream is None or not stream.active:
                    seen = self._ring.written / self.capture_rate
                    raise AudioError(
                        f"live input stopped after {seen:.2f} s (device disconnected?)"
                    )
                time.sleep(poll_s)
        finally:
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


# -- one entry point -------------------------------------------------------------


def is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        return False


def is_mic(spec: str) -> bool:
    """ "mic" or "mic:<name-or-index>"."""
    return spec == "mic" or spec.startswith("mic:")


def is_reopenable(spec: str) -> bool:
    """Live sources that can be opened again after they end: a microphone, a named pipe."""
    return is_mic(spec) or is_fifo(Path(spec).expanduser())


def open_source(
    spec: str,
    target_sr: int,
    *,
    input_device: str | int | None = None,
    capture_sample_rate: int | None = None,
    channels: int = 1,
    block_s: float = 0.5,
    ring_seconds: float = 30.0,
    stdin_rate: int | None = None,
    stdin_channels: int = 1,
    stdin_format: Literal["s16le", "f32le"] = "s16le",
    stdin: BinaryIO | None = None,
    stdin_live: bool = False,
    file_block_seconds: float = 10.0,
) -> Source:
    """A source from a command-line spec: "mic", "mic:<name-or-index>", "-", a named pipe of
    raw PCM, a folder or a file.

    `input_device`, `capture_sample_rate`, `channels`, `block_s`, `ring_seconds`
    apply to "mic" ("mic:<x>" overrides `input_device`); `stdin_*` to "-" (and the
    rate, channels and format to a named pipe, which is always timed as live).
    Other keywords are ignored for sources they do not apply to.
    """
    if is_mic(spec):
        device = input_device
        if spec.startswith("mic:") and spec[4:]:
            device = spec[4:]
        return MicSource(
            device,
            capture_sample_rate,
            channels,
            block_s,
            target_sr=target_sr,
            ring_seconds=ring_seconds,
        )
    if not spec.strip():
        raise SourceError(
            "empty --source: give a file, a folder, 'mic', or '-' for raw PCM on stdin"
        )
    if spec == "-":
        if not stdin_rate:
            raise SourceError(
                "'-' (raw PCM on stdin) needs its sample rate: add --stdin-rate, e.g. 48000"
            )
        return StdinSource(
            stdin if stdin is not None else sys.stdin.buffer,
            stdin_rate,
            stdin_channels,
            stdin_format,
            target_sr,
            live_clock=stdin_live,
        )
    p = Path(spec).expanduser()
    if is_fifo(p):
        if not stdin_rate:
            raise SourceError(
                f"named pipe {p} carries raw PCM: give its sample rate (--stdin-rate)"
            )
        # Opening blocks until a writer (arecord, a DSP process) opens the other end.
        return StdinSource(
            open(p, "rb", buffering=0),  # owned and closed by the source
            stdin_rate,
            stdin_channels,
            stdin_format,
            target_sr,
            name=f"pipe:{p.name}",
            owns_stream=True,
            live_clock=True,
        )
    if p.is_dir():
        return FolderSource(p, target_sr, block_seconds=file_block_seconds)
    if p.exists():
        return FileSource(p, target_sr, block_seconds=file_block_seconds)
    raise SourceError(
        f"source '{spec}' not found: give a WAV/FLAC/OGG/MP3 file, a folder of them, 'mic', or '-' for raw PCM on stdin"
    )
