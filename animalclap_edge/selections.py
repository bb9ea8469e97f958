"""Selection tables: each recording's detections, to check by eye and ear.

An ecologist checks a detector by opening a recording beside what it found: Raven
Pro reads a selection table (tab-separated, one box per detection over its window),
Audacity a label track. `write_selections` writes one file per recording with a kept
detection, named after the recording as BirdNET names its tables
(`<stem>.AnimalCLAP.selection.table.txt`, `<stem>.AnimalCLAP.labels.txt`), in the
folders the recordings were in below their common folder, so that two days'
`20240315_053000.WAV` stay apart; with several cards, a folder per card first.

Only recordings that are files have a table. Live audio (a microphone, a pipe) left
no file to open beside one, and a recording a killed run never finished has no
accounting row to name its file; their detections are counted and said.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path, PurePosixPath

from animalclap_edge.report import (
    LocalTime,
    ReportError,
    card_notes,
    card_paths,
    detection_selection,
    local_zone,
    out_error,
    reading,
    times_in_one_format,
)

FORMATS: dict[str, str] = {
    "raven": ".AnimalCLAP.selection.table.txt",
    "audacity": ".AnimalCLAP.labels.txt",
}

# A box spans the whole band the model heard: its front-end runs at 48 kHz.
LOW_HZ, HIGH_HZ = 0, 24_000

# Raven's own columns first (it needs them to draw a box), then ours as annotations.
_RAVEN = {
    "selection": "Selection",
    "view": "View",
    "channel": "Channel",
    "begin_s": "Begin Time (s)",
    "end_s": "End Time (s)",
    "low_hz": "Low Freq (Hz)",
    "high_hz": "High Freq (Hz)",
    "label": "Label",
    "common_name": "Common Name",
    "scientific_name": "Scientific Name",
    "level": "Level",
    "taxon": "Taxon",
    "probability": "Probability",
    "rank": "Rank",
    "start_time_utc": "Begin Time UTC",
    "start_time_local": "Begin Time Local",
    "clock_trusted": "Clock Trusted",
    "detection_id": "Detection ID",
    "source_path": "Begin Path",
    "file_offset_s": "File Offset (s)",
}

# One label per row: the species' scientific name, or "unknown <taxon> (<level>)".
_LABEL = (
    "CASE WHEN d.level = 'species' THEN d.scientific_name "
    "ELSE d.common_name || ' (' || d.level || ')' END"
)
# Live audio: a stream's recording id (`sources.base.live_recording_id`:
# prefix@stamp#hex) is also its source_path; a file's id is its path#digest.
_LIVE = "r.source_path = r.recording_id AND r.recording_id GLOB '*@*#[0-9a-f]*'"
_KEPT = "(SELECT * FROM detections WHERE {where}) d"
_ROWS = f"""
SELECT r.source_path, d.recording_id, d.window_start_s, d.window_end_s, {_LABEL},
       d.common_name, d.scientific_name, d.level, d.taxon, d.probability, d.rank,
       d.start_time_utc, d.clock_trusted, d.detection_id
FROM {_KEPT} JOIN recordings r ON r.recording_id = d.recording_id
WHERE NOT ({_LIVE})
ORDER BY r.source_path, d.recording_id, d.window_start_s, d.rank
"""
_LEFT_OUT = f"""
SELECT count(*) FROM {_KEPT} LEFT JOIN recordings r ON r.recording_id = d.recording_id
WHERE {{which}}
"""
# every file on the card, selected or not: the folders below their common one are the
# same whatever the filters
_FOLDERS = f"SELECT DISTINCT r.source_path FROM recordings r WHERE NOT ({_LIVE})"


@dataclass
class Written:
    """What `write_selections` wrote, and what it left out and why."""

    files: list[Path] = field(default_factory=list)
    detections: int = 0
    live: int = 0  # detections of live audio: no file to open them beside
    unfinished: int = 0  # detections of recordings with no accounting row (a killed run)


def write_selections(
    db: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    fmt: str = "raven",
    min_probability: float | None = None,
    taxa: Sequence[str] = (),
    utc_offset_h: LocalTime = None,
    say: Callable[[str], None] = lambda note: None,
    trusted_clock_only: bool = False,
) -> Written:
    """One `fmt` file (raven, audacity) per recording of `db` with a kept detection,
    under `out_dir`, which must not hold tables of that format already (a rerun with
    other filters would leave the first run's beside the second's). The filters are
    `report`'s; `say` gets its notes and what was left out. With `utc_offset_h` (hours
    or a time zone: `report.local_zone`) a Raven table gets each detection's local time
    beside its UTC one, with the offset of its own instant."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown selection format {fmt!r}: choose one of {', '.join(FORMATS)}")
    zone = local_zone(utc_offset_h)
    if fmt == "audacity" and zone is not None:
        raise ReportError(
            "--utc-offset adds a local time to Raven tables; Audacity labels hold only "
            "offsets in their recording: leave it out"
        )
    dbs = card_paths(db)
    out = Path(out_dir)
    _check_out(out, FORMATS[fmt])
    written = Written()
    for card_dir, path in zip(_card_folders(dbs), dbs, strict=True):
        notes = card_notes(say, path, len(dbs) > 1)
        _card(
            path,
            out / card_dir,
            fmt,
            min_probability,
            taxa,
            zone,
            notes,
            trusted_clock_only,
            written,
        )
    if written.live:
        say(
            f"{written.live} detections of live audio (a microphone or a pipe) have no "
            "recording file to open beside them: left out (storage.save_clips keeps a "
            "clip of each; `report detections` lists them)"
        )
    if written.unfinished:
        say(
            f"{written.unfinished} detections of recordings a run never finished (killed, "
            "power lost) have no recording row to name their file: left out; run the card "
            "again to finish those recordings"
        )
    return written


