"""Species and taxon text embeddings for a bundle."""

from __future__ import annotations

from typing import cast

import numpy as np

from animalclap_edge.contracts.catalogue import TAXON_LEVELS, Catalogue
from animalclap_edge.contracts.prompts import Template, render, taxon_prompt
from training.model import LoadedClap, text_embeddings


def species_embeddings(
    loaded: LoadedClap, catalogue: Catalogue, templates: list[Template]
) -> np.ndarray:
    """(N, D) unit rows. With several templates, the normalised mean (a prompt ensemble)."""
    acc: np.ndarray | None = None
    for t in templates:
        e = text_embeddings(loaded, [render(sp, t) for sp in catalogue]).numpy()
        acc = e if acc is None else acc + e
    # templates holds one at least (the CLI takes one or more): acc is an array here
    return _unit(cast(np.ndarray, acc))


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


def write_text_side(
    checkpoint: str, catalogue_csv: str, out: str, templates: list[str], overwrite: bool = False
) -> dict:
    """The text files of a bundle, under a bundle's names: species.csv, text_embeddings.npy,
    taxa.csv and taxon_embeddings.npy (fp16, unit rows), ready to copy into one."""
    from pathlib import Path

    from animalclap_edge.contracts import bundle as B
    from export.checks import check_checkpoint, named
    from export.writer import write_taxa_csv
    from training.model import load_clap

    folder = Path(out)
    # species_embeddings.npy: what embed wrote before it took a bundle's names
    held = [n for n in (B.TEXT_EMBEDDINGS, "species_embeddings.npy") if (folder / n).exists()]
    if held and not overwrite:
        raise FileExistsError(
            f"{folder} already holds species embeddings; pass --overwrite to replace them"
        )
    check_checkpoint(checkpoint)
    try:
        catalogue = Catalogue.from_csv(catalogue_csv)
    except ValueError as e:
        raise named("--catalogue", catalogue_csv, e) from e
    parsed = [Template.parse(t) for t in templates]  # a bad template: before any folder
    loaded = load_clap(checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    species = species_embeddings(loaded, catalogue, parsed)
    taxa, taxa_emb = taxon_embeddings(loaded, catalogue)
    np.save(folder / B.TEXT_EMBEDDINGS, species.astype(np.float16), allow_pickle=False)
    np.save(folder / B.TAXON_EMBEDDINGS, taxa_emb.astype(np.float16), allow_pickle=False)
    write_taxa_csv(folder / B.TAXA, taxa)
    catalogue.to_csv(folder / B.SPECIES)
    return {"species": len(catalogue), "taxa": len(taxa), "dim": int(species.shape[1]), "out": out}
