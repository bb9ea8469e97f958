"""What every source yields (`Recording`, `Skipped`), its protocol, and the pieces
that file, stream and microphone sources share."""

from __future__ import annotations

import contextlib
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import soxr

from animalclap_edge.audio.decode import RESAMPLE_QUALITY


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
    """Where audio comes from: files, a microphone, a pipe, or a class of one's own
    (a network hydrophone), passed to `Detector.run` or wrapped in `WatchedSource`.

    `recordings()` yields a `Recording` per file or stream (or `Skipped`, with why),
    whose `blocks` are 1-D float32 mono in [-1, 1] at `Recording.sample_rate`, which
    must be the detector's `sample_rate` (resample in the source; `resampler` does it
    as the built-in sources do): other blocks are refused per recording, with the
    reason in its row. A source that cannot be opened raises SourceError, or OSError
    (a refused connection): under `WatchedSource` both are logged as `open_failed` and
    retried with backoff. `close()` may be called from another thread to stop a run.
    """

    name: str

    def recordings(self) -> Iterator[Recording | Skipped]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: object) -> None: ...


_S = TypeVar("_S", bound="SourceBase")


class SourceBase:
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
                it.close()

    def __enter__(self: _S) -> _S:  # the subclass itself: a FolderSource is a Source
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def resampler(sr_in: int, sr_out: int) -> soxr.ResampleStream | None:
    """A streaming mono float32 resampler at the runtime's quality (None: no change of
    rate): `r.resample_chunk(block)` per block, `last=True` on the last."""
    return (
        None
        if sr_in == sr_out
        else soxr.ResampleStream(sr_in, sr_out, 1, "float32", RESAMPLE_QUALITY)
    )
