"""The pretraining loader end to end on prepared shards: crops decoded in DataLoader
workers, collated and handed to the main process, as `pretrain` reads them.

Real audio (shared/realaudio decoded at 48 kHz, concatenated into recordings of
`--record-seconds`) is prepared twice, as FLAC and as WAV shards, and read seven ways:
the path before 2026-11-26 (every crop decodes its whole recording; stack-then-convert
collate); crops read alone as float32 (2026-11-26), on FLAC and on WAV shards; crops
read as int16 (`pcm16`, 2026-11-26 to 27), on both; and crops read as int16 straight
into their batch rows (`EpochPlanDataset.__getitems__`, what `pretrain` does since
2026-11-27), on both. Passes alternate.

    python scripts/benchmarks/loader_shards.py --workers 2 --batch 16
    python scripts/benchmarks/loader_shards.py --batch 256 --only "(WAV)"
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from loader_collate import StackThenConvert, _Tok, seconds_per_batch
from realaudio import write_manifest

from animalclap_edge.audio.decode import SUPPORTED_EXTENSIONS, AudioError, read_all
from animalclap_edge.contracts.prompts import ALL_TEMPLATES
from training.labelled_audio import open_labelled
from training.prepare.run import PrepareConfig, prepare
from training.pretrain.data import Collate, EpochPlanDataset

CATALOGUE = Path(__file__).resolve().parents[2] / "tests/training/data/realaudio_catalogue.csv"
SR = 48_000


def _recordings(audio: str, seconds: float, folder: Path) -> Path:
    parts = []
    for p in sorted(Path(audio).iterdir()):
        if p.suffix.lower() in SUPPORTED_EXTENSIONS:
            with suppress(AudioError):
                parts.append(read_all(p, SR))
    x = np.clip(np.concatenate(parts), -1, 1)
    per = round(seconds * SR)
    species = [r["id"] for r in csv.DictReader(CATALOGUE.open())]
    rows = []
    for i in range(len(x) // per):
        sf.write(folder / f"r{i}.flac", x[i * per : (i + 1) * per], SR, subtype="PCM_16")
        rows.append(
            {
                "path": f"r{i}.flac",
                "species_id": species[i % len(species)],
                "licence": "CC0",
                "date": "2024-06-01",
                "site": f"s{i}",
            }
        )
    return write_manifest(folder, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", default="../shared/realaudio")
    ap.add_argument("--record-seconds", type=float, default=60.0)
    ap.add_argument("--crop-seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--only", help="run only the ways whose name contains this, e.g. 'int16 (WAV)'")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = _recordings(a.audio, a.record_seconds, Path(tmp))
        data = {}
        for codec in ("flac", "wav"):
            out = Path(tmp) / f"prepared-{codec}"
            cfg = PrepareConfig(str(manifest), str(CATALOGUE), str(out), workers=1, codec=codec)
            prepare(cfg, progress=False)
            data[codec] = open_labelled(str(out))
        n = len(data["flac"].items)
        print(
            f"{n} recordings of {a.record_seconds:g} s; {a.crop_seconds:g} s crops, "
            f"batch {a.batch}, {a.workers} workers"
        )
        ways = {
            "before: whole decode, stack-then-convert (FLAC)": (
                replace(data["flac"], file_of=None),
                StackThenConvert(_Tok(), int16=True),
                False,
            ),
            "crop read as float32, rows in shared memory (FLAC)": (
                data["flac"],
                Collate(_Tok(), int16=True),
                False,
            ),
            "crop read as float32, rows in shared memory (WAV)": (
                data["wav"],
                Collate(_Tok(), int16=True),
                False,
            ),
            "crop read as int16 (FLAC)": (data["flac"], Collate(_Tok(), int16=True), True),
            "crop read as int16 (WAV)": (data["wav"], Collate(_Tok(), int16=True), True),
            "now: crops read straight into the batch, int16 (FLAC)": (
                data["flac"],
                Collate(_Tok(), int16=True),
                "batch",
            ),
            "now: crops read straight into the batch, int16 (WAV)": (
                data["wav"],
                Collate(_Tok(), int16=True),
                "batch",
            ),
        }
        if a.only:
            ways = {k: v for k, v in ways.items() if a.only in k}
        for _ in range(a.passes):
            for name, (labelled, collate, how) in ways.items():
                ds = EpochPlanDataset(
                    labelled,
                    labelled.items,
                    list(ALL_TEMPLATES),
                    False,
                    0,
                    30,
                    round(a.crop_seconds * SR),
                    pcm16=bool(how),
                )
                keys = [(e, p) for e in range(100) for p in range(len(ds))]
                loader = torch.utils.data.DataLoader(
                    keys,
                    batch_size=a.batch,
                    num_workers=a.workers,
                    collate_fn=(
                        (lambda ks, ds=ds, c=collate: c(ds.__getitems__(ks)))
                        if how == "batch"  # what the DataLoader calls on our dataset
                        else (lambda ks, ds=ds, c=collate: c([ds[k] for k in ks]))
                    ),
                )
                dt = seconds_per_batch(loader, a.steps)
                print(f"{name}: {a.batch / dt:.0f} clips/s ({dt * 1000:.0f} ms per batch)")


if __name__ == "__main__":
    main()
