"""--taxon above the genus: a family, order or class keeps its species, placed by a
catalogue.

A card's database records each detection's label (species code and binomial, or a
back-off taxon's name) but no taxonomy, so `report --taxon Strigiformes` could keep
only the back-off rows "unknown Strigiformes". With `--catalogue` (the catalogue CSV
the bundle was made from, or the bundle itself) each such name keeps the species of
the catalogue under it and the back-off rows of it and of every family and genus
under it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from animalclap_edge.contracts.catalogue import Catalogue, CatalogueError

_ABOVE_SPECIES = ("class", "order", "family", "genus")


class TaxonSelection(tuple[str, ...]):
    """--taxon's names (a Sequence[str], as every report function takes them) and the
    catalogue that places names above the genus, or None."""

    catalogue: Catalogue | None
    source: str  # where the catalogue came from, for the notes

    def __new__(
        cls, names: Iterable[str], catalogue: Catalogue | None = None, source: str = ""
    ) -> TaxonSelection:
        self = super().__new__(cls, tuple(names))
        self.catalogue, self.source = catalogue, source
        return self


def selection_catalogue(path: str | Path) -> Catalogue:
    """The catalogue of `path`: a catalogue CSV, or a bundle (folder or .tar). One-line
    ValueError naming the path when it is neither."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        try:
            return Catalogue.from_csv(p)
        except (CatalogueError, OSError) as e:
            raise ValueError(f"--catalogue {path}: {e}") from None
    from animalclap_edge.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(p)
    except BundleError as e:
        raise ValueError(
            f"--catalogue {path}: neither a catalogue .csv nor a bundle ({e})"
        ) from None
    return bundle.catalogue


@dataclass(frozen=True)
class Placed:
    """A name above the species in a catalogue: its level, the binomials of its
    species, and the names of the taxa under it (itself included)."""

    level: str
    species: tuple[str, ...]
    taxa: tuple[str, ...]

    def sql(self) -> tuple[str, list[object]]:
        """A condition on `detections`/`events` keeping its species and the back-off
        rows of it and its sub-taxa (json_each: a class can hold thousands of names,
        more than SQLite's limit on parameters)."""
        return (
            "(level = 'species' AND lower(scientific_name) IN (SELECT value FROM json_each(?)))"
            " OR (level != 'species' AND lower(taxon) IN (SELECT value FROM json_each(?)))",
            [
                json.dumps([s.lower() for s in self.species]),
                json.dumps([t.lower() for t in self.taxa]),
            ],
        )


def place(name: str, catalogue: Catalogue) -> Placed | None:
    """Where `name` (any case) stands above the species in `catalogue`, or None: the
    broadest level it names (a genus and a family spelt alike are rare, a class is
    never a genus)."""
    low = name.casefold()
    for i, level in enumerate(_ABOVE_SPECIES):
        under = [s for s in catalogue if s.taxon(level).casefold() == low]
        if under:
            taxa = {s.taxon(lv) for s in under for lv in _ABOVE_SPECIES[i:]}
            return Placed(level, tuple(s.scientific_name for s in under), tuple(sorted(taxa)))
    return None
