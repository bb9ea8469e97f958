"""Zero-shot species accuracy: audio embeddings against prompt embeddings."""

from __future__ import annotations

import numpy as np

from animalclap_edge.contracts.catalogue import Catalogue
from animalclap_edge.contracts.prompts import Template, render
from training.model import LoadedClap, text_embeddings


def species_prompt_embeddings(
    loaded: LoadedClap, catalogue: Catalogue, template: Template
) -> np.ndarray:
    prompts = [render(sp, template) for sp in catalogue]
    return text_embeddings(loaded, prompts).numpy()


def topk_accuracy(
    audio: np.ndarray, text: np.ndarray, labels: np.ndarray, ks=(1, 5)
) -> dict[str, float]:
    """audio (N, D), text (S, D), labels (N,) row indices into text."""
    if len(audio) == 0:
        return {f"top{k}": float("nan") for k in ks}
    sims = audio @ text.T
    order = np.argsort(-sims, axis=1)
    return {
        f"top{k}": float(np.mean([labels[i] in order[i, :k] for i in range(len(labels))]))
        for k in ks
    }
