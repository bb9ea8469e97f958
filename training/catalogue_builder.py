"""A region's species catalogue from a list of names (`animalclap-train catalogue`).

A regional team knows its species by name, not by taxonomy rows. Each name (a
scientific name, a common name only one species has, or an eBird code; any case,
spaces collapsed) is looked up in the eBird 2024 taxonomy (`birdnames`) and the
curated non-bird list the benchmark ships, and written with its order, family and
genus as the catalogue the zero-shot bundle (`animalclap-export bundle --catalogue`)
and fine-tuning (`--data`) take. Species neither source has are written by hand in a
CSV of the same columns and given with `also`.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from animalclap_edge.contracts.catalogue import Catalogue, CatalogueError, Species

SOURCES = "eBird 2024 or the curated non-bird list"


@dataclass(frozen=True)
class Built:
    catalogue: Catalogue
    skipped: list[str]  # unknown names left out (skip_unknown), with where and why
    repeats: list[str]  # names of a species already listed, with the line that listed it
    # looked-up species a row of `also` stands in for (same id, or a name of it), which
    # replaced which
    replaced: list[str] = field(default_factory=list)


def name_index(catalogue: Catalogue) -> dict[str, str]:
    """casefolded id, scientific name, or common name that only one species has -> id.
    Ids win over names, and scientific names over common ones ("Robin" of two
    species names neither)."""
    names: dict[str, str] = {}
    common = Counter(sp.common_name.casefold() for sp in catalogue)
    for sp in catalogue:
        if common[sp.common_name.casefold()] == 1:
            names.setdefault(sp.common_name.casefold(), sp.id)
    for sp in catalogue:
        names[sp.scientific_name.casefold()] = sp.id
    for sp in catalogue:
        names[sp.id.casefold()] = sp.id
    return names


def spaced(name: str) -> str:
    """`name` casefolded, each run of spaces, `_` and `-` one space: "Pin-tailed_Sandgrouse",
    "pin tailed sandgrouse" and "PIN-TAILED SANDGROUSE" read alike."""
    return " ".join(re.split(r"[_\-\s]+", name.strip())).strip().casefold()


def loose_index(names: dict[str, str]) -> dict[str, str]:
    """`name_index`'s names as `spaced` reads them -> id. Names of two species that
    read alike once spaced ("Pin-tailed Whydah" of one, "Pin tailed Whydah" of another)
    name neither, as a common name two species share: written exactly, each is still
    its own species through `name_index`."""
    ids: dict[str, set[str]] = {}
    for name, sid in names.items():
        ids.setdefault(spaced(name), set()).add(sid)
    return {key: next(iter(s)) for key, s in ids.items() if len(s) == 1}


def reference_catalogue() -> Catalogue:
    """Every species the names are looked up in: eBird 2024's birds, then the curated
    amphibians, insects and mammals."""
    from training.benchmark.taxonomy import ebird_catalogue, nonbird_catalogue

    birds, others = ebird_catalogue(), nonbird_catalogue()
    return Catalogue([*birds, *(sp for sp in others if birds.get(sp.id) is None)], source=SOURCES)


def read_names(path: Path) -> list[tuple[int, str]]:
    """(line number, name) of a names file: one name per line; blank lines and lines
    starting with # are skipped, spaces collapsed."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--names {path}: cannot read it ({e}): give a UTF-8 text file") from e
    names = [(i, " ".join(line.split())) for i, line in enumerate(text.splitlines(), 1)]
    names = [(i, n) for i, n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError(f"--names {path}: no name in it: one species name per line")
    return names


def build_catalogue(
    names: Sequence[tuple[int, str]],
    reference: Catalogue,
    region: str | None = None,
    also: Catalogue | None = None,
    skip_unknown: bool = False,
    where: str = "names",
) -> Built:
    """The catalogue of `names` ((line, name) pairs), in their order, then `also`'s
    rows; every row gets `region` where given. A name neither `reference` nor `also`
    knows is refused, all of them in one message with the nearest names, unless
    `skip_unknown`. A row of `also` with the id of a looked-up species, or named in
    `names` by a name the reference has too, replaces that species, said in `replaced`."""
    index = name_index(reference)
    loose = loose_index(index)  # "black headed gull" is Black-headed Gull
    shared: dict[str, list[str]] = {}
    for sp in reference:
        shared.setdefault(sp.common_name.casefold(), []).append(sp.id)
    shared = {k: v for k, v in shared.items() if len(v) > 1}
    own = name_index(also) if also is not None else {}
    rows: dict[str, Species] = {}
    first_line: dict[str, int] = {}
    unknown, repeats, replaced = [], [], []
    hinted: set[str] = set()  # unknown entries that name a fix (nearest, shared name)
    said_replaced: set[str] = set()  # reference ids already said to be replaced
    for line, name in names:
        key = name.casefold()
        if also is not None and key in own:
            # the user's own row stands for it (added below); said where the name is also
            # a species of the reference, which that row then replaces
            was = index.get(key) or (None if key in shared else loose.get(spaced(name)))
            if was is not None and was not in said_replaced:
                said_replaced.add(was)
                new, old = also[also.index(own[key])], reference[reference.index(was)]
                replaced.append(_replaced(new, old, name, line))
            continue
        sid = index.get(key)
        if sid is None and key in shared:
            labels = ", ".join(_label(reference[reference.index(i)]) for i in shared[key])
            unknown.append(
                f"{name!r} (line {line}; the common name of {len(shared[key])} species: "
                f"{labels}; give the scientific name)"
            )
            hinted.add(unknown[-1])
            continue
        if sid is None:
            sid = loose.get(spaced(name))
        if sid is None:
            said, near = _unknown(name, line, key, index, reference)
            unknown.append(said)
            if near:
                hinted.add(said)
            continue
        if sid in rows:
            repeats.append(f"{name!r} (line {line}) is {sid}, already line {first_line[sid]}")
            continue
        rows[sid], first_line[sid] = reference[reference.index(sid)], line
    if unknown and not skip_unknown:
        # names with a hint first (a typo's nearest name, a shared common name): the ones
        # a user can fix from this line; names nothing resembles are cut off first
        first = sorted(unknown, key=lambda u: u not in hinted)
        shown = "; ".join(first[:10]) + (
            f"; and {len(unknown) - 10} more with no near match" if len(unknown) > 10 else ""
        )
        raise ValueError(
            f"{len(unknown)} name(s) in {where} match no species in {SOURCES}: {shown}. "
            "Correct them, write their rows in a CSV given with --also, or leave them out "
            "with --skip-unknown"
        )
    for sp in also or ():
        clash = rows.get(sp.id)
        if clash is not None and clash.scientific_name != sp.scientific_name:
            raise ValueError(
                f"--also: id {sp.id} is {sp.scientific_name!r} there and "
                f"{clash.scientific_name!r} in {SOURCES}: give your row another id"
            )
        if clash is not None and clash.id not in said_replaced:
            said_replaced.add(clash.id)
            line = first_line[clash.id]
            replaced.append(_replaced(sp, clash, dict(names).get(line, clash.id), line))
        rows[sp.id] = sp
    species = [replace(sp, regions=(region,)) if region else sp for sp in rows.values()]
    return Built(Catalogue(species, source=where).checked(), unknown, repeats, replaced)


def _replaced(new: Species, old: Species, name: str, line: int) -> str:
    return (
        f"{name!r} (line {line}): the --also row {new.id} ({new.scientific_name}) replaces "
        f"{old.id} ({old.scientific_name}) of {SOURCES}"
    )


def _unknown(
    name: str, line: int, key: str, index: dict[str, str], reference: Catalogue
) -> tuple[str, bool]:
    """`'name' (line N; nearest: ...)` for a name no species has (`nearest`), with what
    a genus alone ("Chorthippus sp.") needs; and whether it names any fix."""
    hints = [h] if (h := nearest(key, index, reference)) else []
    words = name.split()
    if genus_only(key):
        known = any(sp.genus.casefold() == words[0].casefold() for sp in reference)
        hints.append(
            f"{words[0]} alone is a genus, not a species: "
            + ("name one of its species, or " if known else "")
            + f"write a row for the genus (scientific_name {name!r}, genus {words[0]}) in a "
            "CSV given with --also"
        )
    said = f"{name!r} (line {line}" + "".join(f"; {h}" for h in hints) + ")"
    return said, bool(hints)


_SP = ("sp.", "spp.", "sp", "spp")


def genus_only(key: str) -> bool:
    """ "Chorthippus sp." (or spp.): a genus, as checklists write one."""
    words = key.split()
    return len(words) == 2 and words[1].casefold() in _SP


def nearest(key: str, index: dict[str, str], reference: Catalogue) -> str:
    """`nearest: ...` for `key` (a casefolded name no species of `index` has; `index`:
    name -> id, as `name_index` or `loose_index`), "" when nothing resembles it: a
    subspecies' species ("Bombina variegata pachypus": Bombina variegata) and a genus'
    species ("Chorthippus sp."), then names that hold it as a word ("Blackbird":
    Eurasian Blackbird, ...), then spellings close to it (a typo)."""
    words = key.split()
    first = []
    if len(words) > 2 and (sid := index.get(" ".join(words[:2]))) is not None:
        first.append(sid)
    if genus_only(key):
        first += [sp.id for sp in reference if sp.genus.casefold() == words[0]]
    word = re.compile(rf"(?<![\w-]){re.escape(key)}(?![\w-])")
    holding = sorted({index[n] for n in index if word.search(n)})
    close = [index[c] for c in difflib.get_close_matches(key, index.keys(), n=3, cutoff=0.8)]
    ids = list(dict.fromkeys([*first, *holding, *close]))
    shown = [_label(reference[reference.index(sid)]) for sid in ids[:3]]
    more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
    return f"nearest: {', '.join(shown)}{more}" if shown else ""


def _label(sp: Species) -> str:
    return f"{sp.scientific_name} ({sp.common_name}, {sp.id})"


def load_also(path: str | Path | None) -> Catalogue | None:
    """The hand-written rows of species neither source has, checked as a catalogue."""
    if path is None:
        return None
    try:
        return Catalogue.from_csv(path)
    except CatalogueError as e:
        raise ValueError(f"--also: {e}") from None


def summary(built: Built, out: Path, counts: Iterable[tuple[str, int]]) -> str:
    parts = ", ".join(f"{n} {what}" for what, n in counts if n)
    lines = [f"-> {out}: {len(built.catalogue)} species ({parts})"]
    lines += [f"  left out (--skip-unknown): {s}" for s in built.skipped]
    lines += [f"  listed twice: {r}" for r in built.repeats]
    lines += [f"  replaced by --also: {r}" for r in built.replaced]
    return "\n".join(lines)
