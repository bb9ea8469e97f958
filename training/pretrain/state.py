"""Atomic, resumable checkpoints that `ClapModel.from_pretrained` loads.

checkpoints/step-00001500/
    model/               save_pretrained: weights, config, tokenizer, feature extractor
    training_state.pt    optimizer, counters (global step, epoch, next step in epoch)
    sizes.json           every other file's size in bytes, written last
checkpoints/latest       the name of the newest complete checkpoint
final/                   the trained model, save_pretrained layout (save_final)

A checkpoint is written to a hidden temporary folder, flushed to disk, and renamed into
place, then `latest` is replaced by rename: a run killed at any moment leaves the
previous checkpoint intact and `latest` pointing at a complete one. A file torn anyway
(a node that lost power before its disk caught up, a copy cut short) no longer matches
sizes.json; a resume then takes the newest checkpoint that is whole and says so.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from animalclap_edge.contracts.frontend import FrontendConfig
from training.atomic import dead_temporaries, fsync, writer_tag
from training.model import save_checkpoint

SIZES = "sizes.json"
FULL_BELOW = 256 * 2**20  # free bytes under which a failed save is taken for a full disk
_STEP = re.compile(r"step-(\d+)")


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def save(
    folder: Path, step: int, model, tokenizer, frontend, optimizer, counters: dict, keep: int
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / step_name(step)
    tmp = folder / f".{step_name(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_checkpoint(model, tokenizer, frontend, tmp / "model")
        torch.save({"optimizer": optimizer.state_dict(), **counters}, tmp / "training_state.pt")
        _seal(tmp)
    except Exception as e:
        # torch.save reports a full disk as RuntimeError("... unexpected pos ..."),
        # safetensors as SafetensorError: said as the OS would say it, so the command
        # line can name the remedy; nothing half written is left
        full = shutil.disk_usage(folder).free < FULL_BELOW
        shutil.rmtree(tmp, ignore_errors=True)
        if full and not (isinstance(e, OSError) and e.errno == errno.ENOSPC):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder)) from e
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = folder / ".latest.tmp"
    pointer.write_text(final.name, encoding="utf-8")
    fsync(pointer)
    os.replace(pointer, folder / "latest")
    fsync(folder)
    # by step, and never the one just written: a folder may hold later steps of a
    # run resumed from before them
    older = sorted((p for p in _steps(folder) if p != final), key=_step_of)
    for old in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_final(path: Path, model: nn.Module, tokenizer, frontend: FrontendConfig) -> Path:
    """Write the run's model to `path` (its final/) whole or not at all: into a hidden
    sibling, flushed, then renamed in. An existing one is renamed aside first, so
    `path` is at every moment absent, the old model or the new, never half written
    (a final/ is taken for a finished run). The temporaries carry this process's
    host-pid, so two writers (a folder the file system would not lock) cannot write
    into one; those a dead writer leaves are cleared by `clear_temporaries`."""
    tag = writer_tag()
    tmp = path.with_name(f".{path.name}.{tag}.tmp")
    old = path.with_name(f".{path.name}.{tag}.old.tmp")
    # and those of writers killed mid-save on this host (the small trainer's checkpoint/
    # has no lock that clear_temporaries could clear them under)
    for leftover in (tmp, old, *dead_temporaries(path)):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        save_checkpoint(model, tokenizer, frontend, tmp)
        _flush(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def clear_temporaries(run: Path, checkpoints: Path) -> list[Path]:
    """Remove the temporaries that saves killed mid-write left in a run folder (final/'s
    and the checkpoints'); returns them. `state.save` clears a step's own only when it
    saves that step again. Call it only before this run saves anything, and only while
    holding the folder's lock (`held_exclusively`): no other pretrain run then writes
    there, so every temporary found is a dead writer's."""
    found = [*run.glob(".final.*.tmp"), *checkpoints.glob(".step-*.tmp")]
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


def latest(folder: Path) -> Path | None:
    """The checkpoint a run in `folder` resumes from (None: none yet); see `resume_from`."""
    return resume_from(folder)[0]


def resume_from(folder: Path) -> tuple[Path | None, str | None]:
    """The checkpoint `latest` names, or, where that one is not whole, the newest whole
    one before it, with a note saying why. ValueError when none is whole."""
    pointer = folder / "latest"
    steps = sorted(_steps(folder), key=_step_of, reverse=True)  # newest first
    text = pointer.read_text(encoding="utf-8").strip() if pointer.exists() else None
    if text:
        named = folder / text
        if (damage := _not_whole(named)) is None:
            return named, None
        why = f"{pointer} names {text}, which {damage}"
        steps = [p for p in steps if _step_of(p) < _step_of(named)]
    elif text is None and not steps:
        return None, None  # a run not begun
    else:
        why = f"{pointer} is {'missing' if text is None else 'empty'}"
    for path in steps:
        if _not_whole(path) is None:
            return path, f"{why}; resuming from {path.name}, the newest whole checkpoint before it"
    raise ValueError(
        f"{why}, and no whole checkpoint is left to resume from: delete {folder} to train "
        "from the start, or give a new --out"
    )


def load_counters(path: Path) -> dict:
    file = path / "training_state.pt"
    try:
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as e:  # a torn zip, unpickling errors: one line, and what to do
        raise ValueError(
            f"cannot read {file} ({str(e).splitlines()[0]}): move {path} out of "
            f"{path.parent} to resume from the checkpoint before it"
        ) from None


def _steps(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_dir() and _STEP.fullmatch(p.name)]


def _step_of(path: Path) -> int:
    m = _STEP.fullmatch(path.name)
    return int(m.group(1)) if m else -1


def _not_whole(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be resumed from (None: it can). Checkpoints
    written before sizes.json existed are taken as whole when their files are there."""
    if not path.is_dir():
        return "is not there"
    for needed in ("training_state.pt", "model/config.json"):
        if not (path / needed).is_file():
            return f"is incomplete (no {needed})"
    if not (path / SIZES).is_file():
        return None
    try:
        sizes = json.loads((path / SIZES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"is damaged ({SIZES} unreadable)"
    for rel, size in sizes.items():
        file = path / rel
        if not file.is_file():
            return f"is damaged ({rel} is missing)"
        if file.stat().st_size != size:
            return f"is damaged ({rel} is {file.stat().st_size} bytes of {size})"
    return None


def _seal(tmp: Path) -> None:
    """Flush every file of a checkpoint to disk, then record their sizes, last."""
    sizes = _flush(tmp)
    (tmp / SIZES).write_text(json.dumps(sizes, indent=1), encoding="utf-8")
    fsync(tmp / SIZES)
    fsync(tmp)


def _flush(folder: Path) -> dict[str, int]:
    """fsync every file under `folder`, then its folders; returns each file's size."""
    sizes = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        fsync(file)
        sizes[file.relative_to(folder).as_posix()] = file.stat().st_size
    for d in {folder, *(p for p in folder.rglob("*") if p.is_dir())}:
        fsync(d)
    return sizes
