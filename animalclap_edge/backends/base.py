"""The backend role: windows of raw audio in, unit embeddings out."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class EmbeddingBackend(Protocol):
    name: str  # e.g. "onnxruntime-cpu"

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """(B, window_samples) float32 at the bundle's rate -> (B, D) float32, unit rows."""
        ...

    def close(self) -> None: ...
