"""Turn embeddings into species, back-off taxa and traits.

Species: cosine against the bundle's text embeddings, times the calibrated logit
scale, softmax over the active species (after include/exclude/region filters).
A species is reported when its probability passes its threshold (per-species,
else global). When none passes, probability mass is summed per genus, then
family, order and class: the first taxon whose mass, beyond its share of the active
species, passes the back-off threshold is reported ("unknown Turdus") instead of a
wrong species, with its mass as its probability. The share is what a sound the model
knows nothing of gives it: in a catalogue of 18 birds and 4 mammals, Aves holds 0.82
of a flat distribution, and whales, insects and noise came out "unknown Aves" at
p=0.83-0.89. The test is (mass - share) / (1 - share) >= threshold: 0 for no
evidence, 1 for all of the mass; for a genus of a few species in a large catalogue it
is the mass itself. Levels at which the active species all share one taxon (share 1:
the class of a birds-only catalogue) tell nothing and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from animalclap_edge.bundle import Bundle
from animalclap_edge.contracts.catalogue import TAXON_LEVELS
from animalclap_edge.similarity import SpeciesSimilarity


class ScoringError(ValueError):
    """Scoring settings that do not fit the bundle (unknown species in a list...)."""


@dataclass(frozen=True)
class ScoringSettings:
    threshold: float | None = None  # None: the bundle's calibrated default
    top_k: int = 3
    species_thresholds: dict[str, float] = field(default_factory=dict)
    include: tuple[str, ...] = ()  # species ids or scientific names; empty = all
    exclude: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    # logged only: every candidate is still scored (unlike include); a back-off taxon
    # is logged when it holds one of these. Empty = all.
    report_only: tuple[str, ...] = ()
    backoff: bool = True
    backoff_threshold: float | None = None


@dataclass(frozen=True)
class Label:
    level: str  # "species", "genus", "family", "order" or "class"
    taxon: str  # species id, or the taxon's name
    scientific_name: str
    common_name: str
    score: float  # cosine of the best species inside this label
    probability: float


@dataclass(frozen=True)
class WindowScore:
    labels: list[Label]  # passing labels, best first (may be empty)
    best: Label  # best species even when it did not pass (for display/debug)
    traits: dict[str, object]  # trait -> {"value", "p"} or {"values", "p"}


class WindowScorer(Protocol):
    """The scorer role: unit embeddings in, labels out. `Scorer` is the bundle's own;
    pass another to `Detector(..., scorer=...)` (one that wraps `Scorer` to add a
    site's prior, say). Labels' `taxon`s must be the bundle catalogue's species ids, or
    for back-off taxa the taxon's name."""

    def score(self, emb: np.ndarray) -> list[WindowScore]:
        """emb (B, D) unit rows -> one WindowScore per row."""
        ...


class Scorer:
    """Species by cosine against the bundle's text embeddings, back-off taxa and traits,
    under `ScoringSettings` (see the module's docstring)."""

    def __init__(self, bundle: Bundle, settings: ScoringSettings, threads: int = 1):
        cat = bundle.catalogue
        self.bundle, self.settings = bundle, settings
        active = np.ones(len(cat), bool)
        if settings.regions:
            wanted = set(settings.regions)
            active &= np.array([bool(wanted & set(sp.regions)) for sp in cat])
        if settings.include:
            active &= self._mask(settings.include, "include")
        if settings.exclude:
            active &= ~self._mask(settings.exclude, "exclude")
        if not len(cat):
            raise ScoringError("the bundle has no species; export it with a catalogue")
        if not active.any():
            raise ScoringError("no species left after include/exclude/regions filters; widen them")
        if active.sum() == 1:
            only = cat[int(np.flatnonzero(active)[0])]
            where = "in the bundle" if len(cat) == 1 else "left by include/exclude/regions"
            raise ScoringError(
                f"only one species {where} ({only.id}, {only.scientific_name}): its "
                "probability would be p=1 for every window, so every sound would be logged "
                "as it; keep at least two species"
            )
        self.active = np.flatnonzero(active)
        # (S,) over the active species: which may be logged
        watched = (
            self._mask(settings.report_only, "report_only") if settings.report_only else active
        )
        left_out = [cat[int(i)].id for i in np.flatnonzero(watched & ~active)]
        if left_out:  # it would never be logged, and nothing would say so
            raise ScoringError(
                f"scoring.report_only: {', '.join(left_out[:5])} "
                f"{'is' if len(left_out) == 1 else 'are'} not a candidate after "
                "include/exclude/regions, so never logged: add it to them or drop it here"
            )
        self.reported = watched[self.active]
        # one GEMM per batch against the (S, D) text matrix, packed once by onnxruntime;
        # with every species active the bundle's own array is used, not a copy
        text = bundle.text_embeddings
        self.similarity = SpeciesSimilarity(
            text if len(self.active) == len(text) else text[self.active], threads
        )
        cal = bundle.calibration
        default = settings.threshold if settings.threshold is not None else cal.default_threshold
        thr = {**cal.species_thresholds, **settings.species_thresholds}
        unknown = sorted(set(settings.species_thresholds) - set(cat.ids))
        if unknown:
            raise ScoringError(
                f"scoring.species_thresholds: unknown species id(s) {unknown[:5]}; see `animalclap-edge inspect`"
            )
        self.thresholds = np.array(
            [thr.get(cat[int(i)].id, default) for i in self.active], np.float32
        )
        self.backoff_threshold = (
            settings.backoff_threshold
            if settings.backoff_threshold is not None
            else cal.backoff_threshold
        )
        self.scale = cal.logit_scale
        # (S,) group index per taxonomic level, for summing probability mass. A level
        # where every active species shares one taxon is left out: its mass is always
        # 1, so noise in a birds-only catalogue came out "unknown Aves, p=1.00".
        # Each level also keeps each taxon's share of the active species (module
        # docstring): the mass it gets from a sound the model knows nothing of.
        self.groups = {}
        for level in reversed(TAXON_LEVELS):  # genus first
            names = [cat[int(i)].taxon(level) for i in self.active]
            uniq = sorted(set(names))
            if len(uniq) > 1:
                idx = np.array([uniq.index(n) for n in names])
                share = np.bincount(idx, minlength=len(uniq)) / len(names)
                # (mass - share) / (1 - share) >= t, as the mass each taxon must reach,
                # and whether it holds a species that may be logged: once, not per window
                bar = share + self.backoff_threshold * (1.0 - share)
                watched = np.bincount(idx, weights=self.reported, minlength=len(uniq)) > 0
                self.groups[level] = (uniq, idx, share, bar, watched)

    def _mask(self, keys: tuple[str, ...], what: str) -> np.ndarray:
        cat = self.bundle.catalogue
        by_sci = {sp.scientific_name.lower(): i for i, sp in enumerate(cat)}
        mask = np.zeros(len(cat), bool)
        for k in keys:
            i = cat.index(k) if cat.get(k) is not None else by_sci.get(k.lower())
            if i is None:
                raise ScoringError(
                    f"scoring.{what}: {k!r} is neither a species id nor a scientific name in this bundle"
                )
            mask[i] = True
        return mask

    def score(self, emb: np.ndarray) -> list[WindowScore]:
        """emb (B, D) unit rows -> one WindowScore per row."""
        cos = self.similarity(emb)  # (B, S)
        # softmax over species, kept unnormalised: only the top-k (and, for back-off,
        # the group sums) are ever divided by the total
        z = cos * np.float32(self.scale)
        z -= z.max(axis=1, keepdims=True)
        expz = np.exp(z, out=z)
        total = expz.sum(axis=1)
        traits = self._traits(emb)
        return [self._one(cos[b], expz[b], total[b], traits[b]) for b in range(len(emb))]

    def _one(self, cos: np.ndarray, expz: np.ndarray, total: float, traits: dict) -> WindowScore:
        # top-k by the cosine (the softmax is monotonic in it), O(S): a full sort of
        # 11,000 species per window cost more than the matrix product
        k = min(self.settings.top_k, len(cos))
        if k == 1:
            order = np.array([int(np.argmax(cos))])
        else:
            top = np.argpartition(-cos, k - 1)[:k] if k < len(cos) else np.arange(len(cos))
            order = top[np.argsort(-cos[top], kind="stable")]
        prob = {int(j): float(expz[j] / total) for j in order}
        best = self._species_label(order[0], cos, prob)
        passing = [j for j in order if prob[int(j)] >= self.thresholds[j]]
        labels = [self._species_label(j, cos, prob) for j in passing if self.reported[j]]
        # back-off is for a sound no species explains: a species not watched that
        # passed is the answer, not an "unknown" taxon that holds a watched one
        if not passing and self.settings.backoff:
            full = expz / total
            for level, (names, idx, _, bar, watched) in self.groups.items():
                mass = np.bincount(idx, weights=full, minlength=len(names))
                # the taxon with the most mass may hold less than its share while a
                # smaller one is far beyond its own: test every taxon, and of those
                # that pass take the one with the most mass
                passes = mass >= bar
                if passes.any():
                    g = int(np.where(passes, mass, -1.0).argmax())
                    if not watched[g]:
                        break  # best explained by a taxon not watched: nothing logged
                    members = np.flatnonzero(idx == g)
                    top_member = members[np.argmax(full[members])]
                    name = names[g]
                    labels = [
                        Label(
                            level,
                            name,
                            name,
                            f"unknown {name}",
                            float(cos[top_member]),
                            float(mass[g]),
                        )
                    ]
                    break
        return WindowScore(labels=labels, best=best, traits=traits)

    def _species_label(self, j: int, cos: np.ndarray, prob: dict[int, float]) -> Label:
        sp = self.bundle.catalogue[self.active[j]]
        return Label(
            "species", sp.id, sp.scientific_name, sp.common_name, float(cos[j]), prob[int(j)]
        )

    def _traits(self, emb: np.ndarray) -> list[dict[str, object]]:
        b = self.bundle
        if b.trait_schema is None:
            return [{} for _ in range(len(emb))]
        logits = emb @ b.trait_weight + b.trait_bias  # (B, n_outputs)
        out: list[dict[str, object]] = [{} for _ in range(len(emb))]
        for t, s in zip(b.trait_schema.traits, b.trait_schema.slices().values(), strict=True):
            z = logits[:, s]
            if t.kind == "categorical":
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                for i in range(len(emb)):
                    k = int(p[i].argmax())
                    out[i][t.name] = {"value": t.values[k], "p": round(float(p[i, k]), 3)}
            else:
                p = 1.0 / (1.0 + np.exp(-z))
                for i in range(len(emb)):
                    on = [v for v, q in zip(t.values, p[i], strict=True) if q >= 0.5]
                    out[i][t.name] = {
                        "values": on,
                        "p": {
                            v: round(float(q), 3)
                            for v, q in zip(t.values, p[i], strict=True)
                            if q >= 0.5
                        },
                    }
        return out
