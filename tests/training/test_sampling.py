"""Balanced epochs: k clips per species, from (seed, epoch) alone."""

from __future__ import annotations

from collections import Counter

import numpy as np

from training.sampling import balanced_epoch

# 3 common species with 40 recordings each, 2 rare ones with 3 and 1
SPECIES = ["a"] * 40 + ["b"] * 40 + ["c"] * 40 + ["rare"] * 3 + ["single"]


def test_every_species_gets_k_clips_and_common_ones_are_not_repeated():
    plan = balanced_epoch(SPECIES, 30, seed=0, epoch=0)
    assert Counter(SPECIES[i] for i in plan) == {s: 30 for s in set(SPECIES)}
    for sid in ("a", "b", "c"):  # enough recordings: drawn without replacement
        mine = [i for i in plan if SPECIES[i] == sid]
        assert len(set(mine)) == 30
    rare = {i for i in plan if SPECIES[i] == "rare"}
    assert rare == {120, 121, 122}  # with replacement: all of its 3 recordings
    assert {i for i in plan if SPECIES[i] == "single"} == {123}


def test_the_plan_depends_on_seed_and_epoch_only():
    same = balanced_epoch(SPECIES, 30, seed=3, epoch=2)
    np.testing.assert_array_equal(same, balanced_epoch(list(SPECIES), 30, seed=3, epoch=2))
    assert not np.array_equal(same, balanced_epoch(SPECIES, 30, seed=3, epoch=3))
    assert not np.array_equal(same, balanced_epoch(SPECIES, 30, seed=4, epoch=2))
    # shuffled across species, not one species after another
    first = [SPECIES[i] for i in same[:30]]
    assert len(set(first)) > 1
