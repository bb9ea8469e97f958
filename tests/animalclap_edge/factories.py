"""Detection and recording factories for the runtime tests (store, events, outbox,
recovery, retention, report)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import astuple, fields
from pathlib import Path

from animalclap_edge.records import Detection, Event, RecordingResult, detection_id, event_id

BUNDLE = "bundle-0001"
RUN = "run-a"
REC = "/data/in/dawn.flac"


def detection(
    start_sample: int,
    taxon: str = "eurbla",
    level: str = "species",
    recording_id: str = REC,
    **kw,
) -> Detection:
    """A species detection of the window starting at `start_sample` (48 kHz); its id is
    the real one for (BUNDLE, recording, start, level, taxon). Any field can be given."""
    t0 = start_sample / 48000
    fields = dict(
        detection_id=detection_id(BUNDLE, recording_id, start_sample, level, taxon),
        run_id=RUN,
        recording_id=recording_id,
        window_start_s=t0,
        window_end_s=t0 + 3.0,
        start_time_utc=None,
        clock_trusted=False,
        bundle_id=BUNDLE,
        config_hash="0123456789abcdef",
        rank=0,
        level=level,
        taxon=taxon,
        scientific_name="Turdus merula",
        common_name="Eurasian Blackbird",
        score=0.31,
        probability=0.87,
        traits_json=json.dumps({"activity": {"value": "diurnal", "p": 0.9}}),
        created_utc="2024-05-01T04:00:00.000+00:00",
    )
    fields.update(kw)
    return Detection(**fields)


def event(start_sample: int, n_windows: int = 2, taxon: str = "eurbla", **kw) -> Event:
    """The event merging `n_windows` detections from `start_sample` on (hop 1.5 s); its
    id is the real one. Any field can be given."""
    t0 = start_sample / 48000
    fields = dict(
        event_id=event_id(BUNDLE, REC, start_sample, "species", taxon),
        run_id=RUN,
        recording_id=REC,
        level="species",
        taxon=taxon,
        scientific_name="Turdus merula",
        common_name="Eurasian Blackbird",
        start_s=t0,
        end_s=t0 + 3.0 + 1.5 * (n_windows - 1),
        start_time_utc=None,
        clock_trusted=False,
        n_windows=n_windows,
        max_probability=0.91,
        mean_probability=0.87,
        bundle_id=BUNDLE,
        config_hash="0123456789abcdef",
        created_utc="2024-05-01T04:00:05.000+00:00",
    )
    fields.update(kw)
    return Event(**fields)


def recording(status: str = "ok", recording_id: str = REC, **kw) -> RecordingResult:
    """The accounting row of a minute-long file of RUN; any field can be given."""
    fields = dict(
        recording_id=recording_id,
        run_id=RUN,
        source_path=recording_id,
        status=status,
        reason=None if status == "ok" else "too short (0.20 s < audio.min_clip_s 0.5 s)",
        duration_s=60.0,
        n_windows=39,
        n_detections=2,
        start_time_utc="2024-05-01T04:00:00+00:00",
        clock_trusted=True,
        clock_note="file name timestamp",
        finished_utc="2024-05-01T04:01:00.000+00:00",
    )
    fields.update(kw)
    return RecordingResult(**fields)


def released_database(db: Path, version: int) -> sqlite3.Connection:
    """A connection to a new database at schema `version`, as that release created it
    (commit and close it before opening the store, which upgrades it)."""
    from animalclap_edge import store as S

    c = sqlite3.connect(db)
    for stmt in S._SCHEMA + sum((S.MIGRATIONS[v] for v in range(1, version)), ()):
        c.execute(stmt)
    c.execute(f"PRAGMA user_version = {version}")
    return c


def insert_record(c: sqlite3.Connection, table: str, record: object) -> None:
    """A Detection or Event row written as an older release wrote it, bypassing the store."""
    cols = [f.name for f in fields(record)]
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    c.execute(sql, astuple(record))
