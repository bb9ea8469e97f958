"""Which torchrun rank this process is, from the environment torchrun sets: readable
before any process group exists, and without importing torch (the command line checks
it before every command)."""

from __future__ import annotations

import os


def torchrun_rank_world() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as torchrun sets them; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
