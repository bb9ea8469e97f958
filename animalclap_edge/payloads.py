"""The message every uplink carries for a detection or an event (outbox, MQTT, HTTP,
Server-Sent Events), and the SQL that reads it back from a database's rows."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import fields
from typing import Any, cast

from animalclap_edge.records import Detection, Event

DET_COLS = tuple(f.name for f in fields(Detection))
EVENT_COLS = tuple(f.name for f in fields(Event))


def message_payload(record: Detection | Event, device: str = "", site: str = "") -> str:
    """The JSON every uplink carries for a detection or an event (outbox, MQTT,
    Server-Sent Events): its fields, and the `device` and `site` of the run that logged
    it, so that a message stored without its topic still says which recorder heard it."""
    fields_ = {**record.to_json_dict(), "device": device, "site": site}
    return json.dumps(fields_, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def recorder_sql(runs_columns: Collection[str], runs: str = "") -> tuple[str, str]:
    """SQL of a run's device and site, for a runs table with `runs_columns` (`runs`: its
    alias with the dot, e.g. "u."): config device.name or the host name, and device.site.
    Runs before schema 8 recorded the host name alone, which stands for the device."""
    if "device" not in runs_columns:
        return f"coalesce({runs}host, '')", "''"
    return f"coalesce(nullif({runs}device, ''), {runs}host, '')", f"coalesce({runs}site, '')"


def payload_columns(runs_columns: Collection[str], events: bool = False) -> str:
    """The columns `payload_of` reads, of detections `d` (events `e` with `events`) LEFT
    JOINed to runs `u` (as PAYLOAD_JOIN, EVENT_PAYLOAD_JOIN): the record's, then its
    run's device and site. A reader beside an older recorder passes its database's runs
    columns; the store's own is current."""
    alias, cols = ("e", EVENT_COLS) if events else ("d", DET_COLS)
    return ", ".join([*(f"{alias}.{c}" for c in cols), *recorder_sql(runs_columns, "u.")])


def runs_columns(conn: sqlite3.Connection) -> set[str]:
    return {r[1] for r in conn.execute("PRAGMA table_info(runs)")}


PAYLOAD_JOIN = "LEFT JOIN runs u ON u.run_id = d.run_id"
EVENT_PAYLOAD_JOIN = "LEFT JOIN runs u ON u.run_id = e.run_id"


# an open store is always at SCHEMA_VERSION (upgraded in place): its runs have both
PAYLOAD_COLUMNS = payload_columns({"device", "site"})
EVENT_PAYLOAD_COLUMNS = payload_columns({"device", "site"}, events=True)


def payload_of(row: Sequence[object], events: bool = False) -> str:
    """`message_payload` of a row of `payload_columns` (of the same `events`)."""
    *fields_, device, site = row
    # sqlite's values of the record's columns, in its field order (DET_COLS,
    # EVENT_COLS): the record's own types, bar 0/1 and int for its floats and bool,
    # which its __post_init__ coerces, as for Detection(*row) of a cursor (typed Any)
    values = cast("list[Any]", fields_)
    record = Event(*values) if events else Detection(*values)
    return message_payload(record, str(device), str(site))
