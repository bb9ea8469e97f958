"""How full the disk is, counted as `df` counts it.

`used / total` understates it: ext4 keeps about 5% of an SD card for root, so a
recorder running as an ordinary user meets ENOSPC while `used / total` still says 95%,
and a `storage.max_disk_percent` of 95 would never be reached. `shutil.disk_usage`'s
`free` is the space available to unprivileged users (statvfs f_bavail), so
used / (used + free) is 100% exactly when the recorder can write no more.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def usage_percent(usage: Any) -> float:
    """Percent full of a `shutil.disk_usage` result (anything with .used and .free)."""
    room = usage.used + usage.free
    return 100.0 * usage.used / room if room else 100.0


def percent_full(path: str | Path, disk_usage: Callable[[Path], Any] = shutil.disk_usage) -> float:
    """Percent full of the filesystem holding `path`."""
    return usage_percent(disk_usage(Path(path)))


def disk_bytes(path: Path) -> int:
    """Space a file takes on disk (its allocated blocks); 0 when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return 0
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size
