"""Evaluation metrics for reproducing the AnimalCLAP paper's findings.

Zero-shot species recognition (top-k accuracy, ranks, where the errors fall in
the taxonomy), trait probing (categorical and multi-label scores with their
trivial baselines), confidence intervals over seeds, and 2-D embedding maps.

Pure numpy/scipy: no torch, so these run on any machine that has the results.
scikit-learn and matplotlib are imported lazily by the embedding map only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from animalclap_edge.contracts.catalogue import TAXON_LEVELS, Catalogue, Species

# Narrow to broad, as reported by taxonomic_error_profile.
PROFILE_LEVELS: tuple[str, ...] = tuple(reversed(TAXON_LEVELS))  # genus, family, order, class

Interval = tuple[float, float, float]  # (mean, lo, hi)


# --------------------------------------------------------------------------- zero-shot


def ranks(sims: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank of the true label in each row: sims (N, S), labels (N,) ints -> (N,) int, 0 = top-1.

    Ties are broken pessimistically: every other candidate scoring >= the true
    one counts as ranked above it. An argsort would break ties by position, so
    a collapsed model (constant embeddings, all scores equal) would look
    perfect whenever the true label happens to be the lowest index; here it
    gets rank S - 1 on every row and hence top-1 accuracy 0 (never above 1/S).
    """
    sims = np.asarray(sims)
    labels = _int_labels(labels, "labels")
    if sims.ndim != 2:
        raise ValueError(f"ranks: sims must be 2-D (N, S), got shape {sims.shape}")
    n, s = sims.shape
    if len(labels) != n:
        raise ValueError(f"ranks: {len(labels)} labels for {n} rows of sims")
    if n and (labels.min() < 0 or labels.max() >= s):
        raise ValueError(
            f"ranks: labels must be column indices in [0, {s}), got {labels.min()}..{labels.max()}"
        )
    # NaN compares False, which would silently make a NaN true score rank 0.
    if not np.isfinite(sims).all():
        raise ValueError("ranks: sims contain NaN or inf")
    true = sims[np.arange(n), labels][:, None]  # (N, 1)
    # >= counts the true label itself once; subtract it.
    return (sims >= true).sum(axis=1).astype(np.int64) - 1


def topk_accuracy(
    audio: np.ndarray, text: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """audio (N, D), text (S, D), labels (N,) row indices into text -> {"top1": .., "top5": ..}.

    Scores are dot products (the embeddings are L2-normalised, so cosine).
    Ties count against the true label (see ranks). NaN for N = 0.
    """
    audio, text = np.asarray(audio), np.asarray(text)
    if audio.ndim != 2 or text.ndim != 2:
        raise ValueError(
            f"topk_accuracy: audio and text must be 2-D, got {audio.shape} and {text.shape}"
        )
    if audio.shape[1] != text.shape[1]:
        raise ValueError(f"topk_accuracy: audio dim {audio.shape[1]} != text dim {text.shape[1]}")
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"topk_accuracy: ks must be >= 1, got {tuple(ks)}")
    if len(audio) == 0:
        return {f"top{k}": float("nan") for k in ks}
    return accuracies(similarity_ranks(audio, text, labels), ks)


