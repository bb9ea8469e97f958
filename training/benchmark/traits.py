"""Generated ecological traits: drawn by descent, with species-level departures.

Every trait of the schema gets a value for every species, using only the schema's
names and values (any schema works). Each taxon node (class, order, family, genus)
inherits its parent's tendency and sometimes departs from it; a species inherits its
genus' tendency and departs with a per-trait probability. Departures are larger for
LABILE_TRAITS (activity pattern, habitat, migration, climate: all sound-linked, see
`trait_sound`), so those vary inside genera: taxonomy alone cannot predict them, but
the sound can.

Categorical traits carry one modal value down the tree; multi-label traits carry a
set of values, each value switching on/off independently at each level.

The values are synthetic labels for a benchmark, NOT the real ecology of the named
species.
"""

from __future__ import annotations

import functools

import numpy as np

from animalclap_edge.contracts.catalogue import Catalogue, Species
from animalclap_edge.contracts.traits import Trait, TraitSchema, TraitTable
from training.benchmark.hashing import stable_rng

NODE_LEVELS: tuple[str, ...] = ("class", "order", "family", "genus")
# Chance a node keeps its parent's modal value (categorical traits).
KEEP: dict[str, float] = {"order": 0.6, "family": 0.75, "genus": 0.85}
# Chance a value's membership flips at a node (multi-label traits).
FLIP: dict[str, float] = {"order": 0.2, "family": 0.12, "genus": 0.08}
# Species-level departure probability. LABILE_TRAITS (all sound-linked) depart often,
# so they vary inside genera and only the sound can tell them apart; other traits
# (body mass, song complexity included) mostly follow the genus.
LABILE_TRAITS: tuple[str, ...] = ("activity_pattern", "habitat", "migration", "climate")
SPECIES_DEPART = 0.08
SPECIES_DEPART_LABILE = 0.3


def draw_traits(catalogue: Catalogue, schema: TraitSchema, seed: int) -> TraitTable:
    """{species_id: {trait: [values in schema order]}} for every species and trait."""
    return {
        sp.id: {t.name: draw_species_trait(sp, t, seed) for t in schema.traits} for sp in catalogue
    }


def draw_species_trait(species: Species, trait: Trait, seed: int) -> list[str]:
    """One species' values of one trait (deterministic in seed, lineage and trait)."""
    lineage = tuple(species.taxon(level) for level in NODE_LEVELS)
    depart = SPECIES_DEPART_LABILE if trait.name in LABILE_TRAITS else SPECIES_DEPART
    rng = stable_rng(seed, "trait", trait.name, "species", species.scientific_name)
    if trait.kind == "categorical":
        mode = _node_mode(seed, trait, lineage)
        if rng.random() < depart:
            others = [i for i in range(len(trait.values)) if i != mode]
            mode = others[int(rng.integers(len(others)))]
        return [trait.values[mode]]
    members = np.array(_node_set(seed, trait, lineage))
    flips = rng.random(len(members)) < depart / 2  # per value, so sets change less often
    members ^= flips
    if not members.any():
        members[int(rng.integers(len(members)))] = True
    return [v for v, on in zip(trait.values, members, strict=True) if on]


@functools.cache
def _node_mode(seed: int, trait: Trait, lineage: tuple[str, ...]) -> int:
    """Modal value index of the node named by `lineage` (class .. genus prefix)."""
    level = NODE_LEVELS[len(lineage) - 1]
    rng = stable_rng(seed, "trait", trait.name, *lineage)
    if len(lineage) == 1:
        return int(rng.integers(len(trait.values)))
    parent = _node_mode(seed, trait, lineage[:-1])
    if rng.random() < KEEP[level]:
        return parent
    return int(rng.integers(len(trait.values)))


@functools.cache
def _node_set(seed: int, trait: Trait, lineage: tuple[str, ...]) -> tuple[bool, ...]:
    """Value membership of the node named by `lineage`; never empty."""
    level = NODE_LEVELS[len(lineage) - 1]
    rng = stable_rng(seed, "trait", trait.name, *lineage)
    n = len(trait.values)
    if len(lineage) == 1:
        # Classes start with one to three values (broad but not everything).
        k = int(rng.integers(1, min(3, n) + 1))
        on = np.zeros(n, bool)
        on[rng.choice(n, size=k, replace=False)] = True
    else:
        on = np.array(_node_set(seed, trait, lineage[:-1]))
        # Switch-off twice as likely as switch-on keeps sets from filling up downwards.
        u = rng.random(n)
        on = np.where(on, u >= FLIP[level], u < FLIP[level] / 2)
    if not on.any():
        on[int(rng.integers(n))] = True
    return tuple(bool(b) for b in on)
