"""Ecological trait schema as data, and per-species trait tables.

A schema is a YAML/JSON file listing traits; each is `categorical` (exactly one
value per species) or `multilabel` (any subset of its values, one binary output
per value). Trait heads are one linear layer over the embedding whose outputs
are the traits' value slots concatenated in schema order: weight (D, n_outputs).

Species trait tables are CSV: `species_id` then one column per trait; multi-label
values joined by ';'; an empty cell means unknown (masked out of training and
scoring of that trait).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

TraitKind = Literal["categorical", "multilabel"]
DEFAULT_SCHEMA_RESOURCE = "trait_schema.yaml"


class TraitSchemaError(ValueError):
    """Invalid schema or trait table; the message names the file, trait and problem."""


@dataclass(frozen=True)
class Trait:
    name: str
    kind: TraitKind
    values: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class TraitSchema:
    name: str
    traits: tuple[Trait, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for t in self.traits:
            if t.name in seen:
                raise TraitSchemaError(f"schema {self.name}: duplicate trait {t.name!r}")
            seen.add(t.name)
            if t.kind not in ("categorical", "multilabel"):
                raise TraitSchemaError(
                    f"schema {self.name}: trait {t.name!r} has kind {t.kind!r}; "
                    "use 'categorical' or 'multilabel'"
                )
            if len(t.values) < 2 or len(set(t.values)) != len(t.values):
                raise TraitSchemaError(
                    f"schema {self.name}: trait {t.name!r} needs at least two distinct values"
                )

    @property
    def n_outputs(self) -> int:
        return sum(len(t.values) for t in self.traits)

    def slices(self) -> dict[str, slice]:
        """Each trait's slot range in the concatenated head output."""
        out, start = {}, 0
        for t in self.traits:
            out[t.name] = slice(start, start + len(t.values))
            start += len(t.values)
        return out

    def trait(self, name: str) -> Trait:
        for t in self.traits:
            if t.name == name:
                return t
        raise KeyError(f"trait {name!r} is not in schema {self.name}")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "traits": [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "values": list(t.values),
                    "description": t.description,
                }
                for t in self.traits
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "<schema>") -> TraitSchema:
        if not isinstance(d, Mapping) or not isinstance(d.get("traits"), list):
            raise TraitSchemaError(f"{source}: expected a mapping with a 'traits' list")
        traits = []
        for i, t in enumerate(d["traits"]):
            unknown = set(t) - {"name", "kind", "values", "description"}
            if unknown:
                raise TraitSchemaError(
                    f"{source}: traits[{i}]: unknown key(s) {sorted(unknown)}; "
                    "allowed: name, kind, values, description"
                )
            try:
                traits.append(
                    Trait(
                        name=str(t["name"]),
                        kind=t["kind"],
                        values=tuple(str(v) for v in t["values"]),
                        description=str(t.get("description", "")),
                    )
                )
            except KeyError as e:
                raise TraitSchemaError(f"{source}: traits[{i}]: missing key {e}") from None
        return cls(name=str(d.get("name", Path(source).stem)), traits=tuple(traits))

    @classmethod
    def load(cls, path: str | Path) -> TraitSchema:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise TraitSchemaError(f"{path.name}: cannot read trait schema: {e}") from e
        return cls.from_dict(data, source=path.name)

    @classmethod
    def default(cls) -> TraitSchema:
        """The 22-trait schema shipped with the package (animalclap_edge/data)."""
        ref = resources.files("animalclap_edge.data").joinpath(DEFAULT_SCHEMA_RESOURCE)
        return cls.from_dict(yaml.safe_load(ref.read_text(encoding="utf-8")), "trait_schema.yaml")

    # -- species trait tables -------------------------------------------------

    def encode(
        self, table: Mapping[str, Mapping[str, Iterable[str] | str]], species_ids: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Targets for trait heads.

        Returns `targets` float32 (N, n_outputs) (one-hot for categorical, multi-hot
        for multi-label) and `known` bool (N, n_traits): False where the trait is unknown.
        """
        targets = np.zeros((len(species_ids), self.n_outputs), np.float32)
        known = np.zeros((len(species_ids), len(self.traits)), bool)
        slices = self.slices()
        for i, sid in enumerate(species_ids):
            row = table.get(sid, {})
            for j, t in enumerate(self.traits):
                raw = row.get(t.name)
                vals = [raw] if isinstance(raw, str) else list(raw or [])
                vals = [v for v in vals if v]
                if not vals:
                    continue
                bad = [v for v in vals if v not in t.values]
                if bad:
                    raise TraitSchemaError(
                        f"trait table (traits.csv), species {sid}: trait {t.name!r}: "
                        f"value(s) {bad} not in schema values {list(t.values)} "
                        f"({self.name}); correct the cell, or leave it empty for unknown"
                    )
                if t.kind == "categorical" and len(vals) != 1:
                    raise TraitSchemaError(
                        f"trait table (traits.csv), species {sid}: categorical trait "
                        f"{t.name!r} needs one value, got {vals}"
                    )
                for v in vals:
                    targets[i, slices[t.name].start + t.values.index(v)] = 1.0
                known[i, j] = True
        return targets, known


TraitTable = dict[str, dict[str, list[str]]]


def read_trait_table(path: str | Path, schema: TraitSchema) -> TraitTable:
    """Read a species trait CSV; unknown trait columns are refused by name."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if "species_id" not in cols:
            raise TraitSchemaError(f"{path.name}: needs a 'species_id' column")
        names = {t.name for t in schema.traits}
        unknown = [c for c in cols if c != "species_id" and c not in names]
        if unknown:
            raise TraitSchemaError(
                f"{path.name}: column(s) {unknown} are not traits of schema {schema.name}"
            )
        return {
            r["species_id"]: {
                c: [v for v in (r[c] or "").split(";") if v] for c in cols if c != "species_id"
            }
            for r in reader
        }


def write_trait_table(path: str | Path, table: TraitTable, schema: TraitSchema) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["species_id", *(t.name for t in schema.traits)])
        for sid, row in table.items():
            w.writerow([sid, *(";".join(row.get(t.name, [])) for t in schema.traits)])
