"""Species probabilities, thresholds, filters, back-off and traits on a hand-made bundle."""

import numpy as np
import pytest

from animalclap_edge.bundle import Bundle
from animalclap_edge.contracts.bundle import Calibration
from animalclap_edge.contracts.frontend import CLAP_UNFUSED
from animalclap_edge.contracts.traits import TraitSchema
from animalclap_edge.scoring import Scorer, ScoringError, ScoringSettings


def _bundle(catalogue, scale=20.0, with_traits=False):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((len(catalogue), 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    schema = w = b = None
    if with_traits:
        schema = TraitSchema.from_dict(
            {
                "traits": [
                    {"name": "activity", "kind": "categorical", "values": ["day", "night"]},
                    {
                        "name": "habitat",
                        "kind": "multilabel",
                        "values": ["forest", "wetland", "urban"],
                    },
                ]
            }
        )
        w = np.zeros((16, 5), np.float32)
        b = np.array([0, 3, 4, -4, 2], np.float32)  # night; forest + urban
    return Bundle(
        root=None,
        manifest=None,
        frontend=CLAP_UNFUSED,
        catalogue=catalogue,
        text_embeddings=emb,
        calibration=Calibration(logit_scale=scale, default_threshold=0.5, backoff_threshold=0.6),
        trait_schema=schema,
        trait_weight=w,
        trait_bias=b,
    )


def test_clear_match_is_detected_with_calibrated_probability(tiny_catalogue):
    b = _bundle(tiny_catalogue, scale=50)
    s = Scorer(b, ScoringSettings())
    (res,) = s.score(b.text_embeddings[2:3])
    assert [lab.taxon for lab in res.labels] == [tiny_catalogue[2].id]
    assert res.labels[0].level == "species" and res.labels[0].probability > 0.9
    assert res.labels[0].score == pytest.approx(1.0, abs=1e-5)


def test_ambiguous_within_genus_backs_off_to_genus(tiny_catalogue):
    b = _bundle(tiny_catalogue, scale=30)
    # Halfway between the two Turdus species: neither passes 0.5, their genus does.
    mid = b.text_embeddings[0] + b.text_embeddings[1]
    mid /= np.linalg.norm(mid)
    (res,) = Scorer(b, ScoringSettings(threshold=0.7)).score(mid[None])
    assert len(res.labels) == 1
    lab = res.labels[0]
    assert (lab.level, lab.taxon, lab.common_name) == ("genus", "Turdus", "unknown Turdus")
    assert lab.probability > 0.6
    (res,) = Scorer(b, ScoringSettings(threshold=0.7, backoff=False)).score(mid[None])
    assert res.labels == []


def test_a_level_every_species_shares_is_no_back_off(tiny_catalogue):
    """With one class left (a birds-only catalogue), its mass is 1 for any sound: a
    noise window came out "unknown Aves" at p=1.00. Genus and family still back off."""
    birds = tiny_catalogue.subset([sp.id for sp in tiny_catalogue if sp.class_ == "Aves"])
    assert len({sp.order for sp in birds}) > 1
    b = _bundle(birds, scale=30)
    noise = np.random.default_rng(5).standard_normal((40, 16)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    scorer = Scorer(b, ScoringSettings(threshold=0.99))
    assert "class" not in scorer.groups and "order" in scorer.groups
    levels = {lab.level for res in scorer.score(noise) for lab in res.labels}
    assert "class" not in levels
    mid = b.text_embeddings[0] + b.text_embeddings[1]  # two Turdus: their genus
    (res,) = scorer.score((mid / np.linalg.norm(mid))[None])
    assert [(lab.level, lab.taxon) for lab in res.labels] == [("genus", "Turdus")]


def test_a_taxon_backs_off_on_its_mass_beyond_its_share_of_the_species(tiny_catalogue):
    """Four of the six species are birds: a sound the model knows nothing of gives Aves
    two thirds of the mass, over the back-off threshold (0.6), and came out "unknown
    Aves". With 18 birds among 22 species, 203 of 207 windows of mammals, whales and
    insects were logged so. A sound between two birds of two orders still is."""
    b = _bundle(tiny_catalogue, scale=2)  # a weak model: near-flat probabilities
    noise = np.random.default_rng(5).standard_normal((40, 16)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    scorer = Scorer(b, ScoringSettings(threshold=0.99))
    assert not [lab for res in scorer.score(noise) for lab in res.labels]
    aves = scorer.groups["class"][0].index("Aves")
    assert scorer.groups["class"][2][aves] == pytest.approx(4 / 6)
    sharp = Scorer(_bundle(tiny_catalogue, scale=30), ScoringSettings(threshold=0.99))
    robin, owl = sharp.bundle.text_embeddings[2], sharp.bundle.text_embeddings[3]
    (res,) = sharp.score(((robin + owl) / np.linalg.norm(robin + owl))[None])
    assert [(lab.level, lab.taxon) for lab in res.labels] == [("class", "Aves")]
    assert res.labels[0].probability > 0.95  # reported as its mass


def test_report_only_logs_some_species_while_every_species_is_scored(tiny_catalogue):
    """`include` makes its species the only candidates, so a frog's call scored among
    two thrushes is logged as one of them. `report_only` scores every species and logs
    only its own, and a back-off taxon only when it holds one of them."""
    b = _bundle(tiny_catalogue, scale=50)
    thrushes = ("Turdus merula", "sonthr1")
    frog = b.text_embeddings[4:5]
    (forced,) = Scorer(b, ScoringSettings(include=thrushes, threshold=0.5)).score(frog)
    assert [lab.taxon for lab in forced.labels] in (["eurbla"], ["sonthr1"])
    watch = Scorer(b, ScoringSettings(report_only=thrushes, threshold=0.7))
    (res,) = watch.score(frog)
    assert res.labels == [] and res.best.taxon == tiny_catalogue[4].id  # scored, not logged
    (res,) = watch.score(b.text_embeddings[0:1])
    assert [lab.taxon for lab in res.labels] == ["eurbla"]
    mid = b.text_embeddings[0] + b.text_embeddings[1]  # between the thrushes: their genus
    (res,) = watch.score((mid / np.linalg.norm(mid))[None])
    assert [(lab.level, lab.taxon) for lab in res.labels] == [("genus", "Turdus")]
    frogs = b.text_embeddings[4] + b.text_embeddings[5]  # two frogs: not watched
    (res,) = watch.score((frogs / np.linalg.norm(frogs))[None])
    assert res.labels == []
    with pytest.raises(ScoringError, match="report_only: eurbla is not a candidate after"):
        Scorer(b, ScoringSettings(report_only=thrushes, exclude=("eurbla",)))


def test_per_species_threshold_include_exclude_regions(tiny_catalogue):
    b = _bundle(tiny_catalogue, scale=50)
    x = b.text_embeddings[2:3]
    sid = tiny_catalogue[2].id
    # Between robin (2) and owl (3): each near p=0.5, so a per-species threshold decides.
    mid = b.text_embeddings[2] + b.text_embeddings[3]
    mid = (mid / np.linalg.norm(mid))[None]
    p_robin = Scorer(b, ScoringSettings(threshold=0.0)).score(mid)[0].labels
    p_robin = next(lab.probability for lab in p_robin if lab.taxon == sid)
    assert 0.2 < p_robin < 0.8
    low = Scorer(
        b, ScoringSettings(threshold=0.99, species_thresholds={sid: p_robin - 0.01}, backoff=False)
    )
    high = Scorer(
        b, ScoringSettings(threshold=0.0, species_thresholds={sid: p_robin + 0.01}, backoff=False)
    )
    assert [lab.taxon for lab in low.score(mid)[0].labels] == [sid]
    assert sid not in [lab.taxon for lab in high.score(mid)[0].labels]
    s = Scorer(b, ScoringSettings(exclude=(sid,)))
    assert sid not in [lab.taxon for lab in s.score(x)[0].labels]
    s = Scorer(b, ScoringSettings(include=("Turdus merula", "tawowl1")))
    assert [tiny_catalogue[i].id for i in s.active] == ["eurbla", "tawowl1"]
    s = Scorer(b, ScoringSettings(regions=("EU",)))
    assert "amebul" not in [tiny_catalogue[i].id for i in s.active]
    # one species left: its probability would be 1 for every window, every sound logged
    with pytest.raises(ScoringError, match=r"only one species .*amebul.* p=1 for every window"):
        Scorer(b, ScoringSettings(regions=("NA",)))
    with pytest.raises(ScoringError, match="neither a species id nor a scientific name"):
        Scorer(b, ScoringSettings(include=("Turdus nonexistens",)))
    with pytest.raises(ScoringError, match="no species left"):
        Scorer(b, ScoringSettings(regions=("AU",)))
    with pytest.raises(ScoringError, match="unknown species id"):
        Scorer(b, ScoringSettings(species_thresholds={"zzz": 0.1}))


def test_traits_from_heads(tiny_catalogue):
    b = _bundle(tiny_catalogue, with_traits=True)
    (res,) = Scorer(b, ScoringSettings()).score(b.text_embeddings[:1])
    assert res.traits["activity"]["value"] == "night" and res.traits["activity"]["p"] > 0.9
    assert res.traits["habitat"]["values"] == ["forest", "urban"]


def test_scoring_is_deterministic_and_batch_independent(tiny_catalogue):
    b = _bundle(tiny_catalogue)
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s = Scorer(b, ScoringSettings(threshold=0.0))
    batch = s.score(x)
    single = [s.score(x[i : i + 1])[0] for i in range(4)]
    # Same input, same output; batched BLAS may differ in the last bits only.
    again = s.score(x)
    assert [r.labels for r in batch] == [r.labels for r in again]
    for rb, rs in zip(batch, single, strict=True):
        assert [lab.taxon for lab in rb.labels] == [lab.taxon for lab in rs.labels]
        assert np.allclose(
            [lab.probability for lab in rb.labels],
            [lab.probability for lab in rs.labels],
            atol=1e-5,
        )


def test_top_k_keeps_the_most_probable_labels_best_first(tiny_catalogue):
    b = _bundle(tiny_catalogue, scale=10)
    # a mix of three species, weighted 3:2:1, so their probabilities are ordered
    mix = 3 * b.text_embeddings[2] + 2 * b.text_embeddings[0] + b.text_embeddings[3]
    mix = (mix / np.linalg.norm(mix))[None]
    full = Scorer(b, ScoringSettings(threshold=0.0, top_k=len(tiny_catalogue), backoff=False))
    (every,) = full.score(mix)
    ranked = sorted(every.labels, key=lambda lab: -lab.probability)
    for k in (1, 2):
        (res,) = Scorer(b, ScoringSettings(threshold=0.0, top_k=k, backoff=False)).score(mix)
        assert [lab.taxon for lab in res.labels] == [lab.taxon for lab in ranked[:k]]
    assert ranked[0].taxon == tiny_catalogue[2].id
    probs = [lab.probability for lab in every.labels]
    assert probs == sorted(probs, reverse=True)  # best first, as ranks are written


def _bundle_with_probabilities(catalogue, p, backoff_threshold):
    """One-hot text embeddings and a probe whose softmax over them is exactly `p`."""
    x = np.log(np.asarray(p, np.float64))
    x -= x.min() - 1.0  # all positive: the cosine is x / |x|, the logits x
    scale = float(np.linalg.norm(x))
    b = Bundle(
        root=None,
        manifest=None,
        frontend=CLAP_UNFUSED,
        catalogue=catalogue,
        text_embeddings=np.eye(len(catalogue), dtype=np.float32),
        calibration=Calibration(
            logit_scale=scale, default_threshold=0.99, backoff_threshold=backoff_threshold
        ),
        trait_schema=None,
        trait_weight=None,
        trait_bias=None,
    )
    return b, (x / scale).astype(np.float32)[None]


def test_back_off_tests_the_taxon_beyond_its_share_not_the_one_with_most_mass(tiny_catalogue):
    """Turdus holds 2 of 6 species and 0.30 of the mass: the most of any genus, yet
    less than its share. Rana (1 of 6) holds 0.29, well beyond its share: at a back-off
    threshold of 0.1 the sound is an "unknown Rana". Testing only the genus with the
    most mass skipped Rana and logged its family instead."""
    p = [0.15, 0.15, 0.10, 0.10, 0.29, 0.21]
    b, probe = _bundle_with_probabilities(tiny_catalogue, p, backoff_threshold=0.1)
    scorer = Scorer(b, ScoringSettings())
    (res,) = scorer.score(probe)
    assert res.best.probability == pytest.approx(0.29, abs=1e-4)
    assert [(lab.level, lab.taxon) for lab in res.labels] == [("genus", "Rana")]
    assert res.labels[0].probability == pytest.approx(0.29, abs=1e-4)


def test_report_only_does_not_back_off_a_species_that_passed(tiny_catalogue):
    """A blackbird the model is sure of, with only the song thrush watched, is not
    logged: it is not "unknown Turdus" because the thrush shares its genus."""
    b = _bundle(tiny_catalogue, scale=50)
    watch = Scorer(b, ScoringSettings(report_only=("sonthr1",), threshold=0.7))
    (res,) = watch.score(b.text_embeddings[0:1])
    assert res.best.taxon == "eurbla" and res.best.probability > 0.9
    assert res.labels == []
    mid = b.text_embeddings[0] + b.text_embeddings[1]  # unsure between the two: their genus
    (res,) = watch.score((mid / np.linalg.norm(mid))[None])
    assert [(lab.level, lab.taxon) for lab in res.labels] == [("genus", "Turdus")]
