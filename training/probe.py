"""Linear trait probes on frozen embeddings: the heads that bundles ship.

One linear layer over the (frozen, projected, normalised) audio embedding;
outputs are the schema's value slots concatenated. Cross-entropy on each
categorical trait's slice, binary logistic loss on each multi-label value;
unknown traits are masked out. Five epochs, as in the paper.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from animalclap_edge.contracts.traits import TraitSchema


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


def score_trait_heads(
    emb: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    schema: TraitSchema,
    weight: np.ndarray,
    bias: np.ndarray,
    train_targets: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Per trait: categorical -> accuracy, macro_f1, majority_accuracy; multi-label -> mAP, f1."""
    logits = emb @ weight + bias
    ref = targets if train_targets is None else train_targets
    out = {}
    for j, (t, s) in enumerate(zip(schema.traits, schema.slices().values(), strict=True)):
        mask = known[:, j]
        if not mask.any():
            continue
        yt, lt = targets[mask, s], logits[mask, s]
        if t.kind == "categorical":
            true, pred = yt.argmax(1), lt.argmax(1)
            majority = int(ref[:, s].sum(0).argmax())
            out[t.name] = {
                "accuracy": float((true == pred).mean()),
                "macro_f1": _macro_f1(true, pred, len(t.values)),
                "majority_accuracy": float((true == majority).mean()),
            }
        else:
            out[t.name] = {
                "mAP": _mean_ap(yt, lt),
                "f1": _micro_f1(yt > 0.5, lt > 0),
                "n": int(mask.sum()),
            }
    return out


def _macro_f1(true: np.ndarray, pred: np.ndarray, k: int) -> float:
    f1s = []
    for c in range(k):
        tp = np.sum((pred == c) & (true == c))
        fp, fn = np.sum((pred == c) & (true != c)), np.sum((pred != c) & (true == c))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")


def _micro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    tp, fp, fn = np.sum(pred & true), np.sum(pred & ~true), np.sum(~pred & true)
    return float(2 * tp / (2 * tp + fp + fn)) if (tp + fp + fn) else float("nan")


def _mean_ap(y: np.ndarray, s: np.ndarray) -> float:
    aps = []
    for c in range(y.shape[1]):
        pos = y[:, c] > 0.5
        if not pos.any():
            continue
        order = np.argsort(-s[:, c])
        hits = pos[order]
        prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float(np.sum(prec * hits) / hits.sum()))
    return float(np.mean(aps)) if aps else float("nan")
