"""Evaluation's reading of recordings: each window read alone (since 2026-11-29) against
each recording decoded whole and cropped (before), through loader workers, and with
--model, evaluation's embedding rate end to end on this machine's GPU and CPU.

Writes --files recordings of --seconds each (the paper's data averages about 22 s:
4,225 h over 700k recordings), cut from shared/realaudio's clips, as 48 kHz mono
16-bit FLAC (what `prepare` writes into shards; `--format wav` too); --items cycles
over them (the page cache then serves repeats, as a warm NVMe would). Then times, in
this one process and run:
- reading the 3 s centred window of every item, old way and new, alternating;
- the same windows through `embed_items`' loader with 0, 1 and 2 workers and a
  model that does nothing, so the figure is the reading alone;
- with --model, a scratch CLAP of that size (fp32): `embed_items` end to end on the
  device `--device` names, with the feed it gets there (batch size, workers), the
  model alone on one kept batch, and, where that device is a GPU, the model alone
  on this machine's CPU (where every evaluation ran before 2026-11-29).

    python scripts/benchmarks/eval_windows.py --files 200 --seconds 22 --model full
    python scripts/benchmarks/eval_windows.py --files 200 --items 5000 --model full  # a GPU
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from realaudio import strung_together

from animalclap_edge.contracts.traits import TraitSchema
from training.devices import EmbedFeed, module_device, resolve_device
from training.embed_audio import embed_items
from training.labelled_audio import Item, LabelledSet, crop, read_source

SR = 48_000


class _Nothing(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :4]


def recordings(folder: Path, n: int, items: int, seconds: float, fmt: str) -> LabelledSet:
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
    names = list(files)
    files.update({f"r{i}": files[names[i % n]] for i in range(n, items)})
    listed = [Item(k, "sp", "site|day", seconds) for k in files]
    return LabelledSet(
        name=str(folder),
        catalogue=None,  # type: ignore[arg-type]  # embedding reads no species
        items=listed,
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
    ap.add_argument("--files", type=int, default=200, help="distinct files written")
    ap.add_argument("--items", type=int, help="recordings read, cycling over the files")
    ap.add_argument("--seconds", type=float, default=22.0)
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--format", choices=("flac", "wav"), default="flac")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", choices=("small", "fast", "full"), help="also time a scratch model")
    ap.add_argument("--device", default="auto", help="where --model runs (auto: a GPU if any)")
    a = ap.parse_args()
    n = round(a.window * SR)
    with tempfile.TemporaryDirectory() as tmp:
        data = recordings(Path(tmp), a.files, a.items or a.files, a.seconds, a.format)
        items = data.items
        print(
            f"{len(items)} recordings ({a.files} distinct {a.format.upper()} files) of "
            f"{a.seconds:g} s, {a.window:g} s windows"
        )
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
            model_rates(a.model, resolve_device(a.device), data, n, w)


def model_rates(size: str, device: torch.device, data: LabelledSet, n: int, read: float) -> None:
    from training.labelled_audio import open_labelled
    from training.model import AudioEncoder
    from training.pretrain.config import load_config
    from training.pretrain.loop import build_model

    tiny = open_labelled("tiny")
    cfg = load_config(None, [f"init=scratch:{size}", "data=tiny"])
    built = build_model(cfg, tiny, list(tiny.catalogue.ids))
    model, frontend = built.model.eval(), built.frontend
    feed = EmbedFeed.for_device(device)
    enc = AudioEncoder(model.to(device), frontend, mode="fft")
    alone = alone_rate(enc, data, n, feed.batch_size)
    t = time.perf_counter()
    embed_items(enc, data, data.items, n, progress=False, feed=feed)
    sync(device)
    whole = len(data.items) / (time.perf_counter() - t)
    print(
        f"scratch:{size} on {device}, fp32, batch {feed.batch_size}, {feed.workers} workers: "
        f"embed_items end to end {whole:.1f} windows/s; the model alone {alone:.1f} "
        f"(reading alone, one process: {read:.0f})"
    )
    if device.type == "cuda":
        cpu = AudioEncoder(model.cpu(), frontend, mode="fft")
        slow = alone_rate(cpu, data, n, 32)
        print(
            f"the same model alone on this machine's CPU ({os.cpu_count()} cores, batch 32): "
            f"{slow:.1f} windows/s: end to end on {device} is {whole / slow:.0f}x that"
        )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def alone_rate(enc, data: LabelledSet, n: int, batch: int) -> float:
    """The encoder's windows/s on one batch kept on its device (after a warm-up)."""
    device = module_device(enc.eval())
    items = [data.items[i % len(data.items)] for i in range(batch)]
    x = torch.from_numpy(np.stack([data.crop(it, n, None) for it in items])).to(device)
    enc(x)
    sync(device)
    reps = 3 if device.type == "cpu" else 20
    t = time.perf_counter()
    for _ in range(reps):
        enc(x)
    sync(device)
    return reps * batch / (time.perf_counter() - t)


if __name__ == "__main__":
    main()
