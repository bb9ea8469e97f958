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
