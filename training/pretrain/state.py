"""Atomic, resumable checkpoints that `ClapModel.from_pretrained` loads.

checkpoints/step-00001500/
    model/               save_pretrained: weights, config, tokenizer, feature extractor
    training_state.pt    optimizer, counters (global step, epoch, next step in epoch)
checkpoints/latest       the name of the newest complete checkpoint

A checkpoint is written to a hidden temporary folder and renamed into place, then
`latest` is replaced by rename: a run killed at any moment leaves the previous
checkpoint intact and `latest` pointing at a complete one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from training.model import save_checkpoint


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def save(
    folder: Path, step: int, model, tokenizer, frontend, optimizer, counters: dict, keep: int
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / step_name(step)
    tmp = folder / f".{step_name(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tokenizer, frontend, tmp / "model")
    torch.save({"optimizer": optimizer.state_dict(), **counters}, tmp / "training_state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = folder / ".latest.tmp"
    pointer.write_text(final.name, encoding="utf-8")
    os.replace(pointer, folder / "latest")
    done = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.exists():
        return None
    path = folder / pointer.read_text(encoding="utf-8").strip()
    if not (path / "training_state.pt").exists():
        raise ValueError(
            f"{pointer} names {path.name}, which is incomplete; delete {pointer} to start over"
        )
    return path


def load_counters(path: Path) -> dict:
    return torch.load(path / "training_state.pt", map_location="cpu", weights_only=False)
