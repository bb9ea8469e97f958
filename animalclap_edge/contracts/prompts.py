"""The five AnimalCLAP prompt templates, and taxon prompts for back-off.

Com      common name                      "Eurasian Blackbird"
Sci      scientific name                  "Turdus merula"
Tax      class order family genus binomial, broad to narrow
                                          "Aves Passeriformes Turdidae Turdus Turdus merula"
Sci+Com  "{sci} with common name {com}"
Tax+Com  "{tax} with common name {com}"

`shuffle_tax=True` shuffles the five elements of the taxonomic sequence: the
paper's ablation (Table 4), which loses accuracy. Keep it for that experiment.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from enum import Enum

from animalclap_edge.contracts.catalogue import TAXON_LEVELS, Species


class Template(str, Enum):
    COM = "com"
    SCI = "sci"
    TAX = "tax"
    SCI_COM = "sci+com"
    TAX_COM = "tax+com"

    @classmethod
    def parse(cls, name: str) -> Template:
        key = name.strip().lower()
        for t in cls:
            if t.value == key:
                return t
        allowed = ", ".join(t.value for t in cls)
        raise ValueError(f"unknown prompt template {name!r}; choose from {allowed}")


ALL_TEMPLATES: tuple[Template, ...] = tuple(Template)


def taxonomic_sequence(species: Species, rng: random.Random | None = None) -> str:
    """Broad-to-narrow lineage; with `rng`, its five elements in a shuffled order."""
    parts = list(species.lineage())
    if rng is not None:
        rng.shuffle(parts)
    return " ".join(parts)


def render(species: Species, template: Template, rng: random.Random | None = None) -> str:
    """One prompt. `rng` is used only to shuffle the taxonomy (ablation)."""
    if template is Template.COM:
        return species.common_name
    if template is Template.SCI:
        return species.scientific_name
    if template is Template.TAX:
        return taxonomic_sequence(species, rng)
    if template is Template.SCI_COM:
        return f"{species.scientific_name} with common name {species.common_name}"
    if template is Template.TAX_COM:
        return f"{taxonomic_sequence(species, rng)} with common name {species.common_name}"
    raise ValueError(f"unhandled template {template}")


def sample_prompt(
    species: Species,
    rng: random.Random,
    templates: Sequence[Template] = ALL_TEMPLATES,
    shuffle_tax: bool = False,
) -> str:
    """A training prompt: a template drawn uniformly, as in the paper."""
    template = templates[rng.randrange(len(templates))]
    return render(species, template, rng if shuffle_tax else None)


def taxon_prompt(species: Species, level: str) -> str:
    """Prompt for a higher taxon, as the Tax template truncated at `level`.

    Used for taxonomic back-off ("unknown Turdus"): "Aves Passeriformes Turdidae Turdus".
    """
    if level not in TAXON_LEVELS:
        raise ValueError(f"unknown taxonomic level {level!r}; use one of {TAXON_LEVELS}")
    depth = TAXON_LEVELS.index(level) + 1
    return " ".join(species.lineage()[:depth])
