"""Output-folder guards: refuse to continue, in an output folder, work that another
configuration started, and leave no empty folder behind when a command fails first."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def refuse_other_settings(
    saved: Path,
    new: dict,
    keys: tuple[str, ...],
    holds: str,
    advice: str,
    read_as: Callable[[dict], dict] | None = None,
) -> None:
    """Raise ValueError naming the first of `keys` whose value in the JSON file `saved`
    (written by the run that began the folder) differs from `new`; nothing if `saved`
    is not there yet. `holds` says what the folder holds, `advice` what to do;
    `read_as` normalises the saved values as `new`'s were (e.g. paths made absolute)."""
    if not saved.is_file():
        return
    old = json.loads(saved.read_text(encoding="utf-8"))
    old = read_as(old) if read_as else old
    changed = [k for k in keys if k in old and old[k] != new[k]]
    if changed:
        k = changed[0]
        also = f"; also {', '.join(changed[1:])}" if changed[1:] else ""
        raise ValueError(
            f"{saved.parent} holds {holds} ({k} {old[k]!r}, not {new[k]!r}{also}): {advice}"
        )


def absolute(spec: str) -> str:
    """A spec that names an existing local path, made absolute; a hub id, a benchmark
    size or anything else as it is."""
    return str(Path(spec).resolve()) if spec and Path(spec).exists() else spec


def absolute_paths(values: dict) -> dict:
    """`values` (settings by name) with data, replay, init and out made absolute where they
    name existing paths: also what a run's saved settings are read as, since runs begun
    before 2026-11-27 saved them as typed."""
    found = dict(values)
    for name in ("data", "replay", "init", "out"):
        if isinstance(values.get(name), str):
            found[name] = absolute(values[name])
    return found


def with_absolute_paths(cfg: T) -> T:
    """A run's settings (a dataclass) with `absolute_paths` applied: a run records where
    its data was, and resuming it from another directory, or naming the same folder
    another way, is the same run."""
    return dataclasses.replace(cfg, **absolute_paths(dataclasses.asdict(cfg)))


# What each command leaves in its --out: `train` a checkpoint/ and its summary;
# `pretrain` and `finetune` checkpoints/step-N/ while they run and final/ at the end.
TRAIN_RUN = ("checkpoint", "train_summary.json")
PRETRAIN_RUN = ("checkpoints", "final")


@contextlib.contextmanager
def removed_if_left_empty(out: Path) -> Iterator[None]:
    """A run that fails before writing anything (a bad init, data that does not open)
    leaves no empty --out behind: the next attempt starts as new, not as a 'resume'.
    A folder that existed before is kept, and so is anything written into it."""
    fresh = not out.exists()
    try:
        yield
    except BaseException:
        if fresh and out.is_dir():
            for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):  # not empty: kept, with what it holds
                    folder.rmdir()
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


@contextlib.contextmanager
def held_exclusively(out: Path, take: bool = True) -> Iterator[tuple[bool, str | None]]:
    """Hold an exclusive lock on the folder `out` (created if need be) while the block
    runs. Yields (held, note): (False, None) when another process holds it; (True,
    note) when the file system refuses the lock itself (note says so, to be logged;
    the block runs unguarded). An flock on the folder: no file is left behind, and
    the kernel releases it when the holder dies, however it dies. `take` False (a
    rank that does not own the folder) yields (True, None) at once."""
    import errno
    import fcntl
    import os

    if not take:
        yield True, None
        return
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False, None
            return
        except OSError as e:  # e.g. NFS mounted without locking, or a folder it won't lock
            code = e.errno
            why = str(code) if code is None else errno.errorcode.get(code, str(code))
            yield (
                True,
                (
                    f"--out {out} could not be locked ({why}: {e.strerror}): a second run "
                    "started in this folder would not be refused"
                ),
            )
            return
        yield True, None
    finally:
        os.close(fd)  # releases the lock
