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
