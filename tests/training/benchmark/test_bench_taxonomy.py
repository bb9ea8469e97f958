"""Benchmark species come from real taxonomies, sampled as whole genera."""

from __future__ import annotations

import csv
from collections import Counter
from importlib import resources

import pytest

from training.benchmark.taxonomy import nonbird_catalogue, select_species

FOUR = {"Aves": 8, "Amphibia": 6, "Insecta": 6, "Mammalia": 6}


def _ebird_rows() -> dict[str, dict[str, str]]:
    ref = resources.files("birdnames").joinpath("data/processed/ebird_2024_taxonomy.csv")
    with ref.open("r", encoding="utf-8", newline="") as f:
        return {r["ebird_ebird_code"]: r for r in csv.DictReader(f)}


def test_selection_is_deterministic_and_seed_dependent():
    a, b = select_species(FOUR, seed=3), select_species(FOUR, seed=3)
    assert [s.to_row() for s in a] == [s.to_row() for s in b]
    assert a.ids != select_species(FOUR, seed=4).ids
    assert Counter(s.class_ for s in a) == Counter(FOUR)


def test_birds_are_real_ebird_species():
    ebird = _ebird_rows()
    birds = [s for s in select_species({"Aves": 60}, seed=0)]
    assert len(birds) == 60
    for sp in birds:
        row = ebird[sp.id]  # the id is an eBird species code
        assert row["scientific_name"] == sp.scientific_name
        assert (row["ebird_order"], row["ebird_family"], row["genus"]) == (
            sp.order,
            sp.family,
            sp.genus,
        )


def test_curated_nonbirds_are_consistent():
    cat = nonbird_catalogue()
    by_class = Counter(s.class_ for s in cat)
    assert set(by_class) == {"Amphibia", "Insecta", "Mammalia"}
    assert min(by_class.values()) >= 40
    for sp in cat:
        assert sp.scientific_name.split()[0] == sp.genus, sp.id
        assert len(sp.scientific_name.split()) == 2, sp.id
        assert sp.id == sp.scientific_name.lower().replace(" ", "_")
    for class_ in by_class:
        genera = Counter(s.genus for s in cat if s.class_ == class_)
        assert sum(1 for n in genera.values() if n >= 2) >= 8, class_
    assert Counter(s.genus for s in cat)["Hyla"] >= 2
    assert cat.get("gryllus_campestris").order == "Orthoptera"


def test_whole_genera_families_and_orders_are_shared():
    cat = select_species({"Aves": 60, "Amphibia": 20, "Insecta": 20, "Mammalia": 20}, seed=1)
    genera = Counter(s.genus for s in cat)
    assert all(n >= 2 for n in genera.values())
    for class_ in FOUR:
        members = [s for s in cat if s.class_ == class_]
        fam_genera = Counter(f for f, _ in {(s.family, s.genus) for s in members})
        assert max(fam_genera.values()) >= 2, f"{class_}: no family with two genera"


def test_selection_refuses_impossible_requests():
    with pytest.raises(ValueError, match="no species"):
        select_species({"Reptilia": 3}, seed=0)
    with pytest.raises(ValueError, match="only"):
        select_species({"Insecta": 10_000}, seed=0)
