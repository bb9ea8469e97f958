"""Recorder files: one file or a folder of them, each probed, dated and fingerprinted
before its `Recording` is yielded."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from animalclap_edge.audio.decode import (
    SUPPORTED_EXTENSIONS,
    AudioError,
    AudioInfo,
    band_note,
    probe,
    read_blocks,
)
from animalclap_edge.audio.header_time import header_time
from animalclap_edge.sources.base import Recording, Skipped, SourceBase, SourceError

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
        year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
        sign, oh, om = m.group(7, 8, 9) if m.group(7) else m.group(10, 11, 12)
        try:
            t = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
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


class FileSource(SourceBase):
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


class FolderSource(SourceBase):
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
