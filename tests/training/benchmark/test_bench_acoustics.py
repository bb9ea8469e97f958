"""Call parameters follow the taxonomy and respond to sound-linked traits."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pytest
from scipy.signal import welch

from animalclap_edge.contracts.traits import TraitSchema
from training.benchmark.acoustics import FREQ_BOUNDS, species_params
from training.benchmark.synth import render_song
from training.benchmark.taxonomy import select_species
from training.benchmark.traits import draw_traits

SR = 48_000


@pytest.fixture(scope="module")
def population():
    cat = select_species({"Aves": 300, "Amphibia": 50, "Insecta": 50, "Mammalia": 50}, seed=0)
    traits = draw_traits(cat, TraitSchema.default(), seed=0)
    params = {s.id: species_params(s, 0, traits[s.id]) for s in cat}
    return cat, traits, params


def _mean_distances(species, vectors: np.ndarray, metric: str) -> dict[str, float]:
    """Mean pairwise distance by relation: same genus, same family (other genus), same
    order (other family), other order (same class), other class. vectors: (N, D)."""
    diff = vectors[:, None, :] - vectors[None, :, :]
    d = np.sqrt((diff**2).sum(-1)) if metric == "l2" else np.abs(diff).mean(-1)
    same = {
        level: np.equal.outer(*(2 * [np.array([s.taxon(level) for s in species])]))
        for level in ("class", "order", "family", "genus")
    }
    upper = np.triu(np.ones_like(d, bool), k=1)
    masks = {
        "genus": same["genus"],
        "family": same["family"] & ~same["genus"],
        "order": same["order"] & ~same["family"],
        "other_order": same["class"] & ~same["order"],
        "class": ~same["class"],
    }
    return {k: float(d[m & upper].mean()) for k, m in masks.items() if (m & upper).any()}


def test_parameters_are_deterministic_and_seeded(population):
    cat, traits, params = population
    sp = cat[0]
    assert species_params(sp, 0, traits[sp.id]) == params[sp.id]
    assert species_params(sp, 1, traits[sp.id]) != params[sp.id]


def test_parameter_distance_follows_taxonomy(population):
    cat, _, params = population
    vectors = np.stack([params[s.id].as_vector() for s in cat])
    d = _mean_distances(cat, vectors, "l2")
    assert d["genus"] < d["family"] < d["order"] < d["other_order"] < d["class"], d


def _log_spectrum(params, seed=7) -> np.ndarray:
    x = render_song(params, np.random.default_rng(seed), 3.0, SR)
    f, p = welch(x, fs=SR, nperseg=2048)
    edges = np.searchsorted(f, np.geomspace(150, 16_000, 41))
    c = np.concatenate([[0.0], np.cumsum(p)])
    bands = (c[edges[1:]] - c[edges[:-1]]) / np.maximum(edges[1:] - edges[:-1], 1)
    v = 10 * np.log10(bands + 1e-12)
    return np.maximum(v - v.max(), -60.0)  # dB re peak band, floor -60


def test_rendered_spectra_follow_taxonomy():
    cat = select_species({"Aves": 30, "Amphibia": 15, "Insecta": 15, "Mammalia": 15}, seed=2)
    traits = draw_traits(cat, TraitSchema.default(), seed=2)
    spectra = np.stack([_log_spectrum(species_params(s, 2, traits[s.id])) for s in cat])
    d = _mean_distances(cat, spectra, "l1")
    assert d["genus"] < d["family"] < d["other_order"] < d["class"], d


def test_frequencies_stay_in_the_audible_band(population):
    _, _, params = population
    for p in params.values():
        lo, hi = FREQ_BOUNDS[p.class_]
        assert lo <= p.freq_hz <= hi
        assert p.freq_hz * 2 ** (p.fm_depth_oct / 2) <= 12_000 + 1e-6
        assert p.n_harmonics * p.freq_hz <= 16_000 or p.n_harmonics == 1
        assert 100 <= p.dominant_hz <= 12_000 or p.class_ in ("Amphibia", "Mammalia")
        assert p.call_duration_s <= 4.0 + 1e-9
        assert 0 < p.call_rate_hz <= 1 / (p.call_duration_s + 0.15) + 1e-9


def test_nocturnal_species_call_lower_than_diurnal_ones(population):
    cat, traits, params = population
    by_class = defaultdict(list)
    for s in cat:
        by_class[s.class_].append(np.log(params[s.id].dominant_hz))
    centre = {k: np.mean(v) for k, v in by_class.items()}
    groups = defaultdict(list)
    for s in cat:
        groups[traits[s.id]["activity_pattern"][0]].append(
            np.log(params[s.id].dominant_hz) - centre[s.class_]
        )
    assert len(groups["nocturnal"]) >= 30 and len(groups["diurnal"]) >= 30
    assert np.mean(groups["nocturnal"]) < np.mean(groups["diurnal"]) - 0.05


def test_traits_change_the_rendered_sound(population):
    """Counterfactual: the same species made nocturnal / forest-dwelling sounds different."""
    cat, traits, _ = population
    for s in list(cat)[::40]:
        base = dict(traits[s.id], activity_pattern=["diurnal"], habitat=["grassland"])
        day = species_params(s, 0, base)
        night = species_params(s, 0, dict(base, activity_pattern=["nocturnal"]))
        forest = species_params(s, 0, dict(base, habitat=["forest"]))
        assert night.freq_hz < day.freq_hz and night.call_rate_hz <= day.call_rate_hz
        assert forest.note_dur_s > day.note_dur_s and forest.freq_hz < day.freq_hz
        # ...and the difference survives rendering: spectral centroid drops at night.
        same_shape = dataclasses.replace(night, fm_shape=day.fm_shape)
        assert _centroid(same_shape) < _centroid(day)


def _centroid(params) -> float:
    x = render_song(params, np.random.default_rng(0), 4.0, SR)
    f, p = welch(x, fs=SR, nperseg=2048)
    return float(np.sum(f * p) / np.sum(p))
