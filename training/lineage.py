"""Where a checkpoint came from: the run folder that wrote it, that run's settings, and
the split its data was trained with.

A fine-tuning run replays global data and reports on the global data's unseen
species. Those must be the species the checkpoint never trained on: the split of the
run that trained it, not one drawn afresh from the fine-tuning run's own seed, which
would put the checkpoint's unseen species on the replayed training side.
"""

from __future__ import annotations

import json
from pathlib import Path

from training.identity import absolute_paths

# Fine-tuning from a fine-tuned checkpoint follows its init back; runs are few deep.
MAX_DEPTH = 16


def run_of(checkpoint: str | None) -> Path | None:
    """The run folder a local checkpoint sits in: RUN for RUN/final (pretrain, finetune),
    RUN/checkpoint (train) and RUN/checkpoints/step-N/model; None for a hub id or a
    folder of its own."""
    if not checkpoint:
        return None
    path = Path(checkpoint).expanduser()
    if not (path / "config.json").is_file():
        return None
    path = path.resolve()
    if path.name in ("final", "checkpoint"):
        return path.parent
    if path.name == "model" and path.parent.parent.name == "checkpoints":
        return path.parents[2]
    return None


def run_settings(run: Path) -> tuple[str, dict]:
    """The settings a run folder was trained with, and the file they came from:
    pretrain and finetune save them in pretrain_config.json, train in
    train_summary.json's "config" (("", {}) where neither is there). Paths are read
    as absolute where they exist."""
    for name in ("pretrain_config.json", "train_summary.json"):
        saved = run / name
        if saved.is_file():
            settings = json.loads(saved.read_text(encoding="utf-8"))
            return name, absolute_paths(settings.get("config", settings))
    return "", {}


def trained_split(checkpoint: str | None, data: str) -> Path | None:
    """The split `checkpoint` was trained with on `data` (a spec as `--data` takes it,
    paths absolute): split.json of the run that trained on it, or replay_split.json of
    a fine-tuning run that replayed it (older fine-tuning runs: followed back to their
    init); None where the chain leaves local run folders or that data."""
    for _ in range(MAX_DEPTH):
        run = run_of(checkpoint)
        if run is None:
            return None
        _, settings = run_settings(run)
        if settings.get("data") == data:
            split = run / "split.json"
            return split if split.is_file() else None
        if settings.get("replay") != data:
            return None
        if (run / "replay_split.json").is_file():  # the split this run replayed
            return run / "replay_split.json"
        checkpoint = settings.get("init")  # runs before replay_split.json: its init's
    return None


def trained_on_generated_audio(checkpoint: str | None) -> str | None:
    """The data spec, where the run that wrote `checkpoint` trained on the procedural
    benchmark (generated calls: no field model comes of it), else None."""
    from training.benchmark.corpus import is_procedural

    run = run_of(checkpoint)
    if run is None:
        return None
    _, settings = run_settings(run)
    for spec in (settings.get("data"), settings.get("replay")):
        if isinstance(spec, str) and spec and is_procedural(spec):
            return spec
    return None
