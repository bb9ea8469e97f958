"""Evaluation's reading of recordings: each window read alone (since 2026-11-29) against
each recording decoded whole and cropped (before), and through loader workers.

Writes --files recordings of --seconds each (the paper's data averages about 22 s:
4,225 h over 700k recordings), cut from shared/realaudio's clips, as 48 kHz mono
FLAC (what `prepare` writes into shards, `--format wav` too), then times, in this
one process and run:
- reading the 3 s centred window of every file, old way and new, alternating;
- the same windows through `embed_items`' loader with 0, 1 and 2 workers and a
  model that does nothing, so the figure is the reading alone;
- with --model, a scratch CLAP of that size embedding them on this device (fp32),
  for the share of evaluation that reading is.

    python scripts/benchmarks/eval_windows.py --files 200 --seconds 22 --model full
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from realaudio import strung_together

from animalclap_edge.contracts.traits import TraitSchema
from training.devices import EmbedFeed
from training.embed_audio import embed_items
from training.labelled_audio import Item, LabelledSet, crop, read_source

SR = 48_000


class _Nothing(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :4]


def recordings(folder: Path, n: int, seconds: float, fmt: str) -> LabelledSet:
    y = strung_together(SR)
    length = round(seconds * SR)
    y = np.tile(y, -(-(length * 2) // len(y)))
    rng = np.random.default_rng(0)
    files = {}
    for i in range(n):
        start = int(rng.integers(0, len(y) - length))
        f = folder / f"r{i:05d}.{fmt}"
        sf.write(f, y[start : start + length], SR, subtype="PCM_16")
        files[f"r{i}"] = f
    items = [Item(k, "sp", "site|day", seconds) for k in files]
    return LabelledSet(
        name=str(folder),
        catalogue=None,  # type: ignore[arg-type]  # embedding reads no species
        items=items,
        load=lambda it: read_source(files[it.id], SR),
        traits=None,
        schema=TraitSchema.default(),
        file_of=lambda it: files[it.id],
        loads_files=True,
    )


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=22.0)
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--format", choices=("flac", "wav"), default="flac")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", choices=("small", "fast", "full"), help="also time a scratch model")
    a = ap.parse_args()
    n = round(a.window * SR)
    with tempfile.TemporaryDirectory() as tmp:
        data = recordings(Path(tmp), a.files, a.seconds, a.format)
        items = data.items
        print(f"{a.files} {a.format.upper()} files of {a.seconds:g} s, {a.window:g} s windows")
        old, new = [], []
        for _ in range(a.rounds):  # alternating, so a noisy machine hits both alike
            old.append(rate(lambda: [crop(data.load(it), n, None) for it in items], len(items)))
            new.append(rate(lambda: [data.crop(it, n, None) for it in items], len(items)))
        o, w = np.median(old), np.median(new)
        print(f"decoded whole, then cropped: {o:.0f} windows/s (median of {a.rounds})")
        print(f"the window read alone:       {w:.0f} windows/s ({w / o:.2f}x)")
        for workers in (0, 1, 2):
            r = rate(
                lambda w=workers: embed_items(
                    _Nothing(), data, items, n, progress=False, feed=EmbedFeed(32, w)
                ),
                len(items),
            )
            print(f"embed_items' loader, {workers} workers, no model: {r:.0f} windows/s")
        if a.model:
            from training.devices import resolve_device
            from training.model import AudioEncoder
            from training.pretrain.config import load_config
            from training.pretrain.loop import build_model

            device = resolve_device("auto")
            cfg = load_config(None, [f"init=scratch:{a.model}", "data=tiny"])
            from training.labelled_audio import open_labelled

            tiny = open_labelled("tiny")
            loaded = build_model(cfg, tiny, list(tiny.catalogue.ids))
            enc = AudioEncoder(loaded.model.to(device), loaded.frontend, mode="fft")
            batch = min(32, len(items))
            x = torch.from_numpy(np.stack([data.crop(it, n, None) for it in items[:batch]]))
            with torch.no_grad():
                enc(x.to(device))  # warm-up
                m = rate(lambda: enc(x.to(device)).cpu(), batch)
            print(
                f"scratch:{a.model} on {device}, fp32, batch {batch}: {m:.1f} windows/s; "
                f"reading is {m / (m + w):.1%} of the time with the window alone, "
                f"{m / (m + o):.1%} decoding whole"
            )


if __name__ == "__main__":
    main()
