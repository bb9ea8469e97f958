"""FLAC clips of events: the best window of each event, for a person to listen to.

One clip per event (not per window: overlapping windows would store most audio
twice), the window where the event's probability peaked, written as 16-bit FLAC at
the bundle's rate to `clips_dir/<date>/<event id>.flac` by write, fsync, rename. Clips
stop when the disk is fuller than `max_disk_percent`, and the event records why it
has no clip, so a full card never stops detection logging.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from animalclap_edge.diskspace import percent_full
from animalclap_edge.records import Event

# What ClipWriter names its files (`<day>/<event id with ':' as '_'>.flac`, written as
# `.<name>.tmp` first): only such files are ever deleted by retention or on a full card.
CLIP_NAME = re.compile(r"^\.?event_[0-9a-f-]+\.flac(\.tmp)?$")


class ClipError(RuntimeError):
    """The clips folder cannot be used; the message names it and why."""


class ClipWriter:
    def __init__(self, folder: str | Path, sample_rate: int, max_disk_percent: float = 90.0):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ClipError(
                f"storage.clips_dir {self.folder}: cannot create it ({e.strerror or e}); "
                "give a writable folder, or set storage.save_clips: false"
            ) from None
        if not os.access(self.folder, os.W_OK):
            raise ClipError(
                f"storage.clips_dir {self.folder}: cannot write in it (read-only card or no "
                "permission); give a writable folder, or set storage.save_clips: false"
            )
        self.sample_rate, self.max_disk_percent = sample_rate, max_disk_percent
        self.written = 0
        self.refused: dict[str, int] = {}  # reason -> clips not written

    def disk_percent(self) -> float:
        return percent_full(self.folder)

    def write(self, event: Event, samples: np.ndarray) -> tuple[str | None, str | None]:
        """(relative clip path, None) or (None, reason the clip was not written)."""
        import soundfile as sf

        used = self.disk_percent()
        if used > self.max_disk_percent:
            reason = f"disk {used:.0f}% full > storage.max_disk_percent {self.max_disk_percent:g}"
            self.refused["disk full"] = self.refused.get("disk full", 0) + 1
            return None, reason
        day = (event.start_time_utc or "undated")[:10]
        rel = Path(day) / f"{event.event_id.replace(':', '_')}.flac"
        path = self.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            sf.write(
                tmp, np.clip(samples, -1, 1), self.sample_rate, format="FLAC", subtype="PCM_16"
            )
            _fsync(tmp)  # the audio is on the card before its name is
            os.replace(tmp, path)
            _fsync(path.parent)  # and the rename survives a power cut too
        except (OSError, sf.SoundFileError) as e:  # libsndfile reports ENOSPC as its own error
            tmp.unlink(missing_ok=True)
            self.refused["write error"] = self.refused.get("write error", 0) + 1
            # libsndfile reports ENOSPC as "System error." or an encoder failure: say it
            free = shutil.disk_usage(self.folder).free
            if free < 1 << 20:
                return None, f"clip not written: disk full ({free // 1024} KB free; {e})"
            return None, f"clip not written: {e}"
        self.written += 1
        return rel.as_posix(), None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
