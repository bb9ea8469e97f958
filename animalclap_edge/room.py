"""Room for the detection database on a full card: clip audio gives way first.

Detections are the product and clips their evidence (docs/storage.md). Retention keeps
the best few clips of each label, so a small card can fill with kept examples until
SQLite cannot write: the run then stopped, and every restart failed to open the
database, a restart loop with no recording. When SQLite has failed for want of room
(the card has less than FULL_BELOW free), the clips ClipWriter wrote are deleted
oldest first, kept examples too, until ROOM_TARGET is free, and their events' rows
are cleared once the database writes again (`DetectionStore.forget_clips`: kept
examples are never retention's candidates, so their rows pointed at audio that was
gone for good). Nothing else in the folder is touched,
and nothing is deleted where all the clips together could not lift the card out of
"full".
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from animalclap_edge.clips import CLIP_NAME
from animalclap_edge.diskspace import disk_bytes
from animalclap_edge.records import now_utc_ms

FULL_BELOW = 1 << 20  # free bytes under which the card counts as full
ROOM_TARGET = 8 << 20  # free bytes a deletion aims for: room for hours of detections
# SQLite's primary result codes: sqlite3 names them (SQLITE_FULL, SQLITE_IOERR) only
# from Python 3.11, and the recorder's is 3.10
_SQLITE_FULL, _SQLITE_IOERR = 13, 10
_WANT_OF_ROOM_MESSAGES = ("database or disk is full", "disk I/O error")  # sqlite3_errstr


@dataclass(frozen=True)
class RoomMade:
    files: int  # clip files deleted
    bytes: int  # their size on disk
    free: int  # bytes free afterwards
    paths: tuple[str, ...] = field(default=(), repr=False)  # as events.clip_path holds them

    def detail(self) -> dict[str, int]:
        """The health event's detail: the counts, not every path."""
        return {"files": self.files, "bytes": self.bytes, "free": self.free}

    def note(self) -> str:
        return f"clip deleted at {now_utc_ms()} to make room on a full card for detections"

    def summary(self) -> str:
        return (
            f"the card was full: {self.files} clip file(s) deleted ({self.bytes / 1e6:.1f} MB, "
            f"oldest first, kept examples too) so that detections can be logged; "
            f"{self.free / 1e6:.1f} MB free now"
        )


def is_full(folder: Path, disk_usage: Callable[[Path], Any] = shutil.disk_usage) -> bool:
    """Whether the file system holding `folder` has less than FULL_BELOW free. SQLite
    says "disk I/O error" as often as "database or disk is full" when it cannot grow."""
    return disk_usage(folder).free < FULL_BELOW


def own_clips(clips_dir: Path) -> list[Path]:
    """The clip files ClipWriter wrote under `clips_dir` (as retention tells them),
    oldest first."""
    found = [p for p in clips_dir.rglob("*") if CLIP_NAME.match(p.name) and p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def make_room(
    clips_dir: Path | None, disk_usage: Callable[[Path], Any] = shutil.disk_usage
) -> RoomMade | None:
    """Delete our clips, oldest first, until ROOM_TARGET is free; None where there was
    none, or where all of them could not bring the card out of "full"."""
    if clips_dir is None or not clips_dir.is_dir():
        return None
    clips = own_clips(clips_dir)
    free = disk_usage(clips_dir).free
    if free + sum(disk_bytes(p) for p in clips) < FULL_BELOW:
        return None  # futile: the card is full of other things
    gone: list[str] = []
    freed = 0
    for clip in clips:
        if disk_usage(clips_dir).free >= ROOM_TARGET:
            break
        size = disk_bytes(clip)
        clip.unlink(missing_ok=True)
        gone.append(clip.relative_to(clips_dir).as_posix())
        freed += size
    if not gone:
        return None
    return RoomMade(len(gone), freed, disk_usage(clips_dir).free, tuple(gone))


def is_want_of_room(e: Exception) -> bool:
    """Whether SQLite's error is one a full card gives (SQLITE_FULL, SQLITE_IOERR and
    its extended codes), not a constraint or a lock."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
    if not isinstance(e, sqlite3.Error):  # not raised by SQLite itself
        return False
    # Python 3.10 (the recorder's) gives no code: SQLite's own message for each. The
    # extended I/O codes all read "disk I/O error"; a full card never made room there.
    return str(e) in _WANT_OF_ROOM_MESSAGES