def accuracies(r: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Ranks (N,) -> {"top1": .., "top5": ..}: the share ranked within each k."""
    return {f"top{k}": float(np.mean(r < k)) for k in ks}


# rows of audio @ text.T scored at once: a paper-size validation side (70k recordings
# against 6,823 species) is a 1.9 GB matrix whole, and each torchrun rank scores it
RANK_CHUNK = 4096


def similarity_ranks(
    audio: np.ndarray, text: np.ndarray, labels: np.ndarray, chunk: int = RANK_CHUNK
) -> np.ndarray:
    """ranks(audio @ text.T, labels), RANK_CHUNK rows at a time: (N,) int."""
    parts = [ranks(sims, lab) for sims, lab in _similarity_rows(audio, text, labels, chunk)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def similarity_ranks_and_predictions(
    audio: np.ndarray, text: np.ndarray, labels: np.ndarray, chunk: int = RANK_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, predicted column) of audio @ text.T, RANK_CHUNK rows at a time: two (N,)
    ints. The prediction counts ties against the true label, as ranks do: a true
    label tied for the best score is not predicted; the first other tied column is."""
    r, pred = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for sims, lab in _similarity_rows(audio, text, labels, chunk):
        r.append(ranks(sims, lab))
        top = sims >= sims.max(axis=1, keepdims=True)  # (chunk, C)
        top[np.arange(len(lab)), lab] &= top.sum(axis=1) == 1
        pred.append(np.argmax(top, axis=1))
    return np.concatenate(r), np.concatenate(pred)


def top_columns(
    audio: np.ndarray, text: np.ndarray, k: int, chunk: int = RANK_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """The k best-scoring columns of audio @ text.T per row, best first, and their
    scores: (N, min(k, C)) ints and (N, min(k, C)) floats. Equal scores keep the lower
    column first (a stable sort), so the listing is the same on every machine."""
    k = min(k, len(text))
    cols, vals = [np.zeros((0, k), np.int64)], [np.zeros((0, k), np.float32)]
    for i in range(0, len(audio), chunk):
        sims = audio[i : i + chunk] @ text.T  # (chunk, C)
        best = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        cols.append(best)
        vals.append(np.take_along_axis(sims, best, axis=1).astype(np.float32))
    return np.concatenate(cols), np.concatenate(vals)


def _similarity_rows(
    audio: np.ndarray, text: np.ndarray, labels: np.ndarray, chunk: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(sims (chunk, C), labels (chunk,)) of audio @ text.T, chunk rows at a time: a
    paper-size side (70k recordings x 6,823 species) is a 1.9 GB matrix whole."""
    labels = np.asarray(labels)
    for i in range(0, len(audio), chunk):
        yield audio[i : i + chunk] @ text.T, labels[i : i + chunk]


def taxonomic_error_profile(
    pred: Sequence[str] | np.ndarray,
    true: Sequence[str] | np.ndarray,
    catalogue: Catalogue,
    candidates: Sequence[str],
) -> dict:
    """Where wrong predictions fall in the taxonomy, against chance.

    pred, true (N,) species ids; candidates: the species ids that were scored
    (pred and true must all be among them). Only wrong predictions (pred !=
    true) count. For each level, "share" is the fraction of wrong predictions
    whose predicted species shares the true species' lineage down to that
    level (class, order, family, genus all compared, so the shares are
    cumulative: same genus implies same family, order and class, even if two
    genera in different families share a name). "chance" is the share
    expected if each wrong prediction were drawn uniformly from the other
    candidates: for true species t, |{c in candidates, c != t, same lineage}| /
    (|candidates| - 1), averaged over the wrong predictions' true species.

    Returns {"n_wrong": int, "levels": {"genus": {"share", "chance"}, "family": ..,
    "order": .., "class": ..}}; shares and chances are NaN when n_wrong = 0.
    """
    pred, true = list(pred), list(true)
    if len(pred) != len(true):
        raise ValueError(
            f"taxonomic_error_profile: {len(pred)} predictions for {len(true)} true labels"
        )
    cand = list(candidates)
    if len(set(cand)) != len(cand):
        raise ValueError("taxonomic_error_profile: candidates contain duplicate species ids")
    cand_set = set(cand)
    outside = sorted({x for x in (*pred, *true) if x not in cand_set})
    if outside:
        raise ValueError(
            f"taxonomic_error_profile: ids not among the candidates: {', '.join(map(str, outside[:5]))}"
        )

    def lookup(species_id: str) -> Species:
        sp = catalogue.get(species_id)
        if sp is None:
            raise ValueError(
                f"taxonomic_error_profile: species id {species_id!r} is not in {catalogue.source}"
            )
        return sp

    # lineage() is (class, order, family, genus, binomial); a level's depth is
    # how many leading names must agree.
    depth = {level: TAXON_LEVELS.index(level) + 1 for level in PROFILE_LEVELS}
    lineages = {c: lookup(c).lineage() for c in cand}
    wrong = [(p, t) for p, t in zip(pred, true, strict=True) if p != t]

    levels: dict[str, dict[str, float]] = {}
    for level in PROFILE_LEVELS:
        d = depth[level]
        if not wrong:
            levels[level] = {"share": float("nan"), "chance": float("nan")}
            continue
        hits = [lineages[p][:d] == lineages[t][:d] for p, t in wrong]
        # Chance per true species, computed once per distinct species.
        chance_of: dict[str, float] = {}
        for _, t in wrong:
            if t not in chance_of:
                same = sum(lineages[c][:d] == lineages[t][:d] for c in cand if c != t)
                chance_of[t] = same / (len(cand) - 1)  # >= 2 candidates: p != t both in cand
        levels[level] = {
            "share": float(np.mean(hits)),
            "chance": float(np.mean([chance_of[t] for _, t in wrong])),
        }
    return {"n_wrong": len(wrong), "levels": levels}


# --------------------------------------------------------------------------- traits


def categorical_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """y_true, y_pred (N,) ints in [0, n_classes) -> {"accuracy", "macro_f1"}.

    Macro-F1 averages per-class F1 = 2TP / (2TP + FP + FN) over the classes
    present in y_true or y_pred (sklearn's default label set; for those
    classes the denominator is never 0, so zero_division never applies).
    Classes absent from both are left out rather than scored 0 or 1. NaN for N = 0.
    """
    y_true = _int_labels(y_true, "y_true")
    y_pred = _int_labels(y_pred, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(f"categorical_scores: {len(y_pred)} predictions for {len(y_true)} labels")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(
                f"categorical_scores: {name} must be in [0, {n_classes}), got {y.min()}..{y.max()}"
            )
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    # Confusion counts per class, (n_classes,) each.
    tp = np.bincount(y_true[y_true == y_pred], minlength=n_classes)
    n_true = np.bincount(y_true, minlength=n_classes)  # TP + FN
    n_pred = np.bincount(y_pred, minlength=n_classes)  # TP + FP
    present = (n_true + n_pred) > 0
    f1 = 2 * tp[present] / (n_true[present] + n_pred[present])
    return {"accuracy": float(np.mean(y_true == y_pred)), "macro_f1": float(f1.mean())}


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """y_true (N,) {0, 1}, scores (N,) -> AP, sklearn's definition; NaN with no positives.

    AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, high to
    low: step-wise, no interpolation. Tied scores enter together, so a
    constant score gives AP = positive rate.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # Last index of each run of equal scores = one threshold each.
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_scores(
    y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """y_true (N, V) {0, 1}, scores (N, V) probabilities in [0, 1] -> {"mAP", "f1"}.

    mAP: mean over labels with at least one positive of average_precision
    (labels without positives have no defined AP and are skipped).
    f1: macro F1 of the predictions scores >= threshold, averaged over labels
    with at least one positive or predicted positive (F1 is 0/0 for the rest,
    which are skipped rather than scored 0 or 1). NaN where no label qualifies.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or s.shape != y.shape:
        raise ValueError(
            f"multilabel_scores: y_true and scores must both be (N, V), got {y.shape} and {s.shape}"
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError("multilabel_scores: y_true must contain only 0 and 1")
    if not np.isfinite(s).all() or (s.size and (s.min() < 0 or s.max() > 1)):
        raise ValueError(
            "multilabel_scores: scores must be finite probabilities in [0, 1] (apply a sigmoid to logits)"
        )
    y = y.astype(bool)
    has_pos = y.any(axis=0)  # (V,)
    aps = [average_precision(y[:, v], s[:, v]) for v in np.flatnonzero(has_pos)]
    pred = s >= threshold  # (N, V)
    tp = (y & pred).sum(axis=0)
    denom = y.sum(axis=0) + pred.sum(axis=0)  # 2TP + FP + FN
    used = denom > 0
    return {
        "mAP": float(np.mean(aps)) if aps else float("nan"),
        "f1": float(np.mean(2 * tp[used] / denom[used])) if used.any() else float("nan"),
    }


def majority_categorical(y_train: np.ndarray, n_test: int, n_classes: int) -> np.ndarray:
    """y_train (M,) ints -> (n_test,) predictions, all the most frequent training class.

    Ties go to the lowest class index.
    """
    y_train = _int_labels(y_train, "y_train")
    if len(y_train) == 0:
        raise ValueError("majority_categorical: y_train is empty; no majority class to predict")
    if y_train.min() < 0 or y_train.max() >= n_classes:
        raise ValueError(
            f"majority_categorical: y_train must be in [0, {n_classes}), got {y_train.min()}..{y_train.max()}"
        )
    top = int(np.argmax(np.bincount(y_train, minlength=n_classes)))
    return np.full(n_test, top, dtype=np.int64)


def prior_multilabel(y_train: np.ndarray, n_test: int) -> np.ndarray:
    """y_train (M, V) {0, 1} -> scores (n_test, V), each row the training label frequencies.

    Every test sample gets the same score per label, so all are tied and each
    label's AP is its test positive rate. Not the chance level of a model's mAP:
    scores that vary without information beat it on average (their expected AP is
    above the positive rate); permutation_multilabel gives that chance level.
    """
    y = np.asarray(y_train)
    if y.ndim != 2 or len(y) == 0:
        raise ValueError(
            f"prior_multilabel: y_train must be a non-empty (M, V) array, got shape {y.shape}"
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError("prior_multilabel: y_train must contain only 0 and 1")
    freq = y.astype(np.float64).mean(axis=0)  # (V,)
    return np.tile(freq, (n_test, 1))


N_PERMUTATIONS = 100  # label permutations averaged by permutation_multilabel


def permutation_multilabel(
    y_true: np.ndarray,
    scores: np.ndarray,
    groups: Sequence | None = None,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, float]:
    """The mAP and F1 that `scores` reach when they carry no information about the
    labels: multilabel_scores against the label rows permuted across groups, averaged
    over n_permutations seeded draws -> {"mAP", "f1"}.

    y_true (N, V) {0, 1}, scores (N, V) as multilabel_scores takes them; groups (N,):
    the unit the labels belong to (the species, for species-level traits), each
    group's rows equal. A whole group's label row moves together, so the scores keep
    their own structure (recordings of one species score alike) and only their link
    to the labels is broken. That structure is why a constant score (prior_multilabel,
    AP = positive rate) is no baseline: uninformative species-level scores beat it
    in most draws. groups None: each recording is its own group.
    """
    y = np.asarray(y_true)
    if y.ndim != 2:
        raise ValueError(f"permutation_multilabel: y_true must be (N, V), got shape {y.shape}")
    if n_permutations < 1:
        raise ValueError(
            f"permutation_multilabel: n_permutations must be >= 1, got {n_permutations}"
        )
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    if g.shape != (len(y),):
        raise ValueError(f"permutation_multilabel: {len(g)} groups for {len(y)} rows of y_true")
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    rows = y[first]  # (G, V): one label row per group
    if not np.array_equal(rows[inverse], y):
        raise ValueError(
            "permutation_multilabel: labels differ within a group; "
            "group permutation needs one label row per group"
        )
    rng = np.random.default_rng(seed)
    draws = [
        multilabel_scores(rows[rng.permutation(len(rows))][inverse], scores, threshold)
        for _ in range(n_permutations)
    ]
    # Every draw holds the same label rows, so which labels have positives (and hence
    # whether mAP or F1 is NaN) is the same in all of them.
    return {k: float(np.mean([d[k] for d in draws])) for k in ("mAP", "f1")}


# --------------------------------------------------------------------------- seeds


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean over seeds with a Student t interval -> (mean, lo, hi).

    half-width = t_{(1+level)/2, n-1} * sd / sqrt(n), sd with n - 1 degrees of
    freedom. With one value the spread is unknown: (v, nan, nan).
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError("mean_ci: need a non-empty list of values")
    if not 0 < level < 1:
        raise ValueError(f"mean_ci: level must be in (0, 1), got {level}")
    if not np.isfinite(v).all():
        raise ValueError("mean_ci: values contain NaN or inf")
    m = float(v.mean())
    if len(v) == 1:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def paired_change(before: Sequence[bool], after: Sequence[bool], level: float = 0.95) -> dict:
    """The change in accuracy between two models scored on the same recordings
    (before[i], after[i]: recording i right under each) with Newcombe's (1998) interval
    for paired proportions (square-and-add of Wilson intervals, method 10; the worked
    form of Altman et al., Statistics with Confidence, 2000).

    -> {"n", "change" (after - before), "lo", "hi", "gained" (right only after),
    "lost" (right only before), "right_before", "right_after"}. Unlike a Wald or bootstrap interval it stays inside
    [-1, 1], and stays wide when no recording changed: 3 recordings all right twice
    cannot show that nothing changed. NaN bounds for n = 0.
    """
    b = np.asarray(before, dtype=bool)
    a = np.asarray(after, dtype=bool)
    if b.ndim != 1 or b.shape != a.shape:
        raise ValueError(
            f"paired_change: before and after must be 1-D and of one length, got "
            f"{b.shape} and {a.shape}"
        )
    if not 0 < level < 1:
        raise ValueError(f"paired_change: level must be in (0, 1), got {level}")
    n = len(b)
    both, lost, gained = int((b & a).sum()), int((b & ~a).sum()), int((~b & a).sum())
    neither = n - both - lost - gained
    out = {"n": n, "change": float("nan"), "lo": float("nan"), "hi": float("nan")}
    out.update(gained=gained, lost=lost, right_before=both + lost, right_after=both + gained)
    if n == 0:
        return out
    z = float(stats.norm.ppf((1 + level) / 2))
    p1, p2 = (both + lost) / n, (both + gained) / n  # before, after
    l1, u1 = _wilson(both + lost, n, z)
    l2, u2 = _wilson(both + gained, n, z)
    # the correlation of the two outcomes, its numerator continuity-corrected as
    # Newcombe's method 10 does: 0 when a margin is empty
    margins = (both + lost) * (gained + neither) * (both + gained) * (lost + neither)
    cross: float = both * neither - lost * gained
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = cross / math.sqrt(margins) if margins else 0.0
    d = p2 - p1
    below = math.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0))
    above = math.sqrt(max((u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2, 0))
    out.update(change=d, lo=max(d - below, -1.0), hi=min(d + above, 1.0))
    return out


def proportion_ci(right: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a top-k accuracy, `right` of `n` recordings: inside
    [0, 1] and not of zero width at 0 or n right, as a Wald interval would be. NaN for
    n = 0. Recordings are taken as independent (see paired_change)."""
    if n == 0:
        return float("nan"), float("nan")
    return _wilson(right, n, float(stats.norm.ppf((1 + level) / 2)))


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval of x successes in n trials."""
    centre = (x + z * z / 2) / (n + z * z)
    half = z * math.sqrt(x * (n - x) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def intervals_disjoint(a: Interval, b: Interval) -> bool:
    """True when the (mean, lo, hi) intervals do not overlap (touching counts as overlap).

    False when either interval is undefined (NaN bounds, e.g. a single seed).
    """
    (_, alo, ahi), (_, blo, bhi) = a, b
    if any(math.isnan(x) for x in (alo, ahi, blo, bhi)):
        return False
    return ahi < blo or bhi < alo


# --------------------------------------------------------------------------- maps


def tsne_2d(emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """emb (N, D), N >= 5 -> (N, 2) t-SNE coordinates (perplexity min(30, (N-1)/3), PCA init)."""
    from sklearn.manifold import TSNE

    emb = _check_emb(emb, "tsne_2d")
    n = len(emb)
    # sklearn requires perplexity < N; (N-1)/3 keeps ~3 perplexities of neighbours.
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
    return tsne.fit_transform(emb.astype(np.float64))


def pca_2d(emb: np.ndarray) -> np.ndarray:
    """emb (N, D), N >= 5 -> (N, 2) projection on the first two principal axes."""
    emb = _check_emb(emb, "pca_2d").astype(np.float64)
    x = emb - emb.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    out = x @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))  # D = 1 gives one axis


def embedding_map(
    emb: np.ndarray,
    labels: Mapping[str, Sequence[str]],
    out_png: Path,
    title: str,
    seed: int = 0,
    method: str = "tsne",
) -> Path:
    """Draw emb (N, D) in 2-D, one panel per labelling, and save a PNG.

    labels: e.g. {"class": [...], "order": [...], "family": [...]}, each (N,)
    names; points are coloured by name (tab20; a legend only with <= 20 names).
    method: "tsne" (tsne_2d) or "pca" (pca_2d). Returns out_png.
    """
    if method not in ("tsne", "pca"):
        raise ValueError(f"embedding_map: method must be 'tsne' or 'pca', got {method!r}")
    emb = _check_emb(emb, "embedding_map")
    if not labels:
        raise ValueError(
            "embedding_map: labels is empty; give at least one labelling, e.g. {'class': [...]}"
        )
    for key, names in labels.items():
        if len(names) != len(emb):
            raise ValueError(
                f"embedding_map: labels[{key!r}] has {len(names)} names for {len(emb)} embeddings"
            )
    xy = tsne_2d(emb, seed) if method == "tsne" else pca_2d(emb)  # (N, 2)

    import matplotlib
    from matplotlib.figure import Figure

    cmap = matplotlib.colormaps["tab20"]
    # tab20 pairs a dark and a light shade; take the 10 dark ones first so few
    # labels get clearly different colours: 0, 2, ..., 18, 1, 3, ..., 19.
    shade = [*range(0, 20, 2), *range(1, 20, 2)]
    k = len(labels)
    # A bare Figure, not pyplot: no backend switch and no global figure list, so
    # drawing a map from a notebook leaves the notebook's own figures alone.
    fig = Figure(figsize=(5.5 * k, 5))
    axes = fig.subplots(1, k, squeeze=False)
    for ax, (key, names) in zip(axes[0], labels.items(), strict=True):
        shown = np.asarray([str(x) for x in names])
        uniq = sorted(set(shown.tolist()))
        for i, name in enumerate(uniq):
            sel = shown == name
            ax.scatter(xy[sel, 0], xy[sel, 1], s=10, color=cmap(shade[i % 20]), label=name)
        ax.set_title(f"{key} ({len(uniq)})")
        ax.set_xticks([])
        ax.set_yticks([])
        if len(uniq) <= 20:
            ax.legend(fontsize=7, markerscale=1.5, loc="best", frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return out_png


# --------------------------------------------------------------------------- helpers


def _int_labels(y, name: str) -> np.ndarray:
    """Array of integer labels (N,); bools and floats are refused, not truncated."""
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {a.dtype}")
    return a.astype(np.int64)


def _check_emb(emb: np.ndarray, who: str) -> np.ndarray:
    emb = np.asarray(emb)
    if emb.ndim != 2:
        raise ValueError(f"{who}: emb must be 2-D (N, D), got shape {emb.shape}")
    if len(emb) < 5:
        raise ValueError(f"{who}: need at least 5 embeddings for a 2-D map, got {len(emb)}")
    if not np.isfinite(emb).all():
        raise ValueError(f"{who}: emb contains NaN or inf")
    return emb
