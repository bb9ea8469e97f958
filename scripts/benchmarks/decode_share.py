"""How much of `animalclap-edge run` on a long file is decoding and resampling.

Builds a 10-minute 44.1 kHz recording from the real clips in shared/realaudio
(WAV and FLAC), then times, each in a fresh process:
- the whole `run` on it (bundle load, decode, resample, inference, SQLite);
- `read_blocks` alone, as `run` reads it (10 s blocks, resampled to 48 kHz).
The second over the first bounds what a decode-ahead thread could save.

    python scripts/benchmarks/decode_share.py --bundle runs/bundle-student-fp32
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from realaudio import strung_together

REPO = Path(__file__).resolve().parents[2]
SR = 44_100


def long_recording(folder: Path, minutes: float) -> list[Path]:
    y = strung_together(SR)
    n = round(minutes * 60 * SR)
    y = np.tile(y, -(-n // len(y)))[:n]
    out = [folder / "long.wav", folder / "long.flac"]
    sf.write(out[0], y, SR, subtype="PCM_16")
    sf.write(out[1], y, SR)
    return out


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="bundle to run (default: the packaged demo bundle)")
    p.add_argument("--minutes", type=float, default=10.0)
    args = p.parse_args()
    decode = (
        "import sys, time; from animalclap_edge.audio.decode import read_blocks; "
        "t = time.perf_counter(); sum(len(b) for b in read_blocks(sys.argv[1], 48000, 10.0)); "
        "print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for f in long_recording(Path(tmp), args.minutes):
            run = [sys.executable, "-m", "animalclap_edge", "run", "--source", str(f), "--quiet"]
            run += ["--db", str(Path(tmp) / f"{f.suffix[1:]}.db")]
            if args.bundle:
                run += ["--bundle", args.bundle]
            whole = timed(run)
            out = subprocess.run(
                [sys.executable, "-c", decode, str(f)],
                check=True,
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            alone = float(out.stdout.strip())
            print(
                f"{f.name}: run {whole:.2f} s (process start included), decode+resample "
                f"{alone:.2f} s = {alone / whole:.0%} of it, for {args.minutes:g} min of audio"
            )


if __name__ == "__main__":
    main()
