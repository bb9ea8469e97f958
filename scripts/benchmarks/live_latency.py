"""Commit-to-client latency of the live endpoint (docs/live.md).

A real LiveServer on a free loopback port over a temporary database; N clients read
/events with http.client while a writer commits one detection every `--every` seconds
through DetectionStore. Prints the median, p95 and max delay from commit to receipt.

    python scripts/benchmarks/live_latency.py --detections 200 --clients 1 8 --poll 0.25
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from animalclap_edge.live import LiveServer
from animalclap_edge.records import Detection, detection_id
from animalclap_edge.store import DetectionStore

BUNDLE, RUN = "bench-bundle", "bench-run"


def _det(i: int) -> Detection:
    return Detection(
        detection_id=detection_id(BUNDLE, "bench.wav", i * 72_000, "species", "eurbla"),
        run_id=RUN,
        recording_id="bench.wav",
        window_start_s=i * 1.5,
        window_end_s=i * 1.5 + 3,
        start_time_utc=None,
        clock_trusted=False,
        bundle_id=BUNDLE,
        config_hash="0123456789abcdef",
        rank=1,
        level="species",
        taxon="eurbla",
        scientific_name="Turdus merula",
        common_name="Eurasian Blackbird",
        score=0.3,
        probability=0.9,
        traits_json="{}",
        created_utc="2026-01-01T00:00:00+00:00",
    )


def _reader(port: int, n: int, received: dict[str, float], ready: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/events")
    resp = conn.getresponse()
    ready.set()
    try:
        while len(received) < n:
            line = resp.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                received[json.loads(line[6:])["detection_id"]] = time.perf_counter()
    finally:
        conn.close()


def measure(n: int, clients: int, poll_s: float, every_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "live.db"
        with DetectionStore(db) as store:
            store.start_run(RUN, BUNDLE, "0123456789abcdef", "bench", "bench")
        with LiveServer(db, port=0, poll_s=poll_s) as server, DetectionStore(db) as store:
            received = [{} for _ in range(clients)]
            threads = []
            for r in received:
                ready = threading.Event()
                t = threading.Thread(target=_reader, args=(server.port, n, r, ready), daemon=True)
                t.start()
                ready.wait(10)
                threads.append(t)
            time.sleep(2 * poll_s)  # every stream has opened at "now"
            committed: dict[str, float] = {}
            for i in range(n):
                d = _det(i)
                store.add_detections([d])
                committed[d.detection_id] = time.perf_counter()
                time.sleep(every_s)
            for t in threads:
                t.join(30)
    lat = [1000 * (r[k] - committed[k]) for r in received for k in r]
    lat.sort()
    return {
        "clients": clients,
        "poll_s": poll_s,
        "detections": n,
        "received": len(lat),
        "median_ms": statistics.median(lat),
        "p95_ms": lat[int(0.95 * (len(lat) - 1))],
        "max_ms": lat[-1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detections", type=int, default=200)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--poll", type=float, default=0.25, help="messaging.live.poll_s")
    ap.add_argument("--every", type=float, default=0.05, help="seconds between commits")
    a = ap.parse_args()
    for c in a.clients:
        r = measure(a.detections, c, a.poll, a.every)
        print(
            f"{r['clients']} client(s), poll {r['poll_s']:g} s: {r['received']} received of "
            f"{r['detections'] * r['clients']}; commit -> receipt median {r['median_ms']:.0f} ms, "
            f"p95 {r['p95_ms']:.0f} ms, max {r['max_ms']:.0f} ms"
        )


if __name__ == "__main__":
    main()
