"""How fast one thread of the main process can copy the loader's batches: the work a
DataLoader's pinning thread does on a GPU host (fault in the worker's fresh
shared-memory pages, copy them into a reused buffer), without a GPU.

A batch is 256 crops of 10 s at 48 kHz as int16 (245 MB), written in 2 workers into
fresh shared memory as `training.pretrain.data.Collate` does; the main thread copies
each into one preallocated tensor (standing for the pinned buffer).

    python scripts/benchmarks/copy_ceiling.py
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset


class _Indices(Dataset):
    def __len__(self) -> int:
        return 1_000_000

    def __getitem__(self, i: int) -> int:
        return i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--samples", type=int, default=480_000, help="per crop (10 s at 48 kHz)")
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    shape = (args.batch, args.samples)

    def collate(idx: list[int]) -> torch.Tensor:
        storage = torch.UntypedStorage._new_shared(shape[0] * shape[1] * 2)
        batch = torch.tensor([], dtype=torch.int16).set_(storage).view(shape)
        batch.fill_(idx[0] % 7)  # the worker writes every page, as Collate does
        return batch

    loader = DataLoader(
        _Indices(), batch_size=1, collate_fn=collate, num_workers=args.workers, prefetch_factor=2
    )
    dst = torch.empty(shape, dtype=torch.int16)
    it = iter(loader)
    next(it)  # worker start-up
    copy = 0.0
    for _ in range(args.batches):
        batch = next(it)
        t = time.perf_counter()
        dst.copy_(batch)
        copy += time.perf_counter() - t
    mb = dst.numel() * 2 / 2**20
    per = copy / args.batches
    print(
        f"one thread copies a fresh {mb:.0f} MB shared batch in {1000 * per:.0f} ms: "
        f"{args.batch / per:.0f} clips/s at most"
    )


if __name__ == "__main__":
    main()
