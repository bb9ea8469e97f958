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


def write_text_side(
    checkpoint: str, catalogue_csv: str, out: str, templates: list[str], overwrite: bool = False
) -> dict:
    """species_embeddings.npy, taxon_embeddings.npy (fp16, unit rows), taxa.json, species.csv."""
    import json
    from pathlib import Path

    from export.checks import check_checkpoint, named
    from training.model import load_clap

    folder = Path(out)
    if (folder / "species_embeddings.npy").exists() and not overwrite:
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
    np.save(folder / "species_embeddings.npy", species.astype(np.float16))
    np.save(folder / "taxon_embeddings.npy", taxa_emb.astype(np.float16))
    (folder / "taxa.json").write_text(json.dumps(taxa), encoding="utf-8")
    catalogue.to_csv(folder / "species.csv")
    return {"species": len(catalogue), "taxa": len(taxa), "dim": int(species.shape[1]), "out": out}
