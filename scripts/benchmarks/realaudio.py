"""Helpers the benchmarks share: shared/realaudio's clips as one recording, and a
prepare manifest written from rows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REALAUDIO = Path(__file__).resolve().parents[3] / "shared" / "realaudio"


def strung_together(sr: int = 44_100) -> np.ndarray:
    """The WAV clips of shared/realaudio mixed to mono at `sr`, one after another."""
    parts = []
    for f in sorted(REALAUDIO.glob("*.wav")):
        x, rate = sf.read(f, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        parts.append(x if rate == sr else soxr.resample(x, rate, sr))
    return np.concatenate(parts)


def write_manifest(folder: Path, rows: list[dict]) -> Path:
    """`rows` (path, species_id, licence, date, site...) as folder/manifest.csv."""
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest
