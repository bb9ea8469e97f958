"""Generated traits: complete, schema-driven, inherited, yet variable inside genera."""

from __future__ import annotations

import itertools

import numpy as np

from animalclap_edge.contracts.traits import Trait, TraitSchema
from training.benchmark.taxonomy import select_species
from training.benchmark.traits import LABILE_TRAITS, draw_traits

SIZES = {"Aves": 40, "Amphibia": 20, "Insecta": 20, "Mammalia": 20}


def test_every_species_has_every_trait_from_the_schema():
    schema = TraitSchema.default()
    cat = select_species(SIZES, seed=0)
    table = draw_traits(cat, schema, seed=0)
    assert list(table) == cat.ids
    _, known = schema.encode(table, cat.ids)  # validates values against the schema
    assert known.all()
    for sid in cat.ids:
        for t in schema.traits:
            vals = table[sid][t.name]
            assert vals and len(set(vals)) == len(vals)
            assert len(vals) == 1 or t.kind == "multilabel"
            assert vals == [v for v in t.values if v in vals]  # schema order
    assert draw_traits(cat, schema, seed=0) == table
    assert draw_traits(cat, schema, seed=1) != table


def test_traits_follow_descent_but_vary_inside_genera():
    schema = TraitSchema.default()
    cat = select_species(SIZES, seed=0)
    table = draw_traits(cat, schema, seed=0)
    same, other = [], []
    for a, b in itertools.combinations(cat, 2):
        agree = np.mean([table[a.id][t.name] == table[b.id][t.name] for t in schema.traits])
        (same if a.genus == b.genus else other).append(agree)
    assert np.mean(same) > np.mean(other) + 0.2
    assert np.mean(same) < 1.0
    for trait in LABILE_TRAITS:
        varies = any(
            len({tuple(table[s.id][trait]) for s in cat if s.genus == g}) > 1
            for g in cat.taxa("genus")
        )
        assert varies, f"{trait} never varies inside a genus"


def test_any_schema_works():
    schema = TraitSchema(
        "custom",
        (
            Trait("colour", "categorical", ("red", "green", "blue")),
            Trait("sounds", "multilabel", ("song", "call", "drum", "hiss")),
        ),
    )
    cat = select_species({"Aves": 6, "Mammalia": 4}, seed=0)
    table = draw_traits(cat, schema, seed=0)
    assert all(set(row) == {"colour", "sounds"} for row in table.values())
