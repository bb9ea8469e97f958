"""Trait probes: fitting the heads and scoring them against baselines (no model)."""

import numpy as np
import pytest
import torch

from animalclap_edge.contracts.traits import Trait, TraitSchema
from training.probe import fit_trait_heads, score_trait_heads

SCHEMA = TraitSchema(
    "test",
    (
        Trait("diet", "categorical", ("insects", "seeds", "fish")),
        Trait("habitat", "multilabel", ("forest", "wetland", "grassland", "urban")),
    ),
)


def _data(n=80, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    targets = np.zeros((n, SCHEMA.n_outputs), np.float32)
    targets[np.arange(n), rng.integers(0, 3, n)] = 1.0  # diet: one of three
    targets[:, 3:] = rng.random((n, 4)) < 0.4  # habitat: any of four
    targets[:, 3] = 1.0 - targets[:, 4]  # every label has positives and negatives
    known = np.ones((n, len(SCHEMA.traits)), bool)
    return emb, targets, known


def test_two_fits_with_the_same_seed_give_the_same_heads_and_figures():
    emb, tgt, known = _data()
    # the global RNG in different states before each fit: the head's init used to
    # come from it, so the figures changed from run to run
    torch.manual_seed(1)
    w1, b1 = fit_trait_heads(emb, tgt, known, SCHEMA, seed=3)
    torch.manual_seed(2)
    w2, b2 = fit_trait_heads(emb, tgt, known, SCHEMA, seed=3)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(b1, b2)
    s1 = score_trait_heads(emb, tgt, known, SCHEMA, w1, b1, tgt, known)
    s2 = score_trait_heads(emb, tgt, known, SCHEMA, w2, b2, tgt, known)
    assert s1 == s2
    w3, _ = fit_trait_heads(emb, tgt, known, SCHEMA, seed=4)
    assert not np.array_equal(w1, w3)  # the seed does reach the init


def test_fitting_leaves_the_callers_global_rng_alone():
    emb, tgt, known = _data()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    fit_trait_heads(emb, tgt, known, SCHEMA, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_uninformative_scores_do_not_beat_the_multilabel_baseline_systematically():
    """Scores that vary by species but carry nothing about the trait beat the old
    label-frequency prior (AP = positive rate) in almost every draw; against the
    permutation baseline they win about as often as they lose."""
    schema = TraitSchema("ml", (Trait("habitat", "multilabel", tuple("abcdef")),))
    rng = np.random.default_rng(1)
    beats, beats_prior = [], []
    for draw in range(60):
        per_species = rng.integers(4, 12, 24)  # recordings per species, uneven
        species = np.repeat(np.arange(24), per_species)
        rows = (rng.random((24, 6)) < 0.3).astype(np.float32)
        targets, known = rows[species], np.ones((len(species), 1), bool)
        # one logit per species and value, a little noise per recording: no trait in it
        emb = np.repeat(rng.standard_normal((24, 6)), per_species, axis=0)
        emb += 0.1 * rng.standard_normal(emb.shape)
        s = score_trait_heads(
            emb.astype(np.float32),
            targets,
            known,
            schema,
            np.eye(6, dtype=np.float32),
            np.zeros(6, np.float32),
            targets,
            known,
            groups=[f"sp{i}" for i in species],
            seed=draw,
        )["habitat"]
        beats.append(s["beats_baseline"])
        beats_prior.append(s["mAP"] > s["prior_mAP"])
    assert np.mean(beats_prior) > 0.75  # why the prior had to go
    assert 0.3 <= np.mean(beats) <= 0.7


def test_tied_scores_reach_the_baseline_and_label_scores_beat_it():
    emb, tgt, known = _data(n=200)
    species = [f"sp{i // 4}" for i in range(200)]
    n_out = SCHEMA.n_outputs
    b = np.zeros(n_out, np.float32)
    flat = score_trait_heads(emb, tgt, known, SCHEMA, np.zeros((16, n_out)), b, tgt, known)
    # every score tied: AP = positive rate whatever the labels, so no better than chance
    assert flat["habitat"]["mAP"] == pytest.approx(flat["habitat"]["baseline_mAP"])
    assert not flat["habitat"]["beats_baseline"]
    tgt[:, 3:] = np.repeat(tgt[::4, 3:], 4, axis=0)  # species-level labels, as traits are
    # logits that are the labels themselves: +4 on a positive, -4 on a negative
    w, b = 8 * np.eye(n_out, dtype=np.float32), np.full(n_out, -4.0, np.float32)
    exact = score_trait_heads(tgt, tgt, known, SCHEMA, w, b, tgt, known, species)
    assert exact["habitat"]["mAP"] == 1.0 and exact["habitat"]["beats_baseline"]
    assert exact["habitat"]["baseline_mAP"] < 0.8


def test_groups_must_match_the_recordings_and_their_labels():
    emb, tgt, known = _data(n=20)
    w, b = np.zeros((16, SCHEMA.n_outputs)), np.zeros(SCHEMA.n_outputs)
    with pytest.raises(ValueError, match="3 groups for 20 recordings"):
        score_trait_heads(emb, tgt, known, SCHEMA, w, b, tgt, known, groups=["a", "b", "c"])
    with pytest.raises(ValueError, match="labels differ within a group"):
        score_trait_heads(emb, tgt, known, SCHEMA, w, b, tgt, known, groups=["one"] * 20)


def test_a_categorical_probe_is_held_to_chance_where_the_majority_is_below_it():
    """Unseen species whose classes differ from the training ones: "always the training
    majority" scored 0.063 on sociality against 1/K 0.25 on small, and a probe beat
    that 'baseline' while guessing no better than chance (found by a researcher)."""
    schema = TraitSchema("c", (Trait("diet", "categorical", ("a", "b", "c", "d")),))
    train = np.zeros((40, 4), np.float32)
    train[:30, 0] = train[30:, 1] = 1.0  # training: mostly "a", some "b"
    test = np.zeros((40, 4), np.float32)
    test[:4, 0] = test[4:22, 2] = test[22:, 3] = 1.0  # unseen: "a" rare, "c" and "d"
    known = np.ones((40, 1), bool)
    w = np.eye(4, dtype=np.float32)
    guess_c = np.tile(np.float32([0, 0, 1, 0]), (40, 1))  # always "c": 18/40 right
    s = score_trait_heads(guess_c, test, known, schema, w, np.zeros(4), train, known)["diet"]
    assert s["baseline_accuracy"] == pytest.approx(4 / 40)  # the majority, "a"
    assert s["chance_accuracy"] == pytest.approx(0.75 * 4 / 40)  # 0.75 "a", 0.25 "b"
    assert s["uniform_accuracy"] == 0.25
    assert s["accuracy"] == pytest.approx(18 / 40)
    assert s["beats_baseline"] and s["beats_chance"]
    guess_b = np.tile(np.float32([0, 1, 0, 0]), (40, 1))  # "b", which no unseen species is
    s = score_trait_heads(guess_b, test, known, schema, w, np.zeros(4), train, known)["diet"]
    assert s["accuracy"] == 0.0 and not s["beats_chance"]
    some = np.tile(np.float32([0, 1, 0, 0]), (40, 1))  # "b" (wrong) but for:
    some[:4] = np.float32([1, 0, 0, 0])  # the 4 unseen "a", right
    some[4:9] = np.float32([0, 0, 1, 0])  # 5 of the 18 "c", right: 9/40 = 0.225
    s = score_trait_heads(some, test, known, schema, w, np.zeros(4), train, known)["diet"]
    # above the majority (0.1) but below 1/K (0.25): a baseline pass, no evidence
    assert s["accuracy"] == pytest.approx(0.225)
    assert s["beats_baseline"] and not s["beats_chance"]


def test_trait_table_rows_of_no_species_and_species_without_rows_are_said():
    """A typo in traits.csv ('yetsan_1') left an unseen species without traits, and
    every trait's n fell from 17 to 12, with no word; a column left out was not said."""
    from types import SimpleNamespace

    from training.probe import trait_table_notes

    items = [SimpleNamespace(species_id=s) for s in ("yetsan1", "eurbla", "sonthr1")]
    data = SimpleNamespace(
        traits={"yetsan_1": {"diet": ["a"]}, "eurbla": {"diet": ["b"]}, "extra9": {"diet": []}},
        catalogue=SimpleNamespace(ids=["yetsan1", "eurbla", "sonthr1"]),
        items=items,
        schema=SCHEMA,
    )
    split = SimpleNamespace(train=[1], val=[], test=[0, 2])
    notes = trait_table_notes(data, split)
    assert notes == [
        "traits.csv: 2 row(s) name no catalogue species, so they are not used: 'extra9', "
        "'yetsan_1' (did you mean 'yetsan1'?)",
        "traits.csv: 2 species of the split's recordings have no row, so their recordings "
        "are left out of every trait: sonthr1, yetsan1",
        "traits.csv: no column for 1 trait(s) of schema test: habitat; they are not probed",
    ]
