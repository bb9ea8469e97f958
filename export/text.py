"""Species and taxon text embeddings for a bundle."""

from __future__ import annotations

import numpy as np

from animalclap_edge.contracts.catalogue import TAXON_LEVELS, Catalogue
from animalclap_edge.contracts.prompts import Template, render, taxon_prompt
from training.model import LoadedClap, text_embeddings


def species_embeddings(
    loaded: LoadedClap, catalogue: Catalogue, templates: list[Template]
) -> np.ndarray:
    """(N, D) unit rows. With several templates, the normalised mean (a prompt ensemble)."""
    acc = None
    for t in templates:
        e = text_embeddings(loaded, [render(sp, t) for sp in catalogue]).numpy()
        acc = e if acc is None else acc + e
    return _unit(acc)


def taxon_embeddings(
    loaded: LoadedClap, catalogue: Catalogue
) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Every genus/family/order/class in the catalogue, as truncated Tax prompts."""
    taxa, prompts = [], []
    for level in TAXON_LEVELS:
        first: dict[str, str] = {}
        for sp in catalogue:
            first.setdefault(sp.taxon(level), taxon_prompt(sp, level))
        for name in sorted(first):
            taxa.append((level, name))
            prompts.append(first[name])
    return taxa, _unit(text_embeddings(loaded, prompts).numpy())


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
