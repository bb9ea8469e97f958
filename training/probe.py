"""Linear trait probes on frozen embeddings: the heads that bundles ship.

One linear layer over the (frozen, projected, normalised) audio embedding;
outputs are the schema's value slots concatenated. Cross-entropy on each
categorical trait's slice, binary logistic loss on each multi-label value;
unknown traits are masked out. Five epochs, as in the paper.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from animalclap_edge.contracts.traits import TraitSchema
from training.metrics import (
    N_PERMUTATIONS,
    categorical_scores,
    majority_categorical,
    multilabel_scores,
    permutation_multilabel,
    prior_multilabel,
)

# What probe.json's "baseline_*" figures are, written beside them: probes from before
# this baseline reported the label-frequency prior under the same keys.
BASELINES = {
    "categorical": "always the training majority class",
    "multilabel": (
        f"the probe's own scores against the species' trait rows permuted across species, "
        f"mean of {N_PERMUTATIONS} seeded permutations"
    ),
}


def fit_trait_heads(
    emb: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    schema: TraitSchema,
    epochs: int = 5,
    lr: float = 1e-2,
    batch_size: int = 64,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """emb (N, D); targets (N, n_outputs); known (N, n_traits) -> weight (D, n_outputs), bias."""
    g = torch.Generator().manual_seed(seed)
    x, y, m = (
        torch.from_numpy(a) for a in (emb.astype(np.float32), targets.astype(np.float32), known)
    )
    # nn.Linear draws its init from torch's global RNG: unseeded, two identical probe
    # runs got different heads. Seeded from `seed` in a forked RNG, so the caller's
    # global stream is left where it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(x.shape[1], schema.n_outputs)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    slices = list(schema.slices().values())
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = trait_loss(head(x[idx]), y[idx], m[idx], schema, slices)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.weight.detach().numpy().T.copy(), head.bias.detach().numpy().copy()


def trait_loss(logits, y, known, schema: TraitSchema, slices) -> torch.Tensor:
    total, count = logits.new_zeros(()), 0
    for j, (t, s) in enumerate(zip(schema.traits, slices, strict=True)):
        mask = known[:, j]
        if not mask.any():
            continue
        if t.kind == "categorical":
            total = total + F.cross_entropy(logits[mask, s], y[mask, s].argmax(1))
        else:
            total = total + F.binary_cross_entropy_with_logits(logits[mask, s], y[mask, s])
        count += 1
    return total / max(count, 1)


def score_keys(scores: dict) -> tuple[str, str]:
    """(headline metric, F1 key) of one trait's scores: categorical traits report
    accuracy and macro_f1, multi-label ones mAP and f1."""
    return ("accuracy", "macro_f1") if "accuracy" in scores else ("mAP", "f1")


def score_trait_heads(
    emb: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    schema: TraitSchema,
    weight: np.ndarray,
    bias: np.ndarray,
    train_targets: np.ndarray,
    train_known: np.ndarray,
    groups: list[str] | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per trait, the probe's scores and its baseline's, on (emb, targets, known).

    Categorical: accuracy and macro-F1, against always predicting the training
    majority. Multi-label: mAP and macro-F1 of sigmoid scores, against the same
    scores with the trait rows permuted across `groups` (the species of each row;
    metrics.permutation_multilabel, seeded by `seed`): what scores with no
    information about the trait reach. "prior_mAP"/"prior_f1": the label-frequency
    prior (mAP = the positive rate), the baseline before; scores that vary without
    information beat it in most draws, so it is kept for comparison only.
    "beats_baseline" compares accuracy (categorical; the harder test, since a
    majority guess scores well on skewed traits) or mAP (multi-label).
    """
    if groups is not None and len(groups) != len(emb):
        raise ValueError(f"score_trait_heads: {len(groups)} groups for {len(emb)} recordings")
    logits = emb @ weight + bias
    out = {}
    for j, (t, s) in enumerate(zip(schema.traits, schema.slices().values(), strict=True)):
        mask, train_mask = known[:, j], train_known[:, j]
        if not mask.any() or not train_mask.any():
            continue
        yt, lt, ytrain = targets[mask, s], logits[mask, s], train_targets[train_mask, s]
        n = int(mask.sum())
        if t.kind == "categorical":
            k = len(t.values)
            true = yt.argmax(1)
            probe = categorical_scores(true, lt.argmax(1), k)
            base = categorical_scores(true, majority_categorical(ytrain.argmax(1), n, k), k)
            # the training majority is below chance where the unseen species' classes
            # differ from the training ones (sociality 0.063 against 1/K 0.25 on small):
            # a guess drawn at the training frequencies, and 1/K, are said beside it
            freq = np.bincount(ytrain.argmax(1), minlength=k) / len(ytrain)
            tested = np.bincount(true, minlength=k) / n
            prior = {"chance_accuracy": float(freq @ tested), "uniform_accuracy": 1.0 / k}
            chance = [prior["chance_accuracy"], prior["uniform_accuracy"]]
            key = "accuracy"
        else:
            true = (yt > 0.5).astype(int)
            prob = 1.0 / (1.0 + np.exp(-lt))
            probe = multilabel_scores(true, prob)
            g = None if groups is None else np.asarray(groups)[mask]
            base = permutation_multilabel(true, prob, g, seed=seed)
            prior = {
                f"prior_{m}": v
                for m, v in multilabel_scores(
                    true, prior_multilabel((ytrain > 0.5).astype(int), n)
                ).items()
            }
            chance = []  # the permutation baseline is a no-information bar already
            key = "mAP"
        out[t.name] = {
            "n": n,
            **probe,
            **{f"baseline_{m}": v for m, v in base.items()},
            **prior,
            "beats_baseline": bool(probe[key] > base[key]),
            # over the best of the guesses with no information
            "beats_chance": bool(probe[key] > max([base[key], *chance])),
        }
    return out


