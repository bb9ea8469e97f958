"""Room for the detection database on a full card: clip audio gives way first.

Detections are the product and clips their evidence (docs/storage.md). Retention keeps
the best few clips of each label, so a card can fill with kept examples until SQLite
cannot write: the run then stopped, and every restart failed to open the database, a
restart loop with no recording. When the database cannot write for want of room,
clip files are deleted oldest first, kept examples too, until `room_needed` is free;
the next retention pass clears their rows ("clip file already gone").
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLIP_SUFFIXES = (".flac", ".wav")


@dataclass(frozen=True)
class RoomMade:
    files: int  # clip files deleted
    bytes: int  # their size on disk
    free: int  # bytes free afterwards

    def summary(self) -> str:
        return (
            f"the card was full: {self.files} clip file(s) deleted ({self.bytes / 1e6:.1f} MB, "
            f"oldest first, kept examples too) so that detections can be logged; "
            f"{self.free / 1e6:.1f} MB free now"
        )


def room_needed(folder: Path, disk_usage: Callable[[Path], Any] = shutil.disk_usage) -> int:
    """Bytes the database should have free: 1% of the card, at least 1 MiB."""
    return max(1 << 20, disk_usage(folder).total // 100)


def is_full(folder: Path, disk_usage: Callable[[Path], Any] = shutil.disk_usage) -> bool:
    """Whether the file system holding `folder` has less room than `room_needed`. SQLite
    says "disk I/O error" as often as "database or disk is full" when it cannot grow."""
    return disk_usage(folder).free < room_needed(folder, disk_usage)


def make_room(
    clips_dir: Path | None, disk_usage: Callable[[Path], Any] = shutil.disk_usage
) -> RoomMade | None:
    """Delete clip files, oldest first, until `room_needed` is free; None where there
    was no clip to delete (the card is full of something else)."""
    if clips_dir is None or not clips_dir.is_dir():
        return None
    clips = sorted(
        (p for p in clips_dir.rglob("*") if p.suffix.lower() in CLIP_SUFFIXES and p.is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    need = room_needed(clips_dir, disk_usage)
    files = freed = 0
    for clip in clips:
        if disk_usage(clips_dir).free >= need:
            break
        size = clip.stat().st_blocks * 512
        clip.unlink(missing_ok=True)
        files, freed = files + 1, freed + size
    if not files:
        return None
    return RoomMade(files, freed, disk_usage(clips_dir).free)
