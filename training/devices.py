"""Which device a command's model runs on, chosen once, and how embedding feeds it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

DEVICE_CHOICES = "auto (this process's GPU where torch sees one, else the CPU), cpu, cuda or cuda:N"


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto': this process's GPU (torchrun's LOCAL_RANK, else the first) where torch
    sees one, else the CPU; 'cpu'; 'cuda' or 'cuda:N', refused in one line where torch
    sees no such GPU (a CPU-only build of torch, or CUDA_VISIBLE_DEVICES)."""
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device {spec!r}: not a device; give {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {spec!r}: not supported; give {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {spec!r}: torch sees no CUDA GPU here (torch {torch.__version__}, "
            "CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); give --device cpu or auto"
        )
    index = device.index if device.index is not None else 0
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"device {spec!r}: torch sees {torch.cuda.device_count()} GPU(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return torch.device("cuda", index)


@dataclass(frozen=True)
class EmbedFeed:
    """Batch size and window-reading workers for embedding a set of recordings."""

    batch_size: int
    workers: int

    @classmethod
    def for_device(cls, device: torch.device) -> EmbedFeed:
        """On a CPU the model is the limit and its threads use every core: windows are
        read in this process, 32 at a time. On a GPU one decoding thread is the limit:
        up to 8 workers (a share of the cores per torchrun process), 128 at a time."""
        if device.type != "cuda":
            return cls(batch_size=32, workers=0)
        per_process = (os.cpu_count() or 2) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return cls(batch_size=128, workers=max(0, min(8, per_process - 1)))


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's weights are (the CPU for one without weights)."""
    return next(module.parameters(), torch.empty(0)).device
