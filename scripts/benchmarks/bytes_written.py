"""Bytes written to the card per hour of audio (SD cards wear out by the byte).

Loops the real recordings of a folder into 10-minute FLAC files (N hours in all), runs
the real CLI (`python -m animalclap_edge run`) over them once per scenario, and reads
the child's own `/proc/self/io` after `main()` returns, i.e. after the database was
closed (SQLite's last checkpoint included):

- write_bytes: bytes of page cache the process dirtied, i.e. what it sent towards the
  storage device (4 KiB pages; the filesystem's journal and the card's own write
  amplification come on top);
- wchar: bytes passed to write()/pwrite() calls, cached or not.

Scenarios: the database only; the database plus a FLAC clip per event. With `--busy`
also both under a worst-case config (threshold 0, top_k 3: every window logs three
labels). Figures per hour of audio, the split into database and clips (file sizes at
the end), bytes per detection, and the SQLite settings in force. Prints a table and
writes JSON:

    .venv/bin/python scripts/benchmarks/bytes_written.py --hours 2 --out runs/bytes_written.json

The working folder must be on a real disk (not tmpfs, whose writes are not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO.parent / "shared" / "realaudio"
SR = 48_000  # the demo bundle's rate; the CLI resamples anyway

# Runs the CLI in this process, then reports this process's I/O counters. It also
# times every store transaction (BEGIN IMMEDIATE .. COMMIT, the fsync included) and,
# with BW_SYNCHRONOUS set, overrides the store's synchronous setting after it is opened
# (to measure the alternative without changing the runtime).
_CHILD = """
import json, os, sys, time
from contextlib import contextmanager
from animalclap_edge import store as st
tx_stats = {"transactions": 0, "transaction_s": 0.0, "max_transaction_s": 0.0}
_tx = st.DetectionStore._transaction
@contextmanager
def _timed(self):
    t = time.perf_counter()
    with _tx(self) as conn:
        yield conn
    dt = time.perf_counter() - t
    tx_stats["transactions"] += 1
    tx_stats["transaction_s"] += dt
    tx_stats["max_transaction_s"] = max(tx_stats["max_transaction_s"], dt)
st.DetectionStore._transaction = _timed
sync = os.environ.get("BW_SYNCHRONOUS")
if sync:
    _open = st.DetectionStore._open
    def _open_then_set(self):
        mode = _open(self)
        self._db().execute(f"PRAGMA synchronous = {sync}")
        return mode
    st.DetectionStore._open = _open_then_set
