"""Recorder files: one file or a folder of them, each probed, dated and fingerprinted
before its `Recording` is yielded."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from animalclap_edge.audio.decode import (
    AUDIO_EXTENSIONS,
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
# .w4v/.wac: Wildlife Acoustics' compressed formats (their Kaleidoscope converts them)
_UNSUPPORTED_AUDIO = frozenset(
    {".m4a", ".aac", ".mp4", ".wma", ".ape", ".wv", ".amr", ".3gp", ".w4v", ".wac"}
)
# AudioMoth "20240315_053000.WAV", Song Meter "SMM01234_20240315_053000.wav" (GPS-
# synchronised: "SM4A01234_20240315$053000.wav"), ISO 8601 basic "20240315T053000".
# YYYYMMDD_HHMMSS, then optionally Z or a UTC offset as some recorders and renaming
# tools write it: +0200, +02:00, -03:30. After "_", "$" or "-" a minus needs its colon:
# "-0001" after the time is as likely a file counter as an offset. After "T" (ISO 8601,
# Frontier Labs' "20240315T053000-0500") "-0500" is an offset.
_NAME_TIME = re.compile(
    r"(?<!\d)(\d{4})(\d{2})(\d{2})([_T$-])(\d{2})(\d{2})(\d{2})"
    r"(?:(Z)|([+-])(\d{2})(:?)(\d{2}))?(?!\d)"
)
_FIXED_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
ZONE_EXAMPLE = "an IANA zone such as 'Europe/Berlin', or a fixed offset such as '+02:00'"


def parse_file_time_zone(spec: str) -> tzinfo:
    """`device.file_time_zone`: an IANA zone name (daylight saving applied by each
    file's own date) or a fixed offset "+02:00"/"-05:00". ValueError, in one line, if
    it is neither."""
    m = _FIXED_OFFSET.fullmatch(spec)
    if m:
        sign, hh, mm = m.groups()
        offset = timedelta(hours=int(hh), minutes=int(mm))
        if int(mm) >= 60 or offset > timedelta(hours=14):
            raise ValueError(f"{spec!r} is no UTC offset (-14:00 to +14:00): give {ZONE_EXAMPLE}")
        return timezone(-offset if sign == "-" else offset)
    try:
        return ZoneInfo(spec)
    except (ValueError, LookupError, OSError):  # not a key, not found, a folder (Europe)
        raise ValueError(f"{spec!r} is no time zone known here: give {ZONE_EXAMPLE}") from None


@dataclass(frozen=True)
class _Zone:
    name: str  # as configured: "Europe/Berlin", "-05:00"
    tz: tzinfo


# A recorder's time before this is a clock never set: 1970 (Unix), 1980 (FAT) or 2000
# (an RTC's reset). Not retention's CLOCK_FLOOR_UTC (2026): that is for rows this
# software logged, while a card's recordings of 2024 are real.
RECORDER_CLOCK_FLOOR = datetime(2001, 1, 1, tzinfo=timezone.utc)


def _hhmm(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta(0)).total_seconds()) // 60
    return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _plainly_not_audio(path: Path) -> bool:
    """No audio format by its extension (a recorder's summary CSV, CONFIG.TXT, notes.txt,
    a README): not a recording. Audio soundfile cannot read (.m4a) is one, skipped."""
    ext = path.suffix.lower()
    return ext not in AUDIO_EXTENSIONS and ext not in _UNSUPPORTED_AUDIO


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


def _name_time(name: str) -> tuple[datetime | None, str, str]:
    """The time in a file name, how it was read (or why none was), and the zone the
    name itself gives: "" (none: read as UTC), "Z", or its offset ("+02:00")."""
    why = ""
    for m in _NAME_TIME.finditer(name):
        year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 5, 6, 7))
        sep, z, sign, oh, colon, om = m.group(4, 8, 9, 10, 11, 12)
        try:
            t = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
        except ValueError:  # 8+6 digits that are not a date, e.g. a serial number
            why = f"{m.group(0)} in the file name is no date and time"
            continue
        if z:
            return t, "time from file name (read as UTC)", "Z"
        if sign is None or (sign == "-" and not colon and sep != "T"):  # a counter
            return t, "time from file name (read as UTC)", ""
        if int(oh) > 14 or om not in ("00", "15", "30", "45"):
            return t, "time from file name (read as UTC)", ""
        offset = timedelta(hours=int(oh), minutes=int(om))
        try:
            t -= offset if sign == "+" else -offset
        except OverflowError:  # 00010101_000000+0200: before year 1 in UTC
            why = f"{m.group(0)} in the file name is no date and time"
            continue
        return t, f"time from file name (its offset {sign}{oh}:{om} applied)", f"{sign}{oh}:{om}"
    return None, why, ""


def _in_zone(t: datetime, zone: _Zone) -> tuple[datetime, bool, str]:
    """A name's time `t` (read as UTC) placed in `zone`: the UTC time, whether it is
    sure, and how. A local time that happens twice (clocks put back) is read as the
    first (fold=0); one that does not exist (clocks put forward) with the offset before
    the change (fold=0, as zoneinfo does); both are untrusted, their notes say why."""
    local = t.replace(tzinfo=None)
    first, second = local.replace(tzinfo=zone.tz), local.replace(tzinfo=zone.tz, fold=1)
    try:
        utc = first.astimezone(timezone.utc)
    except OverflowError:  # year 1 or 9999: no recorder's clock
        return t, False, f"time from file name (read as UTC: {zone.name} goes out of range)"
    offset = _hhmm(first.utcoffset())
    applied = "" if zone.name == offset else f": {offset}"
    how = f"time from file name (device.file_time_zone {zone.name} applied{applied})"
    if first.utcoffset() == second.utcoffset():
        return utc, True, how
    if utc.astimezone(zone.tz).replace(tzinfo=None) != local:
        why = "does not exist there (clocks put forward): read with the offset in force before"
    else:
        why = "happens twice there (clocks put back): read as the first"
    return utc, False, f"{how}; not trusted: {local:%Y-%m-%d %H:%M:%S} {why}"


def _file_clock(
    path: Path, info: AudioInfo, zone: _Zone | None = None
) -> tuple[datetime | None, bool, str]:
    """The recorder's header time, or the file name's, untrusted before the clock floor
    (a recorder clock never set: 1970, 2000), else the mtime, untrusted."""
    t, trusted, how = _recorder_clock(path, info, zone)
    if t is not None and trusted and t < RECORDER_CLOCK_FLOOR:
        trusted = False
        how = f"{how}; not trusted: before {RECORDER_CLOCK_FLOOR:%Y-%m-%d}, a recorder clock never set"
    return t, trusted, how


def _recorder_clock(
    path: Path, info: AudioInfo, zone: _Zone | None
) -> tuple[datetime | None, bool, str]:
    """The recorder's header time (it knows its zone, which its file names follow, so a
    name read as UTC is off by it), then the file name's (a name without a zone of its
    own read in `zone`, `device.file_time_zone`, when set), then the mtime. A name that
    says another time than its header's (a file renamed, or cut into parts that each
    keep the first part's header) gives the time, read in the header's zone."""
    t, how, own = _name_time(path.name)
    h = header_time(info)
    if h is not None:
        device = f"; {h.device}" if h.device else ""
        if t is None or t in (h.start_utc, h.local.replace(tzinfo=timezone.utc)):
            return h.start_utc, True, f"time from the recorder's header ({h.zone} applied{device})"
        if own in ("", "Z"):  # a name without its own offset: the recorder's
            t = (t.replace(tzinfo=None) - h.offset).replace(tzinfo=timezone.utc)
            how = f"time from file name (the header's {h.zone} applied)"
        return t, True, f"{how}; its header says {h.local:%Y-%m-%d %H:%M:%S} {h.zone}{device}"
    if t is not None:
        if zone is not None and not own:
            return _in_zone(t, zone)
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
    path: Path, target_sr: int, block_seconds: float, track: Any, zone: _Zone | None = None
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
    start, trusted, note = _file_clock(path, info, zone)
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


class _NamedInAZone:
    """`file_time_zone`: the zone of file names that carry no offset of their own
    (`device.file_time_zone`); None: UTC. A recorder header's zone, an offset or Z in
    the name wins. An unknown zone is a SourceError."""

    _zone: _Zone | None = None

    @property
    def file_time_zone(self) -> str | None:
        return self._zone.name if self._zone is not None else None

    @file_time_zone.setter
    def file_time_zone(self, spec: str | None) -> None:
        try:
            self._zone = None if spec is None else _Zone(spec, parse_file_time_zone(spec))
        except ValueError as e:
            raise SourceError(f"file_time_zone: {e}") from None


class FileSource(SourceBase, _NamedInAZone):
    """One audio file; yields one `Recording` or one `Skipped`."""

    def __init__(
        self,
        path: str | os.PathLike,
        target_sr: int,
        block_seconds: float = 10.0,
        *,
        file_time_zone: str | None = None,
    ):
        super().__init__()
        self.file_time_zone = file_time_zone
        # absolute: a recording's id is its path, and `x.wav` run from here and
        # `/card/x.wav` run from elsewhere must be one recording, logged once
        self.path = Path(os.path.abspath(path))
        self.target_sr = int(target_sr)
        self.block_seconds = float(block_seconds)
        self.name = str(self.path)

    def recordings(self) -> Iterator[Recording | Skipped]:
        yield _file_recording(
            self.path, self.target_sr, self.block_seconds, self._track, self._zone
        )


class FolderSource(SourceBase, _NamedInAZone):
    """Every audio file under `root`, sorted by relative path; one that cannot be read
    (corrupt, empty, .m4a) comes back as `Skipped`.

    Files plainly not audio by their extension (a recorder's summary CSV, notes.txt)
    are no recordings: passed over, and tallied by extension in `not_audio` (see
    `not_audio_note`). Hidden files and folders (name starting with ".") are ignored.
    With `recursive=False`, subfolders are reported as `Skipped` rather than searched.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        target_sr: int,
        recursive: bool = True,
        block_seconds: float = 10.0,
        *,
        file_time_zone: str | None = None,
    ):
        super().__init__()
        self.file_time_zone = file_time_zone
        self.root = Path(os.path.abspath(root))  # absolute, as FileSource's path
        self.target_sr = int(target_sr)
        self.recursive = recursive
        self.block_seconds = float(block_seconds)
        self.name = str(self.root)
        self._listing: list[tuple[Path, bool]] | None = None  # from count(), used once
        # files passed over as not audio, by extension ("" for none), from the listing
        self.not_audio: Counter[str] = Counter()
        if not self.root.is_dir():
            raise SourceError(f"source folder '{root}' is not a folder")

    def _entries(self) -> list[tuple[Path, bool]]:
        """(path, is_dir_not_searched), sorted by relative path parts for a stable order."""
        found: list[tuple[Path, bool]] = []
        not_audio: Counter[str] = Counter()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            visible = sorted(d for d in dirnames if not d.startswith("."))
            if self.recursive:
                dirnames[:] = visible
            else:
                dirnames[:] = []
                found.extend((here / d, True) for d in visible)
            for f in filenames:
                if f.startswith("."):
                    continue
                if _plainly_not_audio(here / f):
                    not_audio[Path(f).suffix.lower()] += 1
                else:
                    found.append((here / f, False))
        found.sort(key=lambda e: e[0].relative_to(self.root).parts)
        self.not_audio = not_audio
        return found

    def not_audio_note(self) -> str | None:
        """One line on the files passed over as not audio, or None if there were none:
        "3 files passed over as not audio (2 .csv, 1 .txt): not counted as recordings"."""
        n = sum(self.not_audio.values())
        if not n:
            return None
        by_count = sorted(self.not_audio.items(), key=lambda e: (-e[1], e[0]))
        kinds = [f"{k} {ext or 'with no extension'}" for ext, k in by_count]
        shown = ", ".join(kinds[:6]) + (", ..." if len(kinds) > 6 else "")
        files = "file" if n == 1 else "files"
        return f"{n} {files} passed over as not audio ({shown}): not counted as recordings"

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
                yield _file_recording(
                    path, self.target_sr, self.block_seconds, self._track, self._zone
                )
