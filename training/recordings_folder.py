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
sides); recordings without a day group by site alone. Recordings shorter than
`prepare` keeps (its min_seconds) are left out and said, as are files sampled above
the model's 48 kHz (their ultrasound is not heard). A folder that names no species
says why where it nearly does: a common name several species share (their ids), or
the nearest names.
"""

from __future__ import annotations

import csv
import functools
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from animalclap_edge.audio.decode import SUPPORTED_EXTENSIONS, AudioError, band_note, probe
from animalclap_edge.config import AudioConfig
from animalclap_edge.contracts.catalogue import Catalogue
from animalclap_edge.sources.files import time_from_name
from training.catalogue_builder import loose_index, name_index, nearest, spaced
from training.prepare.decode import SAMPLE_RATE, DecodeSettings

_DAY_ALONE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")

# what `prepare` leaves out as too short (its --min-seconds default)
MIN_SECONDS = DecodeSettings().min_seconds
# what the recorder (`animalclap-edge run`) skips by default: audio.min_clip_s
RECORDER_MIN_CLIP_S = AudioConfig.model_fields["min_clip_s"].default


@dataclass(frozen=True)
class Row:
    path: str  # relative to the root, with /
    species_id: str
    site: str
    date: str  # YYYY-MM-DD, or "" where the name holds none


@dataclass(frozen=True)
class Scan:
    rows: list[Row]
    # audio files no folder or name part placed with a species; the first file of a
    # folder (or name part) that nearly names one says why, "path (folder 'X' ...)",
    # and those come first
    unplaced: list[str]
    # placed, but left out as shorter than `min_seconds`: "path (0.05 s)"
    short: list[str] = field(default_factory=list)
    min_seconds: float = MIN_SECONDS
    # rows sampled above SAMPLE_RATE, the model's: their ultrasound is not heard
    ultrasonic: list[str] = field(default_factory=list)


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


def scan(
    root: Path, catalogue: Catalogue, site: str = "", min_seconds: float = MIN_SECONDS
) -> Scan:
    """Every audio file under `root` (sub-folders included, sorted), placed by its layout.
    Placed files shorter than `min_seconds` (what `prepare` leaves out) are left out, in
    `short`; one that cannot be read stays a row, for the caller's check to name."""
    names = name_index(catalogue)
    loose = loose_index(names)
    could_be: dict[str, set[str]] = {}  # a name, spaced -> every species that has it
    for sp in catalogue:
        for name in (sp.id, sp.scientific_name, sp.common_name):
            could_be.setdefault(spaced(name), set()).add(sp.id)

    def species_of(text: str) -> str | None:
        sid = names.get(text.strip().casefold())
        return sid if sid is not None else loose.get(spaced(text))

    @functools.cache  # once per folder, not per file
    def why_not(text: str) -> str:
        """Why `text` names no species, where it nearly does; else ""."""
        ids = sorted(could_be.get(spaced(text), ()))
        if len(ids) > 1:
            return (
                f"{text!r} is ambiguous: it could be {' or '.join(ids)}; name it by one's id "
                "or scientific name"
            )
        near = nearest(spaced(text), loose, catalogue)
        return f"{text!r} names no catalogue species; {near}" if near else ""

    rows, hinted, unplaced, short, ultrasonic = [], [], [], [], []
    said: set[tuple[str, str]] = set()  # folders and name parts whose why was said
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
        parts = path.stem.split(" - ")
        if sid is None:
            sid = next((s for part in parts if (s := species_of(part))), None)
        if sid is None:
            # the nearest folder, else a name part, that nearly names a species: said
            # with the first of its files
            texts = [("folder", f) for f in reversed(folders)]
            texts += [("name part", t) for t in parts] if len(parts) > 1 else []
            why = next(((t, w) for t in texts if (w := why_not(t[1]))), None)
            if why is not None and why[0] not in said:
                said.add(why[0])
                hinted.append(f"{rel.as_posix()} ({why[0][0]} {why[1]})")
            else:
                unplaced.append(rel.as_posix())
            continue
        try:
            info = probe(path)
        except AudioError:
            info = None  # `recordings` checks every row's file, and names this one
        if info is not None and info.duration_s < min_seconds:
            short.append(f"{rel.as_posix()} ({info.duration_s:.2f} s)")
            continue
        if info is not None and info.sample_rate > SAMPLE_RATE:
            ultrasonic.append(rel.as_posix())
        where = folders[0] if folders and at != 0 else site
        rows.append(Row(rel.as_posix(), sid, where, day_in_name(path.name)))
    if short and not rows:
        raise ValueError(
            f"--audio {root}: all {len(short)} recording(s) placed with a species are shorter "
            f"than {min_seconds:g} s, which prepare leaves out ({_first(short, 3)}): give "
            "recordings of a second or more"
        )
    return Scan(rows, hinted + unplaced, short, min_seconds, ultrasonic)


def _first(items: list[str], n: int) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


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
    if high := result.ultrasonic:
        # the runtime's own words for such a file (decode.band_note), less its numbers
        lost = band_note(SAMPLE_RATE * 2, SAMPLE_RATE).split(": ", 1)[1]
        lines.append(
            f"  {len(high)} recording(s) sampled above {SAMPLE_RATE} Hz, analysed at "
            f"{SAMPLE_RATE} Hz: {lost}, in training as on the recorder ({_first(high, 3)})"
        )
    if short := result.short:
        lines.append(short_line(short, result.min_seconds))
    lines += [f"  left out (--skip-unplaced): {p}" for p in result.unplaced]
    return "\n".join(lines)


def short_line(short: list[str], min_seconds: float) -> str:
    """The recordings left out as too short, counted, with the first of them."""
    under = sum(float(s.rsplit("(", 1)[1].split()[0]) < RECORDER_MIN_CLIP_S for s in short)
    them = "them" if under == len(short) else f"{under} of them"
    recorder = (
        f"; the recorder would never analyse {them}, as it skips clips under "
        f"audio.min_clip_s {RECORDER_MIN_CLIP_S:g} s"
        if under
        else ""
    )
    return (
        f"  left out (shorter than {min_seconds:g} s, which prepare leaves out too"
        f"{recorder}): {len(short)} recording(s), {_first(short, 5)}"
    )


def next_command(root: Path) -> str:
    """The `finetune` to run on the folder written, replaying the global data (without
    --replay, the global species may be forgotten)."""
    return (
        f"next: animalclap-train finetune --checkpoint GLOBAL --data {root} "
        "--replay GLOBAL_DATA --out RUN"
    )