from animalclap_edge.cli import main
rc = main(sys.argv[2:])
io = dict(l.split(": ") for l in open("/proc/self/io").read().split("\\n") if l)
out = {k: int(v) for k, v in io.items()} | tx_stats | {"rc": rc}
json.dump(out, open(sys.argv[1], "w"))
sys.exit(rc)
"""

BUSY = {"scoring": {"threshold": 0.0, "top_k": 3}}


def make_audio(src: Path, dst: Path, hours: float, file_minutes: float) -> list[Path]:
    """Real recordings laid end to end and looped into files of `file_minutes`."""
    import numpy as np
    import soundfile as sf

    from animalclap_edge.audio.decode import AudioError, read_all

    parts = []
    for f in sorted(src.iterdir()):
        if f.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"):
            try:
                parts.append(read_all(f, SR))
            except AudioError:
                continue
    if not parts:
        raise SystemExit(f"no readable audio in {src}")
    loop = np.concatenate(parts)
    per = round(file_minutes * 60 * SR)
    n = max(1, round(hours * 60 / file_minutes))
    dst.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        idx = (np.arange(per) + i * per) % len(loop)
        f = dst / f"rec{i:04d}.flac"
        sf.write(f, loop[idx], SR, subtype="PCM_16")
        files.append(f)
    return files


_SYSCALL = re.compile(r"^\d+\s+(\w+)\((\d+)<([^>]*)>.*\)\s+=\s+(-?\d+)")
_TRACED = "write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync"


def _category(path: str) -> str:
    if path.endswith("-wal"):
        return "wal"
    if path.endswith(".db"):
        return "db"
    if path.endswith("-shm"):
        return "shm"  # shared memory index: mmapped, rarely written through write()
    if "/clips/" in path:
        return "clips"
    return "other"  # pipes, the I/O report, etc.


def split_trace(trace: Path) -> dict:
    """Bytes written and fsync/fdatasync calls per file kind, from an strace log."""
    out: dict[str, dict[str, int]] = {}
    for line in trace.read_text(errors="replace").splitlines():
        m = _SYSCALL.match(line)
        if not m or int(m.group(4)) < 0:
            continue
        call, path, ret = m.group(1), m.group(3), int(m.group(4))
        c = out.setdefault(_category(path), {"bytes": 0, "writes": 0, "syncs": 0})
        if call in ("fsync", "fdatasync"):
            c["syncs"] += 1
        else:
            c["bytes"] += ret
            c["writes"] += 1
    return out


def run_scenario(
    name: str,
    src: Path,
    work: Path,
    config: dict,
    strace: bool = False,
    synchronous: str | None = None,
) -> dict:
    """One CLI run in a fresh folder; its I/O counters and what it left on disk. With
    `strace`, also the bytes written and syncs per file kind (database, WAL, clips)."""
    d = work / name.replace(" ", "_").replace("+", "_")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    (d / "edge.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    io_file = d / "io.json"
    cmd = [sys.executable, "-c", _CHILD, str(io_file), "run", "--source", str(src)]
    cmd += ["--db", "detections.db", "--config", "edge.yaml", "--quiet"]
    trace = d / "strace.log"
    if strace:
        # -y names each fd's file; only writes and syncs are traced (small overhead).
        tracer = ["strace", "-f", "-qq", "-y", "-s", "0", "-e", f"trace={_TRACED}"]
        cmd = [*tracer, "-o", str(trace), *cmd]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    if synchronous:
        env["BW_SYNCHRONOUS"] = synchronous
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{name}: run failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    io = json.loads(io_file.read_text())
    db = d / "detections.db"
    with closing(sqlite3.connect(db)) as c:
        q = lambda sql: c.execute(sql).fetchone()[0]  # noqa: E731
        counts = {
            "audio_s": q("SELECT coalesce(sum(duration_s), 0) FROM recordings"),
            "recordings": q("SELECT count(*) FROM recordings"),
            "detections": q("SELECT count(*) FROM detections"),
            "events": q("SELECT count(*) FROM events"),
            "clips": q("SELECT count(*) FROM events WHERE clip_path IS NOT NULL"),
        }
    clips = (
        sum(f.stat().st_size for f in (d / "clips").rglob("*.flac"))
        if config.get("storage", {}).get("save_clips")
        else 0
    )
    sizes = {
        "db_bytes": db.stat().st_size,
        "wal_bytes": _size(Path(f"{db}-wal")),
        "clip_bytes": clips,
    }
    hours = counts["audio_s"] / 3600
    split = split_trace(trace) if strace else {}
    if strace:
        trace.unlink()  # large, and its content is summarised in `split`
    return {
        "scenario": name,
        "config": config,
        "wall_s": round(wall, 1),
        **counts,
        **sizes,
        "write_bytes": io["write_bytes"],
        "wchar": io["wchar"],
        "syscw": io["syscw"],
        "synchronous": synchronous or "FULL (the store's)",
        "transactions": io["transactions"],
        "mean_transaction_ms": round(1000 * io["transaction_s"] / max(1, io["transactions"]), 2),
        "max_transaction_ms": round(1000 * io["max_transaction_s"], 1),
        "write_bytes_per_hour": round(io["write_bytes"] / hours),
        "wchar_per_hour": round(io["wchar"] / hours),
        "detections_per_hour": round(counts["detections"] / hours),
        "events_per_hour": round(counts["events"] / hours),
        "commits_per_hour": round(split.get("wal", {}).get("syncs", 0) / hours),
        "by_file_per_hour": {
            k: {kk: round(vv / hours) for kk, vv in v.items()} for k, v in split.items()
        },
    }


def sqlite_settings(db: Path) -> dict:
    """Journal mode and synchronous as the runtime's store sets them on open."""
    from animalclap_edge.store import DetectionStore

    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    with DetectionStore(db) as s:
        conn = s._db()  # the store's own connection: its pragmas are the ones in force
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        return {
            "journal_mode": s.journal_mode,
            "synchronous": names.get(sync, str(sync)),
            "wal_autocheckpoint_pages": conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
            "page_size": conn.execute("PRAGMA page_size").fetchone()[0],
            "sqlite_version": sqlite3.sqlite_version,
        }


def _size(p: Path) -> int:
    return p.stat().st_size if p.exists() else 0


def _mb(b: float) -> str:
    return f"{b / 1e6:.2f}"


