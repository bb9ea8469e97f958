"""How fast `animalclap-train prepare` turns source recordings into shards, per worker,
by source format: the figure to plan a paper-scale preparation (4,225 h of audio in
about 700,000 recordings) in core-hours.

Recordings of --seconds each (default 22 s, the paper's mean) are cut from the real
clips of shared/realaudio strung together (mono, 44.1 kHz, as most xeno-canto files
are), written in each --format, and prepared by the real `prepare` (licence and
catalogue checks, decode, resample to 48 kHz, the silence and length checks, FLAC
shards, finalize) with --workers 1 and 2 (default), each in a fresh output folder.
Downloads are not included: the files are local.

    python scripts/benchmarks/prepare_rate.py --recordings 60 --formats mp3 flac wav
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from realaudio import strung_together, write_manifest

SR = 44_100
PAPER_HOURS = 4_225
SUBTYPE = {"mp3": "MPEG_LAYER_III", "flac": "PCM_16", "wav": "PCM_16", "ogg": "VORBIS"}


def _sources(folder: Path, fmt: str, n: int, seconds: float) -> Path:
    """n recordings in `fmt`, a manifest and a catalogue of 10 species; the manifest."""
    audio, length = strung_together(SR), round(seconds * SR)
    with open(folder / "catalogue.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "scientific_name", "common_name", "class", "order", "family", "genus"])
        for k in range(10):
            w.writerow(
                [f"sp{k}", f"Genus{k} species{k}", f"Bird {k}", "Aves", "O", "F", f"Genus{k}"]
            )
    rows = []
    for i in range(n):
        start = (i * 7_919 * SR // 10) % max(1, len(audio) - length)
        clip = np.resize(np.roll(audio, -start), length)  # wraps: any length from few clips
        path = folder / f"rec{i:04d}.{fmt}"
        sf.write(path, clip, SR, subtype=SUBTYPE[fmt])
        rows.append(
            {"path": path.name, "species_id": f"sp{i % 10}", "licence": "CC BY 4.0",
             "date": f"2024-06-{1 + i % 28:02d}", "site": f"site{i % 5}"}
        )  # fmt: skip
    return write_manifest(folder, rows)


def main() -> None:
    from training.prepare.run import PrepareConfig, prepare

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=22.0, help="per recording")
    ap.add_argument("--formats", nargs="+", default=["mp3", "flac", "wav"], choices=SUBTYPE)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    hours = args.recordings * args.seconds / 3600
    print(
        f"{args.recordings} recordings of {args.seconds:g} s ({hours * 60:.1f} min of audio) "
        "per format\n"
        f"{'format':>6} {'workers':>7} {'wall s':>7} {'rec/s':>7} {'x real time':>11} "
        f"{'core-h per 1,000 h':>18} {'paper: core-h':>13}"
    )
    for fmt in args.formats:
        with tempfile.TemporaryDirectory(prefix="prepare-rate-") as tmp:
            manifest = _sources(Path(tmp), fmt, args.recordings, args.seconds)
            for workers in args.workers:
                cfg = PrepareConfig(
                    manifest=str(manifest),
                    catalogue=str(Path(tmp) / "catalogue.csv"),
                    out=str(Path(tmp) / f"out-{workers}"),
                    per_shard=max(1, args.recordings // (2 * workers)),
                    workers=workers,
                )
                start = time.perf_counter()
                summary = prepare(cfg, progress=False)
                wall = time.perf_counter() - start
                kept = summary["report"]["recordings"]
                speed = hours * 3600 / wall  # audio seconds per wall second, all workers
                core_h = 1000 / (speed / workers)  # core-hours per 1,000 h of audio
                print(
                    f"{fmt:>6} {workers:>7} {wall:>7.1f} {args.recordings / wall:>7.1f} "
                    f"{speed:>11.0f} {core_h:>18.2f} {core_h * PAPER_HOURS / 1000:>13.1f}"
                    + ("" if kept == args.recordings else f"  ({kept} kept)")
                )


if __name__ == "__main__":
    main()
