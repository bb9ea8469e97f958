"""Audio embeddings of labelled items with an `AudioEncoder`, in batches, on the
encoder's device, their windows read by loader workers; in a torchrun job, each rank
embeds its share and every rank gets all of them."""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as tdist
from tqdm.auto import tqdm

from training.devices import EmbedFeed, module_device
from training.labelled_audio import Item, LabelledSet


class _Windows(torch.utils.data.Dataset):
    """Item i -> its centred window, (n,) float32: `data.crop` decodes only the window
    where the item is a file at the target rate (a 3 s window of a 20 s recording
    reads a seventh of it), sample for sample as cropping the full decode."""

    def __init__(self, data: LabelledSet, items: list[Item], n: int):
        self.data, self.items, self.n = data, items, n

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.data.crop(self.items[i], self.n, None)


def process_group() -> tuple[int, int]:
    """(rank, world size) of the process group this process is in; (0, 1) outside one."""
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


def share(n: int, rank: int, world: int) -> range:
    """Rank `rank`'s contiguous block of n items: sizes differ by at most one, and the
    blocks in rank order are 0..n-1 (so gathering them in rank order keeps the order)."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (rank < extra))


def _stack(windows: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(windows))  # (B, n)


def embed_items(
    encoder: torch.nn.Module,
    data: LabelledSet,
    items: list[Item],
    window_samples: int,
    desc: str = "embedding audio",
    progress: bool = True,
    feed: EmbedFeed | None = None,
) -> np.ndarray:
    """(len(items), D) float32 on the CPU: one centred window per item, embedded on the
    device the encoder's weights are on. `feed`: the batch size and the processes that
    read the windows (0: this one); None: `EmbedFeed.for_device` of that device.

    Collective in a process group (torchrun; finetune's reports): every rank must call it
    with the same items. Each embeds its `share` and all get every row, in item order, so
    N GPUs take 1/N of the time where each used to embed every item."""
    rank, world = process_group()
    if world == 1:
        return _embed(encoder, data, items, window_samples, desc, progress, feed)
    mine = [items[i] for i in share(len(items), rank, world)]
    desc = f"{desc} (rank {rank}'s {len(mine)} of {len(items)})"
    emb: np.ndarray | Exception
    try:
        emb = _embed(encoder, data, mine, window_samples, desc, progress, feed)
        sent: np.ndarray | Exception = emb
    except Exception as e:  # sent to every rank, which would otherwise wait for its rows
        emb, sent = e, _picklable(e)
    parts: list = [None] * world
    tdist.all_gather_object(parts, sent)  # NCCL or gloo; rows of unequal counts pickled
    if isinstance(emb, Exception):
        raise emb
    for p in parts:
        if isinstance(p, Exception):
            raise p  # another rank's: its broken recording's line, said on every rank
    rows = [p for p in parts if len(p)]
    return np.concatenate(rows) if rows else emb


def _picklable(e: Exception) -> Exception:
    """`e` where it pickles (a ValueError naming a recording does), else its line."""
    import pickle

    try:
        pickle.dumps(e)
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


@torch.no_grad()
def _embed(
    encoder: torch.nn.Module,
    data: LabelledSet,
    items: list[Item],
    window_samples: int,
    desc: str,
    progress: bool,
    feed: EmbedFeed | None,
) -> np.ndarray:
    """embed_items in this process alone."""
    encoder.eval()
    device = module_device(encoder)
    feed = feed or EmbedFeed.for_device(device)
    if feed.workers < 0 or feed.batch_size < 1:
        raise ValueError(f"{feed}: give at least 1 clip a batch and 0 or more workers")
    loader = torch.utils.data.DataLoader(
        _Windows(data, items, window_samples),
        batch_size=feed.batch_size,
        num_workers=feed.workers,
        collate_fn=_stack,
        pin_memory=device.type == "cuda",
    )
    out = []
    # cleared from a terminal when done; kept in a log file, where clearing it leaves a
    # line of spaces
    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=not sys.stderr.isatty())
    batches = iter(loader)
    try:
        for x in batches:
            emb = encoder(x.to(device, non_blocking=True))
            out.append(emb.float().cpu().numpy())
            bar.update(len(x))
    finally:
        del batches  # its workers stop now, not when an error's traceback is dropped
        bar.close()
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
