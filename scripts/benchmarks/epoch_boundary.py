"""Wait for the first batch of each epoch: a DataLoader per epoch (as the pretraining
loop ran until 2026-11-26) against one loader whose sampler spans the epochs (now).

A sleep stands in for the training step the loader overlaps with. On a CPU with few
workers the loader is the bottleneck, so every batch waits; the first batch of an
epoch waits longer when the loader restarts its workers.

    python scripts/benchmarks/epoch_boundary.py --data small --workers 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from animalclap_edge.contracts.prompts import ALL_TEMPLATES
from training.model import build_tokenizer
from training.pretrain.data import Collate, EpochPlanDataset, RankBatches
from training.pretrain.mixed import training_data
from training.train import all_prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="small")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps-per-epoch", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--step-seconds", type=float, default=0.15)
    a = ap.parse_args()
    td = training_data(a.data, "zeroshot", 0, 0.1, None)
    collate = Collate(build_tokenizer(all_prompts(td.data.catalogue, td.seen_species)), int16=True)
    ds = EpochPlanDataset(td.data, td.train, list(ALL_TEMPLATES), False, 0, 2, 480_000)
    per = len(ds) // a.batch  # the plan's epoch length; only the first steps of each are read
    n = min(per, a.steps_per_epoch)

    def loader(sampler):
        return torch.utils.data.DataLoader(
            ds, batch_sampler=sampler, num_workers=a.workers, collate_fn=collate, prefetch_factor=4
        )

    def epoch_ranges():
        return [(e * per, e * per + n) for e in range(a.epochs)]

    class FirstSteps(RankBatches):  # the first n steps of each epoch, in one sampler
        def __iter__(self):
            for lo, hi in epoch_ranges():
                yield from RankBatches(per, a.batch, 0, 1, lo, hi)

    def timed(batches, waits):
        t = time.perf_counter()
        for k, _ in enumerate(batches):
            waits.append(time.perf_counter() - t)
            time.sleep(a.step_seconds)
            t = time.perf_counter()
            if k + 1 == n:
                return

    for mode in ("a loader per epoch", "one loader"):
        waits: list[float] = []
        t0 = time.perf_counter()
        if mode == "one loader":
            it = iter(loader(FirstSteps(per, a.batch, 0, 1)))
            for _ in range(a.epochs):
                timed(it, waits)
        else:
            for lo, hi in epoch_ranges():
                timed(iter(loader(RankBatches(per, a.batch, 0, 1, lo, hi))), waits)
        w = np.asarray(waits)
        print(
            f"{mode}: {time.perf_counter() - t0:.1f} s; first batch of each epoch waited "
            f"{', '.join(f'{x:.2f}' for x in w[::n])} s; median wait {np.median(w):.3f} s"
        )


if __name__ == "__main__":
    main()
