"""Memory one prepare worker needs for one recording, by its length: the streamed path
prepare takes (blocks, spooled) against the whole-array path it took before 2026-11-28
(`read_all`, scale, `encode_audio`), each in a fresh process.

Each recording is stereo 44.1 kHz 16-bit WAV (a common field-recorder format), noise
at -17 dBFS, written to --tmp first. Reported per path: the peak of numpy's and Python's
allocations (tracemalloc) and the process's peak resident memory (ru_maxrss, which
includes the interpreter and its libraries: the "baseline" row is that alone), and
the wall time.

    python scripts/benchmarks/prepare_memory.py --minutes 1 5 20
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 44_100


def _write(path: Path, minutes: float) -> None:
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SR, 2, subtype="PCM_16") as f:
        left = round(minutes * 60 * SR)
        while left > 0:
            n = min(left, 10 * SR)
            f.write(0.14 * rng.standard_normal((n, 2)))
            left -= n


def _one(mode: str, src: str, out: str) -> dict:
    from animalclap_edge.audio.decode import read_all
    from training.prepare.decode import DecodeSettings, load_source
    from training.prepare.shards import SAMPLE_RATE, ShardWriter, encode_audio

    writer = ShardWriter(Path(out), 0)
    tracemalloc.start()
    start = time.perf_counter()
    if mode == "streamed":
        with load_source(src, DecodeSettings()) as audio:
            writer.add("r", audio.blocks(), {})
    elif mode == "whole":  # what prepare did before: the array, scaled, encoded at once
        wave = read_all(src, SAMPLE_RATE)
        peak = float(np.max(np.abs(wave)))
        if peak > 1.0:
            wave = wave * np.float32(1.0 / peak)
        data = encode_audio(wave)
        del wave, data
    seconds = time.perf_counter() - start
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    writer.abort()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "traced_mb": traced / 1e6, "rss_mb": rss_kb / 1e3, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0, 20.0])
    ap.add_argument("--tmp", default=None, help="where the test recordings go (default: TMPDIR)")
    ap.add_argument("--one", nargs=3, metavar=("MODE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(*args.one)))
        return
    print(f"{'minutes':>8} {'path':>9} {'traced MB':>10} {'max RSS MB':>11} {'s':>6}")
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="prepare-memory-") as tmp:
        for minutes in args.minutes:
            src = Path(tmp) / f"{minutes:g}min.wav"
            _write(src, minutes)
            for mode in ("baseline", "whole", "streamed"):
                line = subprocess.run(
                    [sys.executable, __file__, "--one", mode, str(src), f"{tmp}/out-{mode}"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                r = json.loads(line)
                print(
                    f"{minutes:>8g} {mode:>9} {r['traced_mb']:>10.1f} {r['rss_mb']:>11.0f} "
                    f"{r['seconds']:>6.2f}"
                )
            src.unlink()


if __name__ == "__main__":
    main()
