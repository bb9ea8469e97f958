"""Audio embeddings of labelled items with an `AudioEncoder`, in batches, on the
encoder's device, their windows read by loader workers."""

from __future__ import annotations

import sys

import numpy as np
import torch
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


def _stack(windows: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(windows))  # (B, n)


@torch.no_grad()
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
    read the windows (0: this one); None: `EmbedFeed.for_device` of that device."""
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