def table(results: list[dict]) -> str:
    head = (
        f"{'scenario':<14} {'audio h':>7} {'dets/h':>6} {'events/h':>8} {'write MB/h':>10} "
        f"{'wchar MB/h':>10} {'db MB':>6} {'clips MB':>8} {'B/det':>6} {'tx/h':>5} "
        f"{'tx ms':>6} {'max ms':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        # bytes per detection only where the database is all that is written
        per_det = r["write_bytes"] / r["detections"] if r["detections"] else 0.0
        hours = r["audio_s"] / 3600
        lines.append(
            f"{r['scenario']:<14} {hours:7.2f} {r['detections_per_hour']:6d} "
            f"{r['events_per_hour']:8d} {_mb(r['write_bytes_per_hour']):>10} "
            f"{_mb(r['wchar_per_hour']):>10} {_mb(r['db_bytes']):>6} {_mb(r['clip_bytes']):>8} "
            f"{'-' if r['clip_bytes'] else f'{per_det:.0f}':>6} "
            f"{round(r['transactions'] / hours):5d} {r['mean_transaction_ms']:6.2f} "
            f"{r['max_transaction_ms']:6.1f}"
        )
    return "\n".join(lines)


def split_table(results: list[dict]) -> str:
    head = f"{'scenario':<18} {'file':<6} {'MB/h':>8} {'writes/h':>9} {'syncs/h':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        for kind, v in sorted(r["by_file_per_hour"].items()):
            lines.append(
                f"{r['scenario']:<18} {kind:<6} {_mb(v['bytes']):>8} {v['writes']:9d} {v['syncs']:8d}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=2.0, help="hours of audio per scenario")
    ap.add_argument("--file-minutes", type=float, default=10.0)
    ap.add_argument("--audio", type=Path, default=AUDIO, help="folder of real recordings")
    ap.add_argument("--work", type=Path, help="working folder on a real disk (default: a temp dir)")
    ap.add_argument("--busy", action="store_true", help="also the worst-case (threshold 0) config")
    ap.add_argument(
        "--normal", action="store_true", help="also the database with synchronous=NORMAL"
    )
    ap.add_argument(
        "--strace", action="store_true", help="split bytes and syncs by file (needs strace)"
    )
    ap.add_argument("--only", nargs="+", help="run only these scenarios (e.g. db)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    # A temp folder under runs/ (a real disk, unlike /tmp on many systems), removed
    # at the end; --work keeps the databases for a look.
    (REPO / "runs").mkdir(exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="bytes_written_", dir=REPO / "runs"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / "audio"
        shutil.rmtree(src, ignore_errors=True)
        files = make_audio(args.audio, src, args.hours, args.file_minutes)
        print(f"{len(files)} files of {args.file_minutes:g} min in {src}", file=sys.stderr)
        scenarios = {
            "db": {},
            "db+clips": {"storage": {"save_clips": True, "clips_dir": "clips"}},
            # an age rule builds the created_utc indexes at the first pass (at start):
            # what they add per transaction (nothing is old enough to delete). 30 days:
            # a cutoff before retention's clock floor (2026-01-01) builds nothing, as 365
            # did from 2026-11-28 on, when this scenario measured the plain database
            "db age rule": {"storage": {"retention_days": 30}},
        }
        if args.busy:
            scenarios["db busy"] = BUSY
            scenarios["db+clips busy"] = {**BUSY, **scenarios["db+clips"]}
        runs = [(name, cfg, None) for name, cfg in scenarios.items()]
        if args.normal:
            runs.insert(1, ("db NORMAL", {}, "NORMAL"))
        if args.only:
            runs = [r for r in runs if r[0] in args.only]
        results = []
        for name, cfg, sync in runs:
            print(f"running {name} ...", file=sys.stderr)
            results.append(run_scenario(name, src, work, cfg, args.strace, sync))
        settings = sqlite_settings(next(work.glob("*/detections.db")))
    finally:
        shutil.rmtree(work / "audio" if args.work else work, ignore_errors=True)
    report = {
        "hours": args.hours,
        "file_minutes": args.file_minutes,
        "audio": str(args.audio),
        "sqlite": settings,
        "results": results,
        "command": " ".join(
            ["python", "scripts/benchmarks/bytes_written.py", *(argv or sys.argv[1:])]
        ),
    }
    print(table(results))
    if args.strace:
        print(split_table(results))
    print(json.dumps(settings))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
