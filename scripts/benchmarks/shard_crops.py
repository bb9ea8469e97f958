"""Cost of one training crop read from a prepared shard: FLAC vs WAV members, partial
read (the loader's path) vs decoding the whole recording, and the disk each takes.

The recordings are shared/realaudio decoded at 48 kHz and concatenated into segments of
`--record-seconds` (xeno-canto recordings run from tens of seconds to minutes).

    python scripts/benchmarks/shard_crops.py --audio ../shared/realaudio
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np

from animalclap_edge.audio.decode import SUPPORTED_EXTENSIONS, AudioError, read_all
from training.labelled_audio import _read_crop, crop
from training.prepare.shards import RecordRegion, ShardWriter, read_index, read_record

SR = 48_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", default="../shared/realaudio")
    ap.add_argument("--record-seconds", type=float, default=60.0)
    ap.add_argument("--crop-seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    parts = []
    for p in sorted(Path(a.audio).iterdir()):
        if p.suffix.lower() in SUPPORTED_EXTENSIONS:
            with contextlib.suppress(AudioError):
                parts.append(read_all(p, SR))
    audio = np.clip(np.concatenate(parts), -1, 1)
    per = round(a.record_seconds * SR)
    segments = [audio[i : i + per] for i in range(0, len(audio) - per + 1, per)]
    n = round(a.crop_seconds * SR)
    print(
        f"{len(segments)} recordings of {a.record_seconds:g} s from {a.audio}; crops of {a.crop_seconds:g} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for codec in ("flac", "wav"):
            w = ShardWriter(Path(tmp) / codec, 0, codec)
            for i, x in enumerate(segments):
                w.add(f"r{i}", x, {})
            index = read_index(w.close())
            tar = Path(tmp) / codec / index["tar"]
            regions = [RecordRegion(tar, r["offset"], r["size"]) for r in index["records"]]
            mb = sum(r.size for r in regions) / 2**20
            hours = len(segments) * a.record_seconds / 3600
            for name, read in (
                (
                    "whole decode + crop",
                    lambda r, g: crop(read_record(r.tar, r.offset, r.size), n, g),
                ),
                ("crop read alone", lambda r, g: _read_crop(r, n, g, SR)),
                # what the loader reads since 2026-11-26 (wire_int16): no float round trip
                ("crop read alone as int16", lambda r, g: _read_crop(r, n, g, SR, pcm16=True)),
            ):
                k, t = 0, time.perf_counter()
                for _ in range(a.repeats):
                    for r in regions:
                        read(r, np.random.default_rng(k))
                        k += 1
                ms = (time.perf_counter() - t) / k * 1000
                print(
                    f"{codec}: {name}: {ms:.1f} ms per crop ({mb / hours:.0f} MB per hour of audio)"
                )


if __name__ == "__main__":
    main()
