"""Balanced epochs and grouped train/validation splits, deterministic from seeds."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def balanced_epoch(
    species_of: Sequence[str], clips_per_species: int, seed: int, epoch: int
) -> np.ndarray:
    """Indices into `species_of` for one balanced epoch: `clips_per_species` per species.

    Species with fewer recordings are drawn with replacement. The plan depends only
    on (seed, epoch), so every rank and every resumed run sees the same one.
    """
    by_species: dict[str, list[int]] = defaultdict(list)
    for i, sid in enumerate(species_of):
        by_species[sid].append(i)
    rng = np.random.default_rng([seed, epoch])
    plan = []
    for sid in sorted(by_species):
        idx = np.asarray(by_species[sid])
        replace = len(idx) < clips_per_species
        plan.append(rng.choice(idx, size=clips_per_species, replace=replace))
    out = np.concatenate(plan) if plan else np.empty(0, int)
    rng.shuffle(out)
    return out


def group_split(
    groups: Sequence[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that no group (e.g. "site|date") is on both sides.

    Same-day recordings of a site share background and individuals: splitting them
    would leak. Assignment hashes the group with the seed, so it is stable when
    recordings are added.
    """

    def u(group: str) -> float:
        h = hashlib.sha256(f"{seed}:{group}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    is_val = np.array([u(g) < val_fraction for g in groups], bool)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def replay_epoch(
    species_of: Sequence[str],
    is_replay: Sequence[bool] | np.ndarray,
    clips_per_species: int,
    replay_fraction: float,
    seed: int,
    epoch: int,
) -> np.ndarray:
    """A balanced epoch of the new (regional) items plus replayed global items.

    The regional species get `clips_per_species` each, as in `balanced_epoch`; replay
    adds clips from a balanced plan of the global species so that they make up
    `replay_fraction` of the epoch (taken from the front of that shuffled plan, so
    the replayed species change from epoch to epoch). Deterministic in (seed, epoch).
    """
    if not 0 <= replay_fraction < 1:
        raise ValueError(f"replay_fraction must be in [0, 1), got {replay_fraction}")
    mask = np.asarray(is_replay, bool)
    new_idx, old_idx = np.flatnonzero(~mask), np.flatnonzero(mask)
    new = new_idx[
        balanced_epoch([species_of[i] for i in new_idx.tolist()], clips_per_species, seed, epoch)
    ]
    if replay_fraction == 0 or len(old_idx) == 0:
        return new
    n_old = round(len(new) * replay_fraction / (1 - replay_fraction))
    old_plan = balanced_epoch(
        [species_of[i] for i in old_idx.tolist()], clips_per_species, seed + 1, epoch
    )
    old = old_idx[np.resize(old_plan, n_old)]  # repeats the plan if it is too short
    out = np.concatenate([new, old])
    np.random.default_rng([seed, epoch, 2]).shuffle(out)
    return out
