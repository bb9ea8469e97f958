"""The pretraining loader alone, built as `pretrain` and `bench` build it (plan
dataset, collate with the real tokenizer, DataLoader workers; no pinning without a
GPU), on any data: the rate `bench` reports as loader_only, without running a model.

    python scripts/benchmarks/loader_alone.py --data PREPARED_FOLDER --batch 256 --workers 2

The model is a scratch one (its tokenizer is what the loader uses); the figure is
clips/s over whole rounds of the workers, start-up excluded, two passes.
"""

from __future__ import annotations

import argparse

import torch

from training.pretrain.bench import steady_loader_rate
from training.pretrain.config import load_config
from training.pretrain.data import RankBatches
from training.pretrain.loop import build_model, make_collate, make_dataset, make_loader
from training.pretrain.mixed import training_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared folder, benchmark size or folder")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12, help="batches timed per pass (rounded up)")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument(
        "--per-item",
        action="store_true",
        help="also time the loader as before 2026-11-27 (a crop array per clip, then "
        "collated), alternating with today's",
    )
    a = ap.parse_args()
    cfg = load_config(
        None,
        [f"data={a.data}", "init=scratch:small", f"batch_size={a.batch}", f"workers={a.workers}"],
    )
    td = training_data(cfg.data, cfg.split, cfg.seed, cfg.val_fraction, cfg.replay)
    loaded = build_model(cfg, td.data, td.seen_species)
    dataset = make_dataset(cfg, td, loaded)
    per_epoch = len(dataset) // cfg.batch_size
    collate = make_collate(cfg, loaded, td.data.catalogue, cfg.batch_size)
    print(f"{len(dataset)} clips per epoch, batch {a.batch}, {a.workers} workers")
    ways = {"crops straight into the batch": dataset}
    if a.per_item:
        from loader_collate import PerItem

        ways["a crop array per clip (before 2026-11-27)"] = PerItem(dataset)
    for p in range(a.passes):
        for name, ds in ways.items():
            sampler = RankBatches(per_epoch, cfg.batch_size, 0, 1, 0, 1_000 * per_epoch)
            it = iter(make_loader(cfg, ds, collate, sampler, torch.device("cpu")))
            rate = steady_loader_rate(it, a.steps, a.workers, a.batch)
            per = rate / max(a.workers, 1)
            print(f"pass {p + 1}, {name}: {rate:.0f} clips/s ({per:.0f} per worker)")
            del it


if __name__ == "__main__":
    main()
