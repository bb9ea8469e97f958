"""Audio embeddings of labelled items with an `AudioEncoder`, in batches."""

from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from training.labelled_audio import Item, LabelledSet, crop


@torch.no_grad()
def embed_items(
    encoder: torch.nn.Module,
    data: LabelledSet,
    items: list[Item],
    window_samples: int,
    batch_size: int = 32,
    desc: str = "embedding audio",
    progress: bool = True,
) -> np.ndarray:
    """(len(items), D) float32: one centred window per item."""
    encoder.eval()
    out = []
    # cleared from a terminal when done; kept in a log file, where clearing it leaves a
    # line of spaces
    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=not sys.stderr.isatty())
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        x = np.stack([crop(data.load(it), window_samples, None) for it in chunk])
        out.append(encoder(torch.from_numpy(x)).float().numpy())
        bar.update(len(chunk))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
