"""torch.distributed set-up from torchrun's environment, and feature gathering."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """One process, or one rank of a torchrun job (RANK/WORLD_SIZE/LOCAL_RANK set).

    NCCL on CUDA, gloo on CPU. Each rank uses the GPU of its LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def close(d: Dist) -> None:
    if d.world > 1 and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.world > 1:
        tdist.barrier()


def gather_with_grad(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """(B, D) per rank -> (world * B, D), rank order; gradients flow back to each rank."""
    if d.world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def all_mean(x: torch.Tensor, d: Dist) -> float:
    """Mean of a scalar over ranks (for logging the global loss)."""
    if d.world > 1:
        x = x.clone()
        tdist.all_reduce(x)
        x /= d.world
    return x.item()
