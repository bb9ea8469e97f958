"""Where a checkpoint came from: the run folder that wrote it, that run's settings, and
the split its data was trained with.

A fine-tuning run replays global data and reports on the global data's unseen
species. Those must be the species the checkpoint never trained on: the split of the
run that trained it, not one drawn afresh from the fine-tuning run's own seed, which
would put the checkpoint's unseen species on the replayed training side.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from training.identity import absolute_paths
from training.labelled_audio import Item
from training.splits import (
    ZeroShotSplit,
    carried_over,
    heard_unseen_excluded,
    items_digest,
)

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


def inherited_split(
    init: str | None, spec: str, items: Sequence[Item], seed: int, val_fraction: float
) -> tuple[ZeroShotSplit, str] | None:
    """The zero-shot split `init` was trained with on the data `spec` (`trained_split`),
    for `items`, that data as it is now, and a note of where it came from; None where
    no local run folder shows it. As saved, with the background rule applied, while the
    data is unchanged; else carried over (`splits.carried_over`): the species `init`
    never trained on stay unseen, the rest is split again by site-day. A new draw from
    the seed could hold out species `init` has trained on."""
    saved = trained_split(init, spec)
    if saved is None:
        return None
    return split_as_saved(saved, spec, items, seed, val_fraction, f"{init} was trained with")


def init_split(
    init: str | None, data: str, items: Sequence[Item], fresh: ZeroShotSplit
) -> tuple[ZeroShotSplit, str] | None:
    """Where `init` was trained on this same data: its split, not `fresh`, a draw that
    could hold out species `init` has trained on (then reported as unseen); None where
    no run folder shows it (a hub checkpoint, other data)."""
    seed, val_fraction = fresh.params.get("seed", 0), fresh.params.get("val_fraction", 0.1)
    found = inherited_split(init, data, items, seed, val_fraction)
    if found is None:
        return None
    split, how = found
    differs = set(fresh.test_species) - set(split.test_species)
    return split, f"split: {how}" + (
        f"; a new draw would have held out {len(differs)} species it trained on" if differs else ""
    )


def split_as_saved(
    saved: Path, spec: str, items: Sequence[Item], seed: int, val_fraction: float, whose: str
) -> tuple[ZeroShotSplit, str]:
    """The split in `saved` for `items` (the data `spec` as it is now), and a note that
    names it as the split `whose` ("this run began with"). As saved, with the background
    rule applied, while the data is unchanged; else carried over."""
    split = ZeroShotSplit.from_json(saved)
    if not split.items_digest or items_digest(items) == split.items_digest:
        # a split saved before background species counted as heard trains on none that
        # hear its unseen species either
        return heard_unseen_excluded(split, items), f"the zero-shot split {whose} ({saved})"
    moved = carried_over(split, items, seed, val_fraction)
    return moved, (
        f"{spec} has changed since {saved} was written ({split.recordings} recordings then, "
        f"{len(items)} now): the species never trained on stay unseen "
        f"({len(moved.test_species)}), the rest is split again by site-day"
    )


def trained_on_generated_audio(checkpoint: str | None) -> str | None:
    """The data spec, where the run that wrote `checkpoint`, or one it was fine-tuned
    from (its `init`, followed back), trained on the procedural benchmark (generated
    calls: no field model comes of it), else None. A region's model fine-tuned from
    the demo checkpoint was bundled as a field model."""
    from training.benchmark.corpus import is_procedural

    seen: set[Path] = set()
    for _ in range(MAX_DEPTH):
        run = run_of(checkpoint)
        if run is None or run in seen:
            return None
        seen.add(run)
        _, settings = run_settings(run)
        for spec in (settings.get("data"), settings.get("replay")):
            if isinstance(spec, str) and spec and is_procedural(spec):
                return spec
        checkpoint = settings.get("init")
        if not isinstance(checkpoint, str):
            return None
    return None
