"""A loader worker's copy-on-write of a ClipTable's file names: a tuple of Paths (as
the table first held them) against one bytes array (as it holds them now).

A recordings folder has a file per recording. Each worker is forked from the main
process and reads each row's file name once. Reading a Path bumps its reference count,
which copies its page into the worker. Reading the array writes nothing, but making a
Path of what it read does: pathlib interns each part of a path, and the interned
strings the main process already holds are looked up and bumped (gc.freeze() before
the fork changed nothing here). Read as a str, no page is written.

    python scripts/benchmarks/clip_table_files.py --files 100000
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def private_mb() -> float:
    total = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def grown_in_worker(files, read, rows: np.ndarray) -> float:
    """MB the forked child's private memory grows by while reading every row once."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        read(files, 0)
        before = private_mb()
        for i in rows:
            read(files, i)
        os.write(w, f"{private_mb() - before:.1f}".encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        grown = float(f.read())
    os.waitpid(pid, 0)
    return grown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--passes", type=int, default=2)
    a = ap.parse_args()
    names = [
        f"/data/region/site{i % 300}/recording_{i:06d}_2024-06-01T05-00-00.flac"
        for i in range(a.files)
    ]
    ways = {
        "tuple of Paths": (tuple(Path(s) for s in names), lambda f, i: f[i]),
        "bytes array, read as Paths": (
            np.array([os.fsencode(s) for s in names], dtype=bytes),
            lambda f, i: Path(os.fsdecode(f[i])),
        ),
        "bytes array, read as str": (
            np.array([os.fsencode(s) for s in names], dtype=bytes),
            lambda f, i: os.fsdecode(f[i]),
        ),
    }
    del names
    rows = np.random.default_rng(0).permutation(a.files)
    for _ in range(a.passes):
        for name, (files, read) in ways.items():
            grown = grown_in_worker(files, read, rows)
            print(f"{name}: a worker's private memory grew {grown:.1f} MB over {a.files} files")


if __name__ == "__main__":
    main()