def _check_out(out: Path, suffix: str) -> None:
    try:
        if out.exists() and not out.is_dir():
            raise ReportError(f"--out {out}: is a file; give a folder for the selection tables")
        held = next(out.rglob(f"*{suffix}"), None) if out.is_dir() else None
    except OSError as e:
        raise out_error(out, e) from None
    if held is not None:
        raise ReportError(
            f"--out {out}: already holds selection tables ({held.name}); give a new folder "
            "or delete them, so that tables of two selections do not mix"
        )


def _card_folders(dbs: list[Path]) -> list[str]:
    """Each card's folder under --out: none for one card; else the name of the folder
    the card's database is in (cards/rec07/detections.db: rec07), numbered if two meet."""
    if len(dbs) == 1:
        return [""]
    names = [d.resolve().parent.name or "card" for d in dbs]
    return [n if names.count(n) == 1 else f"{n}-{i + 1}" for i, n in enumerate(names)]


def _card(
    db: Path,
    out: Path,
    fmt: str,
    min_probability: float | None,
    taxa: Sequence[str],
    zone: tzinfo | None,
    say: Callable[[str], None],
    trusted_clock_only: bool,
    written: Written,
) -> None:
    with reading(db) as conn:
        clauses, args = detection_selection(conn, db, min_probability, taxa, say)
        if trusted_clock_only:
            clauses.append("clock_trusted = 1")
        where = " AND ".join(clauses) or "1"
        written.live += conn.execute(_LEFT_OUT.format(where=where, which=_LIVE), args).fetchone()[0]
        written.unfinished += conn.execute(
            _LEFT_OUT.format(where=where, which="r.recording_id IS NULL"), args
        ).fetchone()[0]
        # each table goes in the folder its file was in, below the common folder of
        # every file on the card (one row per file: a season is thousands of them)
        folders = {str(PurePosixPath(p).parent) for (p,) in conn.execute(_FOLDERS)}
        root = _common(folders)
        taken: set[Path] = set()
        for (source, recording_id), rows in _group(conn.execute(_ROWS.format(where=where), args)):
            path = _table_path(out, root, source, FORMATS[fmt])
            if path in taken:  # two files once at one path (cards mounted in turn)
                tag = recording_id.rpartition("#")[2] or str(len(taken))
                path = path.with_name(f"{PurePosixPath(source).stem}.{tag}{FORMATS[fmt]}")
            taken.add(path)
            header, lines = _lines(fmt, rows, zone)
            _write(path, header, lines)
            written.files.append(path)
            written.detections += len(rows)


def _group(rows: Iterator[Sequence]) -> Iterator[tuple[tuple[str, str], list[Sequence]]]:
    """((source_path, recording_id), its rows) per recording, from rows in that order."""
    key: tuple[str, str] | None = None  # set with the first row of a group
    group: list[Sequence] = []
    for row in rows:
        if key is not None and (row[0], row[1]) != key:
            yield key, group
            group = []
        key = (row[0], row[1])
        group.append(row)
    if key is not None:
        yield key, group


def _common(folders: set[str]) -> PurePosixPath | None:
    try:
        return PurePosixPath(os.path.commonpath(sorted(folders))) if folders else None
    except ValueError:  # absolute and relative paths on one card: keep whole paths
        return None


def _table_path(out: Path, root: PurePosixPath | None, source: str, suffix: str) -> Path:
    src = PurePosixPath(source)
    try:
        below = src.parent.relative_to(root) if root is not None else src.parent
    except ValueError:
        below = src.parent
    parts = [p for p in below.parts if p not in ("/", ".", "..")]
    return out.joinpath(*parts, src.stem + suffix)


def _lines(
    fmt: str, rows: list[Sequence], zone: tzinfo | None
) -> tuple[list[str] | None, Iterator[list[object]]]:
    if fmt == "audacity":  # start, end, label: no header
        return None, ([f"{r[2]:.3f}", f"{r[3]:.3f}", f"{r[4]} {r[9]:.2f}"] for r in rows)
    header = [c for c in _RAVEN if c != "start_time_local"]
    table = (
        [
            i,
            "Spectrogram 1",
            1,
            f"{r[2]:.3f}",
            f"{r[3]:.3f}",
            LOW_HZ,
            HIGH_HZ,
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            f"{r[9]:.4f}",
            r[10],
            r[11],
            int(r[12]),
            r[13],
            r[0],
            f"{r[2]:.3f}",
        ]
        for i, r in enumerate(rows, 1)
    )
    columns, converted = times_in_one_format("raven", header, table, zone)
    return [_RAVEN[c] for c in columns], (list(row) for row in converted)


def _write(path: Path, header: list[str] | None, lines: Iterator[list[object]]) -> None:
    """Write a table whole or not at all: a reader never opens half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                if header is not None:
                    f.write("\t".join(header) + "\n")
                for line in lines:
                    f.write("\t".join("" if v is None else _cell(v) for v in line) + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise out_error(path, e) from None


_TAB_OR_NEWLINE = re.compile(r"[\t\r\n]+")


def _cell(value: object) -> str:
    # a tab or newline in a name or path would shift every later column
    return _TAB_OR_NEWLINE.sub(" ", str(value))
