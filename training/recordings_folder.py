"""A recordings folder's recordings.csv from how its files are laid out
(`animalclap-train recordings`), so that a region's own recordings (not Creative
Commons, so not for `prepare`) can be fine-tuned on without typing a row per file.

- species: the nearest folder above a file that names a catalogue species (its id,
  scientific name or a common name only one species has; any mix of spaces, `_` and
  `-` between its words, on either side, in any case; two species whose names differ
  only in those name neither that way),
  else a part of the file name between " - " (xeno-canto's "XC123 - Eurasian
  Blackbird - Turdus merula.mp3");
- site: the top folder under the root where it is not the species folder
  (ROOT/<site>/<species>/...), else the one `site` given;
- date: the day in the file name (AudioMoth and Song Meter `YYYYMMDD_HHMMSS`, or
  `YYYY-MM-DD` / `YYYYMMDD` alone), else none.

Site and day group recordings for the train/val split (a site's day never on both
sides); recordings without a day group by site alone.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from animalclap_edge.audio.decode import SUPPORTED_EXTENSIONS
from animalclap_edge.contracts.catalogue import Catalogue
from animalclap_edge.sources.files import time_from_name
from training.catalogue_builder import loose_index, name_index, spaced

_DAY_ALONE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")


@dataclass(frozen=True)
class Row:
    path: str  # relative to the root, with /
    species_id: str
    site: str
    date: str  # YYYY-MM-DD, or "" where the name holds none


@dataclass(frozen=True)
class Scan:
    rows: list[Row]
    unplaced: list[str]  # audio files no folder or name part placed with a species


def day_in_name(name: str) -> str:
    """YYYY-MM-DD of the first real date in a file name, else ""."""
    t = time_from_name(name)
    if t is not None:
        return t.date().isoformat()
    for m in _DAY_ALONE.finditer(name):
        y, mo, d = (int(g) for g in m.groups())
        if 1900 <= y <= 2100 and 1 <= mo <= 12 and 1 <= d <= 31:
            return f"{y:04d}-{mo:02d}-{d:02d}"
    return ""


def scan(root: Path, catalogue: Catalogue, site: str = "") -> Scan:
    """Every audio file under `root` (sub-folders included, sorted), placed by its layout."""
    names = name_index(catalogue)
    loose = loose_index(names)

    def species_of(text: str) -> str | None:
        sid = names.get(text.strip().casefold())
        return sid if sid is not None else loose.get(spaced(text))

    rows, unplaced = [], []
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS
    )
    for path in files:
        rel = path.relative_to(root)
        folders = rel.parts[:-1]
        # the nearest folder naming a species (its depth, its id), else a name part
        at, sid = next(
            ((i, s) for i in reversed(range(len(folders))) if (s := species_of(folders[i]))),
            (None, None),
        )
        if sid is None:
            sid = next((s for part in path.stem.split(" - ") if (s := species_of(part))), None)
        if sid is None:
            unplaced.append(rel.as_posix())
            continue
        where = folders[0] if folders and at != 0 else site
        rows.append(Row(rel.as_posix(), sid, where, day_in_name(path.name)))
    return Scan(rows, unplaced)


def write_recordings_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "species_id", "site", "date"])
        w.writerows((r.path, r.species_id, r.site, r.date) for r in rows)


def summary(result: Scan, out: Path, catalogue: Catalogue) -> str:
    """What was written, and what the split will make of it."""
    rows = result.rows
    species = Counter(r.species_id for r in rows)
    site_days: dict[str, set[tuple[str, str]]] = {}
    for r in rows:
        site_days.setdefault(r.species_id, set()).add((r.site, r.date))
    lines = [
        f"-> {out}: {len(rows)} recordings of {len(species)} of the catalogue's "
        f"{len(catalogue)} species, {len({r.site for r in rows})} site(s), "
        f"{sum(bool(r.date) for r in rows)} with a day in their name"
    ]
    if undated := sum(not r.date for r in rows):
        lines.append(
            f"  {undated} recording(s) have no day in their name: they group by site alone, "
            "so the train/val split holds out whole sites of them"
        )
    if one := sorted(s for s, days in site_days.items() if len(days) < 2):
        lines.append(
            f"  {len(one)} species recorded on one site-day only, none of it can be held out "
            f"to score: {', '.join(one[:10])}" + (" ..." if len(one) > 10 else "")
        )
    if missing := [s for s in catalogue.ids if s not in species]:
        lines.append(
            f"  {len(missing)} catalogue species have no recording: {', '.join(missing[:10])}"
            + (" ..." if len(missing) > 10 else "")
        )
    lines += [f"  left out (--skip-unplaced): {p}" for p in result.unplaced]
    return "\n".join(lines)
