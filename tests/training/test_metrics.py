"""Evaluation metrics: hand-computed cases, sklearn cross-checks, tie pessimism, maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from animalclap_edge.contracts.catalogue import Catalogue, Species
from training.metrics import (
    average_precision,
    categorical_scores,
    embedding_map,
    intervals_disjoint,
    majority_categorical,
    mean_ci,
    multilabel_scores,
    permutation_multilabel,
    prior_multilabel,
    ranks,
    taxonomic_error_profile,
    topk_accuracy,
    tsne_2d,
)

# --------------------------------------------------------------------------- ranks / top-k


def test_ranks_hand_computed_and_ties_count_against_the_true_label():
    sims = np.array(
        [
            [0.9, 0.1, 0.5],  # true 0 is the best -> 0
            [0.9, 0.1, 0.5],  # true 1 is the worst -> 2
            [0.5, 0.2, 0.5],  # true 2 tied with 0 -> pessimistic 1
            [0.3, 0.3, 0.3],  # all tied -> S - 1 = 2
        ]
    )
    assert ranks(sims, np.array([0, 1, 2, 0])).tolist() == [0, 2, 1, 2]


def test_constant_embeddings_never_score_perfectly():
    # Collapsed model: every score equal. An argsort-based top-k would rank
    # label 0 first and report 100 % for these all-zero labels.
    audio = np.ones((8, 4)) / 2
    text = np.ones((10, 4)) / 2
    acc = topk_accuracy(audio, text, np.zeros(8, dtype=int), ks=(1, 5))
    assert acc == {"top1": 0.0, "top5": 0.0}


def test_topk_accuracy_hand_computed():
    text = np.eye(3)  # (S=3, D=3)
    audio = np.array([[1.0, 0.2, 0.0], [0.0, 0.3, 1.0], [0.5, 0.1, 0.9], [0.0, 1.0, 0.0]])
    labels = np.array([0, 1, 0, 1])  # ranks: 0, 1, 1, 0
    acc = topk_accuracy(audio, text, labels, ks=(1, 2, 3))
    assert acc == {"top1": 0.5, "top2": 1.0, "top3": 1.0}


def test_topk_accuracy_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    audio, text = rng.standard_normal((50, 8)), rng.standard_normal((20, 8))
    labels = rng.integers(0, 20, 50)
    sims = audio @ text.T
    expected = {
        f"top{k}": np.mean([labels[i] in np.argsort(-sims[i])[:k] for i in range(50)])
        for k in (1, 5)
    }
    assert topk_accuracy(audio, text, labels) == pytest.approx(expected)


@pytest.mark.parametrize(
    "sims, labels, match",
    [
        (np.zeros((3, 4)), np.array([0, 1]), "2 labels for 3 rows"),
        (np.zeros((2, 4)), np.array([0, 4]), r"\[0, 4\)"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), np.array([0, 1]), "NaN"),
        (np.zeros((2, 4)), np.array([0.0, 1.0]), "integer"),
    ],
)
def test_ranks_refuses_bad_inputs(sims, labels, match):
    with pytest.raises(ValueError, match=match):
        ranks(sims, labels)


# --------------------------------------------------------------------------- taxonomy


def _sp(id_, binomial, class_, order, family):
    return Species(id_, binomial, id_, class_, order, family, binomial.split()[0])


@pytest.fixture
def catalogue():
    return Catalogue(
        [
            _sp("A", "Turdus merula", "Aves", "Passeriformes", "Turdidae"),
            _sp("B", "Turdus philomelos", "Aves", "Passeriformes", "Turdidae"),
            _sp("C", "Parus major", "Aves", "Passeriformes", "Paridae"),
            _sp("D", "Strix aluco", "Aves", "Strigiformes", "Strigidae"),
            _sp("E", "Myotis myotis", "Mammalia", "Chiroptera", "Vespertilionidae"),
            # Not a candidate: must not enter the chance level.
            _sp("F", "Turdus viscivorus", "Aves", "Passeriformes", "Turdidae"),
            # Same genus name as A but another family: not "same genus".
            _sp("G", "Turdus fakeus", "Aves", "Passeriformes", "Paridae"),
        ]
    )


def test_taxonomic_error_profile_hand_computed(catalogue):
    true = ["A", "A", "A", "D", "E", "C"]
    pred = ["A", "B", "C", "A", "D", "C"]  # wrong: genus, order, class, none
    prof = taxonomic_error_profile(pred, true, catalogue, ["A", "B", "C", "D", "E"])
    assert prof["n_wrong"] == 4
    assert list(prof["levels"]) == ["genus", "family", "order", "class"]
    share = {k: v["share"] for k, v in prof["levels"].items()}
    chance = {k: v["chance"] for k, v in prof["levels"].items()}
    assert share == pytest.approx({"genus": 1 / 4, "family": 1 / 4, "order": 2 / 4, "class": 3 / 4})
    # Others of A (B, C, D, E): genus 1, family 1, order 2, class 3 of 4.
    # Others of D: class 3 of 4 only. Others of E: none. Wrong trues: A, A, D, E.
    assert chance == pytest.approx(
        {
            "genus": (1 / 4 + 1 / 4) / 4,
            "family": (1 / 4 + 1 / 4) / 4,
            "order": (2 / 4 + 2 / 4) / 4,
            "class": (3 / 4 + 3 / 4 + 3 / 4) / 4,
        }
    )


def test_taxonomic_levels_are_cumulative_not_name_matches(catalogue):
    # G has A's genus name but another family: not a genus-level near miss.
    prof = taxonomic_error_profile(["G"], ["A"], catalogue, ["A", "B", "G"])
    share = {k: v["share"] for k, v in prof["levels"].items()}
    assert share == {"genus": 0.0, "family": 0.0, "order": 1.0, "class": 1.0}
    # Chance for A among {B, G}: only B is same genus/family.
    assert prof["levels"]["genus"]["chance"] == 0.5


def test_taxonomic_error_profile_all_correct_is_nan(catalogue):
    prof = taxonomic_error_profile(["A", "B"], ["A", "B"], catalogue, ["A", "B"])
    assert prof["n_wrong"] == 0
    assert all(math.isnan(v["share"]) and math.isnan(v["chance"]) for v in prof["levels"].values())


def test_taxonomic_error_profile_refuses_bad_inputs(catalogue):
    with pytest.raises(ValueError, match="not among the candidates"):
        taxonomic_error_profile(["B"], ["F"], catalogue, ["A", "B"])
    with pytest.raises(ValueError, match="2 predictions for 1"):
        taxonomic_error_profile(["A", "B"], ["A"], catalogue, ["A", "B"])
    with pytest.raises(ValueError, match="'Z' is not in"):
        taxonomic_error_profile(["Z"], ["A"], catalogue, ["A", "Z"])
    with pytest.raises(ValueError, match="duplicate"):
        taxonomic_error_profile(["A"], ["B"], catalogue, ["A", "B", "A"])


# --------------------------------------------------------------------------- traits


def test_categorical_scores_hand_computed():
    # Class 0: TP1 FP1 FN1 -> 1/2; class 1: TP2 FP1 -> 4/5; class 2: FN1 -> 0.
    # Class 3 is in neither array and must not count (else 0.325 or 0.575).
    s = categorical_scores(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), n_classes=4)
    assert s["accuracy"] == pytest.approx(3 / 5)
    assert s["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_categorical_scores_match_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(20):
        y_true, y_pred = rng.integers(0, 7, 40), rng.integers(0, 5, 40)
        s = categorical_scores(y_true, y_pred, n_classes=9)
        assert s["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
        assert s["macro_f1"] == pytest.approx(
            skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
        )


def test_categorical_scores_refuses_out_of_range_and_mismatch():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        categorical_scores(np.array([0, 3]), np.array([0, 1]), n_classes=3)
    with pytest.raises(ValueError, match="2 predictions for 3"):
        categorical_scores(np.array([0, 1, 2]), np.array([0, 1]), n_classes=3)


def test_average_precision_hand_computed_with_ties():
    # P=1 at R=.5, then P=2/3 at R=1.
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 1 / 3)
    # The tie at 0.5 enters as one threshold: P=1/2 at R=1/2, then P=2/3 at R=1.
    assert average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.25 + 1 / 3)
    assert average_precision([0, 1, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.5)


def test_multilabel_scores_hand_computed():
    y = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    s = np.array([[0.9, 0.6, 0.1], [0.2, 0.1, 0.3], [0.4, 0.2, 0.2]])
    out = multilabel_scores(y, s)
    # Label 0: AP 1; label 1: negative 0.6 above the positive 0.2 -> AP 1/2;
    # label 2 has no positive: skipped.
    assert out["mAP"] == pytest.approx(0.75)
    # Predictions >= .5: label 0 TP1 FN1 -> 2/3; label 1 FP1 FN1 -> 0;
    # label 2 neither positive nor predicted: skipped (else 2/9 or 5/9).
    assert out["f1"] == pytest.approx(1 / 3)


def test_multilabel_scores_match_sklearn_on_random_data():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    for _ in range(10):
        y = (rng.random((60, 12)) < rng.random(12) * 0.3).astype(int)
        y[:, 0] = 0  # a label with no positives
        s = rng.random((60, 12)).round(1)  # rounding creates ties
        out = multilabel_scores(y, s, threshold=0.6)
        pos = np.flatnonzero(y.any(axis=0))
        ap = [skm.average_precision_score(y[:, v], s[:, v]) for v in pos]
        assert out["mAP"] == pytest.approx(np.mean(ap))
        pred = (s >= 0.6).astype(int)
        used = np.flatnonzero(y.any(axis=0) | pred.any(axis=0))
        f1 = skm.f1_score(y, pred, average="macro", labels=used, zero_division=0)
        assert out["f1"] == pytest.approx(f1)


def test_multilabel_scores_refuses_logits_and_non_binary_targets():
    y = np.array([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="probabilities"):
        multilabel_scores(y, np.array([[2.0, -1.0], [0.1, 0.2]]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        multilabel_scores(np.array([[2, 0], [0, 1]]), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"\(N, V\)"):
        multilabel_scores(y, np.full((3, 2), 0.5))


# --------------------------------------------------------------------------- baselines


def test_majority_categorical_predicts_most_frequent_class():
    pred = majority_categorical(np.array([2, 1, 2, 0, 2, 1]), n_test=4, n_classes=3)
    assert pred.tolist() == [2, 2, 2, 2]
    # Tie between 1 and 3 goes to the lower index.
    assert majority_categorical(np.array([3, 1, 3, 1]), 2, 4).tolist() == [1, 1]
    with pytest.raises(ValueError, match="empty"):
        majority_categorical(np.array([], dtype=int), 2, 3)


def test_prior_multilabel_scores_are_training_frequencies_and_map_is_the_positive_rate():
    y_train = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [1, 1, 1]])
    prior = prior_multilabel(y_train, n_test=5)
    assert prior.shape == (5, 3)
    np.testing.assert_allclose(prior, np.tile([0.75, 0.25, 1.0], (5, 1)))

    rng = np.random.default_rng(3)
    y_test = (rng.random((40, 3)) < [0.3, 0.1, 0.6]).astype(int)
    chance = y_test.mean(axis=0)  # per-label positive rate
    out = multilabel_scores(y_test, prior_multilabel(y_train, 40))
    assert out["mAP"] == pytest.approx(chance[y_test.any(axis=0)].mean())


def test_permutation_multilabel_hand_computed_and_seeded():
    # two species, one positive: a permutation keeps the labels (AP 1: the positive
    # species scores higher) or swaps them (AP 1/2: both positives enter at the second
    # threshold, after the two negatives), each half the time
    y = np.array([[1], [1], [0], [0]])
    s = np.array([[0.9], [0.9], [0.2], [0.2]])
    out = permutation_multilabel(y, s, ["a", "a", "b", "b"], n_permutations=400, seed=0)
    assert out["mAP"] == pytest.approx(0.75, abs=0.05)  # (1 + 0.5) / 2
    again = permutation_multilabel(y, s, ["a", "a", "b", "b"], n_permutations=400, seed=0)
    assert again == out
    with pytest.raises(ValueError, match="labels differ within a group"):
        permutation_multilabel(y, s, ["a", "b", "b", "b"])
    with pytest.raises(ValueError, match="3 groups for 4 rows"):
        permutation_multilabel(y, s, ["a", "b", "b"])
    with pytest.raises(ValueError, match="n_permutations must be >= 1"):
        permutation_multilabel(y, s, n_permutations=0)


# --------------------------------------------------------------------------- seeds


def test_mean_ci_hand_computed():
    # n = 4: mean 2.5, sd sqrt(5/3), t_{0.975, 3} = 3.182446 (tables).
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    m, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert (m, lo, hi) == pytest.approx((2.5, 2.5 - half, 2.5 + half))
    # 90 %: t_{0.95, 3} = 2.353363.
    half90 = 2.353363434801823 * math.sqrt(5 / 3) / 2
    assert mean_ci([1.0, 2.0, 3.0, 4.0], level=0.9)[1] == pytest.approx(2.5 - half90)


def test_mean_ci_single_value_and_bad_inputs():
    m, lo, hi = mean_ci([0.7])
    assert m == 0.7 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([0.5, float("nan")])


def test_intervals_disjoint():
    assert intervals_disjoint((1.0, 0.9, 1.1), (2.0, 1.8, 2.2))
    assert intervals_disjoint((2.0, 1.8, 2.2), (1.0, 0.9, 1.1))
    assert not intervals_disjoint((1.0, 0.9, 1.5), (2.0, 1.4, 2.2))
    assert not intervals_disjoint((1.0, 0.9, 1.4), (2.0, 1.4, 2.2))  # touching
    assert not intervals_disjoint((1.0, math.nan, math.nan), (5.0, 4.9, 5.1))


# --------------------------------------------------------------------------- maps


def _clusters(n_per=20, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(3, d) * 10.0
    emb = np.concatenate([c + rng.standard_normal((n_per, d)) for c in centres])
    labels = np.repeat(["a", "b", "c"], n_per)
    return emb, labels


@pytest.fixture
def one_openmp_thread():
    # t-SNE's gradient runs on OpenMP threads; on a CPU shared with a training
    # job their spin-waits turn a 0.1 s fit into tens of seconds.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        yield


def test_tsne_2d_keeps_well_separated_clusters_apart(one_openmp_thread):
    pytest.importorskip("sklearn")
    emb, labels = _clusters()
    xy = tsne_2d(emb, seed=0)
    assert xy.shape == (60, 2)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    agreement = np.mean(labels[d.argmin(axis=1)] == labels)
    assert agreement > 0.9


def test_embedding_map_writes_png(tmp_path, one_openmp_thread):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    emb, labels = _clusters()
    out = embedding_map(
        emb,
        {"class": labels.tolist(), "order": [f"o{i % 25}" for i in range(60)]},  # 25: no legend
        tmp_path / "maps" / "map.png",
        title="three clusters",
    )
    assert out == tmp_path / "maps" / "map.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


def test_embedding_map_leaves_the_callers_figures_alone(tmp_path, users_figure):
    pytest.importorskip("sklearn")
    emb, labels = _clusters()
    embedding_map(emb, {"class": labels.tolist()}, tmp_path / "m.png", "t", method="pca")
    users_figure()


def test_embedding_map_refuses_bad_inputs(tmp_path):
    emb, labels = _clusters(n_per=1)
    with pytest.raises(ValueError, match="at least 5"):
        embedding_map(emb, {"class": labels.tolist()}, tmp_path / "x.png", "t")
    emb, labels = _clusters()
    with pytest.raises(ValueError, match="59 names for 60"):
        embedding_map(emb, {"class": labels.tolist()[:-1]}, tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="method"):
        embedding_map(emb, {"class": labels.tolist()}, tmp_path / "x.png", "t", method="umap")


def _paired_draws(rng, n, p_before, p_after, rho):
    """Right/wrong before and after on n recordings, correlated through a shared latent."""
    shared = rng.standard_normal(n) * np.sqrt(rho)
    before = shared + rng.standard_normal(n) * np.sqrt(1 - rho) < stats.norm.ppf(p_before)
    after = shared + rng.standard_normal(n) * np.sqrt(1 - rho) < stats.norm.ppf(p_after)
    return before, after


@pytest.mark.parametrize("n, p_before, p_after, rho", [(30, 0.5, 0.6, 0.7), (60, 0.7, 0.8, 0.9)])
def test_paired_change_covers_the_true_change_at_its_level(n, p_before, p_after, rho):
    """Newcombe's interval covers the true change about 95% of the time on correlated
    pairs, as a finetune report's recordings are (both models get the easy ones). An
    interval without the correlation term covered 99.3% and 99.9% here, and with its sign
    flipped 99.9% and 100%: too wide to show a real change."""
    from training.metrics import paired_change

    rng = np.random.default_rng(0)
    draws = [_paired_draws(rng, n, p_before, p_after, rho) for _ in range(1500)]
    covered = [(c := paired_change(b, a))["lo"] <= p_after - p_before <= c["hi"] for b, a in draws]
    assert 0.925 <= np.mean(covered) <= 0.985


def test_paired_change_counts_and_bounds():
    from training.metrics import paired_change

    before = [True, True, False, False, True]
    after = [True, False, True, True, True]
    c = paired_change(before, after)
    assert (c["n"], c["gained"], c["lost"]) == (5, 2, 1)
    assert c["change"] == pytest.approx(0.2) and -1 <= c["lo"] < 0.2 < c["hi"] <= 1
    swapped = paired_change(after, before)  # the same interval, mirrored
    assert (swapped["lo"], swapped["hi"]) == pytest.approx((-c["hi"], -c["lo"]))
    # nothing changed on 3 recordings: that shows little, so the interval stays wide
    same = paired_change([True] * 3, [True] * 3)
    assert same["change"] == 0 and same["lo"] < -0.5 and same["hi"] > 0.5
    assert np.isnan(paired_change([], [])["lo"])
    with pytest.raises(ValueError, match="one length"):
        paired_change([True], [True, False])


def test_ranks_scored_a_chunk_of_rows_at_a_time_are_the_whole_matrixs():
    from training.metrics import similarity_ranks

    rng = np.random.default_rng(0)
    audio = rng.integers(-2, 3, size=(103, 8)).astype(np.float32)  # integers: many ties
    text = rng.integers(-2, 3, size=(11, 8)).astype(np.float32)
    labels = rng.integers(0, 11, size=103)
    whole = ranks(audio @ text.T, labels)
    for chunk in (1, 10, 103, 500):
        np.testing.assert_array_equal(similarity_ranks(audio, text, labels, chunk), whole)
    assert similarity_ranks(audio[:0], text, labels[:0]).shape == (0,)
