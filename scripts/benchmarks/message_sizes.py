"""Sizes of the MQTT messages a card's database would send: bytes per detection and per
event, built by the same `payload_of` the uplink sends (README and docs/live.md quote
them to size a broker's message limit).

    .venv/bin/python scripts/benchmarks/message_sizes.py runs/demo/detections.db

2026-11-29, the demo database of `bash setup.sh`: 152 detections 1,844-2,326 B (median
1,987), 138 events 616-675 B (median 634.5); the same as a paho subscriber received
from a real mosquitto.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics

from animalclap_edge import payloads as S


def sizes(db: str) -> dict[str, list[int]]:
    """Bytes of each detection's and each event's message, from the database alone."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cols = S.runs_columns(conn)
        out = {}
        for kind, events, table, join in (
            ("detections", False, "detections d", S.PAYLOAD_JOIN),
            ("events", True, "events e", S.EVENT_PAYLOAD_JOIN),
        ):
            query = f"SELECT {S.payload_columns(cols, events)} FROM {table} {join}"
            out[kind] = [len(S.payload_of(r, events).encode()) for r in conn.execute(query)]
        return out
    finally:
        conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("db", help="a detection database (detections.db)")
    for kind, n in sizes(p.parse_args().db).items():
        if n:
            print(
                f"{kind}: {len(n)} messages, {min(n):,}-{max(n):,} B "
                f"(median {statistics.median(n):,})"
            )
        else:
            print(f"{kind}: none")


if __name__ == "__main__":
    main()
