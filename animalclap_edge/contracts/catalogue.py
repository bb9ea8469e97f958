"""Species catalogue: the table that names what a model can detect.

CSV columns (header required, order free):
    id, scientific_name, common_name, class, order, family, genus[, regions]
`regions` is an optional ';'-separated list of region tags (e.g. "EU;NA").
Row order is significant: it is the row order of the text-embedding matrix.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

# Broad to narrow; the species itself (the binomial) comes after genus.
TAXON_LEVELS: tuple[str, ...] = ("class", "order", "family", "genus")
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "scientific_name", "common_name", *TAXON_LEVELS)


def _genus_word(name: str) -> str:
    """The genus a scientific name (or a genus cell) starts with, compared as written by
    the nomenclature codes: without "Candidatus" (prokaryotes), a hybrid sign
    ("× Crataegomespilus"), or a subgenus in parentheses ("Aedes (Stegomyia)")."""
    words = [w for w in name.replace("×", " ").split() if w.casefold() != "candidatus"]
    return words[0].casefold() if words else ""


def _one_spaced(cell: str) -> str:
    """A name cell without spaces around it and with runs of spaces inside it collapsed:
    "Numida  meleagris" (a double space typed in a spreadsheet) is "Numida meleagris"."""
    return " ".join(cell.split())


class CatalogueError(ValueError):
    """A catalogue that cannot be used; the message names the file/row and the problem."""


@dataclass(frozen=True)
class Species:
    id: str
    scientific_name: str
    common_name: str
    class_: str
    order: str
    family: str
    genus: str
    regions: tuple[str, ...] = field(default=())

    def taxon(self, level: str) -> str:
        """Name at a taxonomic level ("class", "order", "family", "genus" or "species")."""
        if level == "species":
            return self.scientific_name
        if level == "class":
            return self.class_
        if level in ("order", "family", "genus"):
            return getattr(self, level)
        raise KeyError(
            f"unknown taxonomic level {level!r}; use one of {(*TAXON_LEVELS, 'species')}"
        )

    def lineage(self) -> tuple[str, ...]:
        """(class, order, family, genus, binomial), broad to narrow."""
        return (self.class_, self.order, self.family, self.genus, self.scientific_name)

    def to_row(self) -> dict[str, str]:
        return {
            "id": self.id,
            "scientific_name": self.scientific_name,
            "common_name": self.common_name,
            "class": self.class_,
            "order": self.order,
            "family": self.family,
            "genus": self.genus,
            "regions": ";".join(self.regions),
        }


class Catalogue(Sequence[Species]):
    """An ordered, validated list of species with unique ids."""

    def __init__(self, species: Iterable[Species], source: str = "<catalogue>") -> None:
        self._species: tuple[Species, ...] = tuple(species)
        self.source = source
        self._index: dict[str, int] = {}
        for i, sp in enumerate(self._species):
            where = f"{source}: row {i + 1} ({sp.id or '?'})"
            if not sp.id:
                raise CatalogueError(f"{where}: empty id")
            if sp.id in self._index:
                raise CatalogueError(f"{where}: duplicate id {sp.id!r}; ids must be unique")
            for level in ("scientific_name", "common_name", "class_", "order", "family", "genus"):
                if not getattr(sp, level).strip():
                    name = level.rstrip("_")
                    raise CatalogueError(
                        f"{where}: missing {name}; every species needs its full taxonomy "
                        "(class, order, family, genus) for taxonomy-aware prompts"
                    )
            self._index[sp.id] = i

    def check_one_row_per_species(self) -> Catalogue:
        """Refuse one binomial under two ids (identical prompts, scores split between
        them); returns self."""
        named: dict[str, str] = {}
        for sp in self._species:
            first = named.setdefault(sp.scientific_name.casefold(), sp.id)
            if first != sp.id:
                raise CatalogueError(
                    f"{self.source}: {sp.id!r} and {first!r} are both {sp.scientific_name!r}; "
                    "give each species one row and one id"
                )
        return self

    def check_genus_opens_binomial(self) -> Catalogue:
        """Refuse a genus that is not the binomial's first word (a typo, or cells shifted
        by an unquoted comma in a row that leaves off `regions`, which the cell count
        cannot tell); returns self. Prompts name the genus, so it must be the species'."""
        for i, sp in enumerate(self._species):
            if _genus_word(sp.scientific_name) != _genus_word(sp.genus):
                raise CatalogueError(
                    f"{self.source}: row {i + 1} ({sp.id}): genus {sp.genus!r} is not the first "
                    f"word of {sp.scientific_name!r}: correct the genus (a typo), or quote a "
                    'cell that holds a comma ("Blackbird, Eurasian"), whose cells after it '
                    "shifted"
                )
        return self

    def not_one_species(self) -> list[str]:
        """Rows that name more or less than one species, as eBird and other checklists
        export them: a genus ("Cisticola sp."), a pair ("Cisticola chiniana/hunteri") or
        a subspecies beside its species ("Numida meleagris reichenowi"). Each competes on
        a recorder with the species it overlaps and splits their probability; data
        labelled to genus may want the first. One line per row; empty when none."""
        binomials = {
            sp.scientific_name.casefold() for sp in self if len(sp.scientific_name.split()) == 2
        }
        notes = []
        for i, sp in enumerate(self._species):
            name = sp.scientific_name
            words = [w for w in name.split() if w.casefold() != "candidatus" and w != "×"]
            if "/" in name:
                why = "names two species or more"
            elif len(words) < 2 or words[-1].casefold() in ("sp.", "spp.", "sp", "spp"):
                why = "names a genus, not a species"
            elif (
                len(words) > 2
                and words[1][:1] != "("
                and " ".join(words[:2]).casefold() in binomials
            ):
                why = f"is a subspecies of {' '.join(words[:2])}, also a row"
            else:
                continue
            notes.append(f"{self.source}: row {i + 1} ({sp.id}) {name!r} {why}")
        return notes

    def checked(self) -> Catalogue:
        """The checks for a catalogue going into training or export; returns self. A
        recorder loading a bundle skips them: one built before a check must still load."""
        return self.check_one_row_per_species().check_genus_opens_binomial()

    def __len__(self) -> int:
        return len(self._species)

    @overload
    def __getitem__(self, i: int) -> Species: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Species, ...]: ...
    def __getitem__(self, i: int | slice) -> Species | tuple[Species, ...]:
        return self._species[i]

    def __iter__(self) -> Iterator[Species]:
        return iter(self._species)

    def index(self, species_id: str) -> int:  # type: ignore[override]
        try:
            return self._index[species_id]
        except KeyError:
            raise KeyError(f"species id {species_id!r} is not in {self.source}") from None

    def get(self, species_id: str) -> Species | None:
        i = self._index.get(species_id)
        return None if i is None else self._species[i]

    @property
    def ids(self) -> list[str]:
        return [sp.id for sp in self._species]

    def taxa(self, level: str) -> list[str]:
        """Sorted unique names at a level."""
        return sorted({sp.taxon(level) for sp in self._species})

    def subset(self, ids: Iterable[str]) -> Catalogue:
        return Catalogue([self._species[self.index(i)] for i in ids], source=self.source)

    def in_regions(self, regions: Iterable[str]) -> Catalogue:
        wanted = set(regions)
        return Catalogue([s for s in self._species if wanted & set(s.regions)], self.source)

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=[*REQUIRED_COLUMNS, "regions"], lineterminator="\n")
            w.writeheader()
            for sp in self._species:
                w.writerow(sp.to_row())

    @classmethod
    def from_csv(cls, path: str | Path, strict: bool = True) -> Catalogue:
        """Read a catalogue CSV (UTF-8, a spreadsheet's byte-order mark allowed). A row
        with more cells than the header, or too few for its required columns, is
        refused by line: the extra cells of an unquoted comma would shift every taxon
        after it. With `strict`, also the checks of `checked`."""
        path = Path(path)
        species = []
        try:
            # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                # "id, scientific_name, ..." (a space after each comma) names the columns
                header = [h.strip() for h in reader.fieldnames or []]
                reader.fieldnames = header
                missing = [c for c in REQUIRED_COLUMNS if c not in header]
                if missing:
                    raise CatalogueError(
                        f"{path}: missing column(s) {', '.join(missing)} (has "
                        f"{', '.join(header) or 'none'}); a catalogue needs "
                        f"{', '.join(REQUIRED_COLUMNS)}"
                    )
                for r in reader:
                    # a row may stop short of optional columns (regions), never of
                    # required ones, and never run past the header
                    if None in r or any(r.get(c) is None for c in REQUIRED_COLUMNS):
                        cells = len(header) + len(r.get(None) or []) - list(r.values()).count(None)
                        raise CatalogueError(
                            f"{path}: line {reader.line_num} has {cells} cells, the header "
                            f"{len(header)}; quote a cell that holds a comma "
                            '("Blackbird, Eurasian") and give every column a value'
                        )
                    species.append(
                        Species(
                            id=r["id"].strip(),
                            scientific_name=_one_spaced(r["scientific_name"]),
                            common_name=_one_spaced(r["common_name"]),
                            class_=_one_spaced(r["class"]),
                            order=_one_spaced(r["order"]),
                            family=_one_spaced(r["family"]),
                            genus=_one_spaced(r["genus"]),
                            regions=tuple(
                                t.strip() for t in (r.get("regions") or "").split(";") if t.strip()
                            ),
                        )
                    )
        except UnicodeDecodeError as e:
            raise CatalogueError(
                f"{path}: not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
                'save it as UTF-8 (a spreadsheet\'s "CSV UTF-8")'
            ) from None
        except (OSError, csv.Error) as e:
            raise CatalogueError(f"{path}: cannot read catalogue: {e}") from e
        catalogue = cls(species, source=path.name)
        return catalogue.checked() if strict else catalogue
