"""Collate + hand-over cost of the pretraining loader, without decoding.

Batches of 10 s crops go through DataLoader workers with `training.pretrain.data.Collate`
(rows written into a shared-memory batch) and with the stack-then-convert collate it
replaced (the peer, kept here), in alternating passes so that both see the same machine.

    python scripts/benchmarks/loader_collate.py --batch 64 --workers 2 --steps 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from training.pretrain.data import Collate


class _Tok:  # prompts are not what is measured
    def __call__(self, texts, **kw):
        ids = torch.ones((len(texts), 8), dtype=torch.long)
        return {"input_ids": ids, "attention_mask": ids}


class StackThenConvert(Collate):
    """The collate before 2026-11-26: np.stack, whole-batch int16 conversion."""

    def _waves(self, crops):
        x = np.stack(crops)
        if self.int16:
            x = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
        return torch.from_numpy(x)


class _Crops(torch.utils.data.Dataset):
    def __init__(self, samples: int):
        rng = np.random.default_rng(0)
        self.x = [(0.1 * rng.standard_normal(samples)).astype(np.float32) for _ in range(16)]

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, i: int):
        return self.x[i % 16], "a"


class PerItem(torch.utils.data.Dataset):
    """A dataset as the DataLoader saw EpochPlanDataset before 2026-11-27: without
    `__getitems__`, so a worker gets one crop array per key and collates them."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset[key]


def seconds_per_batch(loader: torch.utils.data.DataLoader, steps: int) -> float:
    """Mean wait per batch over `steps` batches, after two (workers started); the
    workers are shut down before returning."""
    it = iter(loader)
    try:
        for _ in range(2):
            next(it)
        t = time.perf_counter()
        for _ in range(steps):
            next(it)
        return (time.perf_counter() - t) / steps
    finally:
        del it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--passes", type=int, default=2)
    a = ap.parse_args()
    ds = _Crops(round(a.seconds * 48_000))
    for _ in range(a.passes):
        for name, collate in (
            ("stack-then-convert", StackThenConvert(_Tok(), int16=True)),
            ("rows into shared memory", Collate(_Tok(), int16=True)),
        ):
            loader = torch.utils.data.DataLoader(
                ds, batch_size=a.batch, num_workers=a.workers, collate_fn=collate
            )
            dt = seconds_per_batch(loader, a.steps)
            print(f"{name}: {dt * 1000:.0f} ms per batch of {a.batch}, {a.batch / dt:.0f} clips/s")


if __name__ == "__main__":
    main()
