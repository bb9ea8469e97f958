"""What one age-retention pass costs on a database of months of detections.

A detection database of `--rows` detections (19 days per million at the 2,160
detections per hour of docs/storage.md), logged evenly over `--days` days, every
message delivered. Times the store's age pass (`delete_expired`, as `Retention` calls it every `retention_interval_s`)
when nothing has expired yet (the common pass) and when one day has, without and then
with the created_utc indexes (and how long building them takes on that file), and
shows SQLite's plan for each statement.

    python scripts/benchmarks/retention_scan.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from animalclap_edge.store import DetectionStore


def _fill(path: Path, rows: int, days: int) -> None:
    with DetectionStore(path):  # the schema, as the recorder creates it
        pass
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO runs (run_id, started_utc, bundle_id, config_hash, source, host, "
        "software_version) VALUES ('run', '2026-01-01T00:00:00Z', 'b', 'c', 's', 'h', 'v')"
    )
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=days) / rows
    traits = json.dumps({"activity": {"diurnal": 0.71, "nocturnal": 0.29}})
    batch = 20_000
    for lo in range(0, rows, batch):
        det = []
        for i in range(lo, min(rows, lo + batch)):
            t = (t0 + i * step).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            did = f"d{i:012d}"
            rec = f"rec{i // 400:08d}"
            det.append(
                (
                    did,
                    "run",
                    rec,
                    1.5 * (i % 400),
                    1.5 * (i % 400) + 3,
                    t,
                    1,
                    "bundle",
                    "cfg",
                    1,
                    "species",
                    f"sp{i % 300}",
                    f"Genus species{i % 300}",
                    f"Common {i % 300}",
                    0.41,
                    0.83,
                    traits,
                    t,
                    # the message's state, in the row since schema 9: queued, delivered
                    *(1, 0, t, None, None),
                )
            )
        conn.executemany(f"INSERT INTO detections VALUES ({','.join('?' * 23)})", det)
        conn.commit()
    conn.close()


def _plans(path: Path, cutoff: str) -> None:
    conn = sqlite3.connect(path)
    for q in (
        "SELECT rowid FROM detections WHERE created_utc < ? AND ((queued = 1 AND delivered_utc "
        "IS NOT NULL) OR EXISTS (SELECT 1 FROM outbox o WHERE o.detection_id = "
        "detections.detection_id AND o.delivered_utc IS NOT NULL)) LIMIT 2000",
        "SELECT count(*) FROM detections WHERE created_utc < ?",
    ):
        plan = [r[-1] for r in conn.execute(f"EXPLAIN QUERY PLAN {q}", (cutoff,))]
        print(f"    plan: {' / '.join(plan)}")
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=35)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "detections.db"
        t = time.perf_counter()
        _fill(path, a.rows, a.days)
        size = path.stat().st_size / 2**20
        print(
            f"{a.rows:,} detections over {a.days} days: {size:.0f} MB, written in {time.perf_counter() - t:.0f} s"
        )
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        cases = {
            "nothing expired": t0,
            "one day expired": t0 + timedelta(days=1),
        }
        with DetectionStore(path) as store:
            for indexed in (False, True):
                if indexed:
                    t = time.perf_counter()
                    problem = store.ensure_age_indexes()
                    size = path.stat().st_size / 2**20
                    print(
                        f"created_utc indexes built in {time.perf_counter() - t:.1f} s "
                        f"({problem or 'ok'}); file now {size:.0f} MB"
                    )
                for name, when in cases.items():
                    when += timedelta(days=indexed)  # the next day: not yet deleted
                    cutoff = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    t = time.perf_counter()
                    n_det, _, kept = store.delete_expired(cutoff, undelivered_too=False)
                    dt = time.perf_counter() - t
                    print(
                        f"  {'with' if indexed else 'without'} indexes, {name}: {dt * 1000:.0f} ms "
                        f"({n_det} detections deleted, {kept} kept)"
                    )
                    _plans(path, cutoff)


if __name__ == "__main__":
    main()
