"""The backend role: windows of raw audio in, unit embeddings out."""

from __future__ import annotations

from typing import Protocol

import numpy as np

# How far a row's norm may be from 1: fp16 and int8 engines land within 1e-3 of it;
# a graph that lost its normalisation (or a backend returning logits) is far off.
UNIT_NORM_TOLERANCE = 0.02


class BackendError(RuntimeError):
    """The backend cannot run here, or gave what no backend may give; the message says
    which backend, why, and what to do."""


class EmbeddingBackend(Protocol):
    """`select_backend` picks one; `Detector(bundle, config, backend=...)` takes your own.

    `embed` receives the batcher's buffer, reused for the next batch: copy what you
    keep. Batches hold 1 to the config's `backend.batch_size` windows. `close` may be called more
    than once. Raise `BackendError` for a backend that cannot run (the CLI says it in
    one line); what `embed` returns is checked by `checked_embeddings`."""

    name: str  # e.g. "onnxruntime-cpu"

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """(B, window_samples) float32 at the bundle's rate -> (B, D) float32, unit rows."""
        ...

    def close(self) -> None: ...


def checked_embeddings(name: str, emb: object, n: int, dim: int) -> np.ndarray:
    """`emb` if it is what a backend must give for `n` windows: (n, dim) finite rows of
    unit norm; else BackendError naming backend `name`. Rows of norm 7 were scored as
    confident detections, NaN rows as silence, and a short batch as a zip() error."""
    arr = np.asarray(emb)
    if arr.shape != (n, dim):
        raise BackendError(
            f"backend {name} returned embeddings of shape {arr.shape} for {n} windows; "
            f"expected ({n}, {dim}) (the bundle's embedding_dim): the backend or its "
            "engine does not match this bundle"
        )
    if n == 0:
        return arr.astype(np.float32, copy=False)
    norms = np.linalg.norm(arr, axis=1)
    if not np.all(np.isfinite(norms)):
        bad = int(np.sum(~np.isfinite(norms)))
        raise BackendError(
            f"backend {name} returned non-finite embeddings (NaN/Inf) for {bad} of {n} "
            "windows: an engine overflowing in fp16, or a broken build; try precision "
            "fp32 or another backend"
        )
    off = np.abs(norms - 1.0)
    if off.max() > UNIT_NORM_TOLERANCE:
        worst = float(norms[int(np.argmax(off))])
        raise BackendError(
            f"backend {name} returned embeddings that are not unit vectors (a norm of "
            f"{worst:.4g}): the graph must end with its L2 normalisation; re-export the "
            "bundle's encoder, or normalise in the backend"
        )
    return arr.astype(np.float32, copy=False)
