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

import stat
import sys
from pathlib import Path
from typing import BinaryIO, Literal

from animalclap_edge.sources.base import (
    Recording,
    Skipped,
    Source,
    SourceBase,
    SourceError,
    live_recording_id,
    resampler,
)
from animalclap_edge.sources.clock import system_clock_synchronized
from animalclap_edge.sources.files import (
    DIGEST_BYTES,
    FileSource,
    FolderSource,
    content_digest,
    time_from_name,
)
from animalclap_edge.sources.mic import MIC_INSTALL_HINT, MicSource, import_sounddevice
from animalclap_edge.sources.pcm import StdinSource

__all__ = [
    "DIGEST_BYTES",
    "MIC_INSTALL_HINT",
    "FileSource",
    "FolderSource",
    "MicSource",
    "Recording",
    "Skipped",
    "Source",
    "SourceBase",
    "SourceError",
    "StdinSource",
    "content_digest",
    "import_sounddevice",
    "is_fifo",
    "is_mic",
    "is_reopenable",
    "live_recording_id",
    "open_source",
    "resampler",
    "system_clock_synchronized",
    "time_from_name",
]


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
    if stdin_rate:
        # a raw-PCM run pointed at a pipe that is not there (yet): a shell redirect
        # into a missing pipe makes a regular file, which was then read as one
        # skipped "not an audio file", exit 0, while arecord filled it (and /run)
        what = "a folder" if p.is_dir() else "a regular file" if p.exists() else "not found"
        raise SourceError(
            f"--stdin-rate reads raw PCM from '-' or a named pipe; {p} is {what}: make "
            f"the pipe first (rm -f {p}; mkfifo {p}), or drop --stdin-rate for audio files"
        )
    if p.is_dir():
        return FolderSource(p, target_sr, block_seconds=file_block_seconds)
    if p.exists():
        return FileSource(p, target_sr, block_seconds=file_block_seconds)
    raise SourceError(
        f"source '{spec}' not found: give a WAV/FLAC/OGG/MP3 file, a folder of them, 'mic', "
        "'-' for raw PCM on stdin, or a named pipe (mkfifo) with --stdin-rate"
    )