def probe_traits(
    loaded,
    data,
    split,
    out_dir: str | Path,
    window_seconds: float = 3.0,
    max_train_items: int = 4000,
    seed: int = 0,
    progress: bool = True,
    split_source: str = "given by the caller",
    write: bool = True,
) -> dict:
    """Fit heads on the split's training recordings; score on unseen and seen species.

    "unseen": recordings of the zero-shot test species, whose traits the heads must
    read from sound alone (no recording of the species was in training). "seen":
    the validation recordings (held-out site-days of training species). Writes
    probe.json and probe.md under out_dir. split_source: where the split came from
    (its file, or a fresh draw), written down with it. `write=False`: the results
    only, no file (a torchrun job's ranks but rank 0).
    """
    from training.embed_audio import embed_items
    from training.model import AudioEncoder

    split.check_items(data.items)
    if max_train_items < 1:
        raise ValueError(f"max_train_items {max_train_items}: must be at least 1")
    if data.traits is None:
        raise ValueError(f"{data.name} has no trait table (traits.csv); nothing to probe")
    notes = trait_table_notes(data, split)
    for note in notes:
        print(f"probe: warning: {note}", file=sys.stderr, flush=True)
    out = Path(out_dir)
    if write:
        out.mkdir(parents=True, exist_ok=True)
    encoder = AudioEncoder(loaded.model, loaded.frontend, mode="fft")
    window = round(window_seconds * loaded.frontend.sample_rate)
    train_idx = np.asarray(split.train)
    if len(train_idx) > max_train_items:  # CPU budget; a seeded subset
        rng = np.random.default_rng(seed)
        train_idx = np.sort(rng.choice(train_idx, max_train_items, replace=False))
    sets = {"train": train_idx, "unseen": np.asarray(split.test), "seen": np.asarray(split.val)}
    emb, tgt, known = {}, {}, {}
    for name, idx in sets.items():
        items = [data.items[i] for i in idx]
        emb[name] = embed_items(
            encoder, data, items, window, desc=f"probe {name}", progress=progress
        )
        tgt[name], known[name] = data.schema.encode(data.traits, [it.species_id for it in items])
    weight, bias = fit_trait_heads(
        emb["train"], tgt["train"], known["train"], data.schema, seed=seed
    )
    results: dict = {
        "source": loaded.source,
        "data": data.name,
        "train_recordings": len(train_idx),
        "baselines": BASELINES,
        "trait_table_notes": notes,
        # which split: the run's split.json or a fresh one (same parameters, other species)
        "split": {
            "source": split_source,
            "unseen_species": len(split.test_species),
            "seen_species": len(split.seen_species),
            "params": dict(split.params),
        },
    }
    for name in ("unseen", "seen"):
        if len(sets[name]) == 0:
            continue
        scores = score_trait_heads(
            emb[name],
            tgt[name],
            known[name],
            data.schema,
            weight,
            bias,
            tgt["train"],
            known["train"],
            groups=[data.items[i].species_id for i in sets[name]],
            seed=seed,
        )
        results[name] = {
            "recordings": len(sets[name]),
            "traits": scores,
            "beats_baseline": sum(s["beats_baseline"] for s in scores.values()),
            "beats_chance": sum(s["beats_chance"] for s in scores.values()),
            "n_traits": len(scores),
        }
    if write:
        (out / "probe.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        (out / "probe.md").write_text(probe_markdown(results), encoding="utf-8")
    return results


def trait_table_notes(data, split) -> list[str]:
    """What of traits.csv the probe cannot use, said before it runs: rows of ids no
    catalogue species has (a typo: "yetsan_1" for "yetsan1" left an unseen species
    without traits, and every trait's n fell from 17 to 12, without a word), species
    of the split's recordings with no row, and schema traits with no column."""
    import difflib

    table, ids = data.traits, set(data.catalogue.ids)
    notes = []
    strays = sorted(set(table) - ids)
    if strays:
        shown = []
        for sid in strays[:5]:
            near = difflib.get_close_matches(sid, sorted(ids), n=1, cutoff=0.8)
            shown.append(f"{sid!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        more = f" and {len(strays) - 5} more" if len(strays) > 5 else ""
        notes.append(
            f"traits.csv: {len(strays)} row(s) name no catalogue species, so they are not "
            f"used: {', '.join(shown)}{more}"
        )
    used = {data.items[i].species_id for i in (*split.train, *split.test, *split.val)}
    bare = sorted(used - set(table))
    if bare:
        more = f" and {len(bare) - 5} more" if len(bare) > 5 else ""
        notes.append(
            f"traits.csv: {len(bare)} species of the split's recordings have no row, so "
            f"their recordings are left out of every trait: {', '.join(bare[:5])}{more}"
        )
    columns = {c for row in table.values() for c in row}
    absent = [t.name for t in data.schema.traits if columns and t.name not in columns]
    if absent:
        notes.append(
            f"traits.csv: no column for {len(absent)} trait(s) of schema "
            f"{data.schema.name}: {', '.join(absent)}; they are not probed"
        )
    return notes


def probe_markdown(results: dict) -> str:
    lines = [f"# Trait probe: {results['source']}", ""]
    if "split" in results:
        sp = results["split"]
        params = ", ".join(f"{k} {v}" for k, v in sp["params"].items())
        lines += [
            f"Data: {results['data']}; split: {sp['unseen_species']} unseen and "
            f"{sp['seen_species']} seen species ({params}; {sp.get('source', '?')}); heads fit on "
            f"{results['train_recordings']} training recordings.",
            "",
        ]
    for note in results.get("trait_table_notes", []):
        lines += [f"**Warning**: {note}.", ""]
    if "baselines" in results:
        b = results["baselines"]
        lines += [
            f"Baselines: categorical traits, {b['categorical']}; multi-label traits, "
            f"{b['multilabel']} (probe.json keeps the label-frequency prior as prior_mAP, "
            "which uninformative scores beat in most draws).",
            "",
        ]
    for name in ("unseen", "seen"):
        if name not in results:
            continue
        r = results[name]
        chance = (  # probes written before 2026-11-29 have no chance figures
            f"; the best guess with no information (also a guess at the training "
            f"frequencies, and 1/K, for categorical traits) on {r['beats_chance']}"
            f"/{r['n_traits']}"
            if "beats_chance" in r
            else ""
        )
        lines += [
            f"## {name} species ({r['recordings']} recordings): probe beats baseline on "
            f"{r['beats_baseline']}/{r['n_traits']} traits{chance}",
            "",
            "| trait | n | metric | probe | baseline | chance | macro-F1 | baseline macro-F1 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for trait, s in r["traits"].items():
            m, f1 = score_keys(s)
            guess = [s[k] for k in ("chance_accuracy", "uniform_accuracy") if k in s]
            lines.append(
                f"| {trait} | {s['n']} | {m} | {s[m]:.3f} | {s['baseline_' + m]:.3f} "
                f"| {f'{max(guess):.3f}' if guess else '-'} "
                f"| {s[f1]:.3f} | {s['baseline_' + f1]:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)
