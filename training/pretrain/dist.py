"""torch.distributed set-up from torchrun's environment, and feature gathering."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from training.devices import resolve_device
from training.torchrun import torchrun_rank_world


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    # whether init_distributed made the process group (and `close` ends it); not when a
    # caller already had one (finetune holds one across its reports and the training)
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """One process, or one rank of a torchrun job (RANK/WORLD_SIZE/LOCAL_RANK set).

    NCCL on CUDA, gloo on CPU. Each rank uses the GPU of its LOCAL_RANK.
    """
    rank, world = torchrun_rank_world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device("auto")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    owns = world > 1 and not tdist.is_initialized()
    if owns:
        tdist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device, owns_group=owns)


def agree(d: Dist, values: dict[str, object], fix: str) -> None:
    """Refuse, on every rank alike, `values` that differ between ranks: nodes started
    with other settings or another --out ran on (one model per node, silently), hung in
    a collective, or aborted inside gloo; a ValueError naming each key that differs,
    rank 0's value and the first other, and `fix`. A no-op on one rank."""
    if d.world == 1:
        return
    every: list[dict[str, object] | None] = [None] * d.world
    tdist.all_gather_object(every, values)
    first = every[0] or {}
    differ = []
    for key in sorted({k for v in every for k in (v or {})}):
        other = next((r for r, v in enumerate(every) if (v or {}).get(key) != first.get(key)), None)
        if other is not None:
            theirs = (every[other] or {}).get(key)
            differ.append(f"{key} (rank 0: {first.get(key)!r}, rank {other}: {theirs!r})")
    if differ:
        raise ValueError(f"the ranks disagree on {', '.join(differ)}: {fix}")


def close(d: Dist) -> None:
    """Ends the process group where `d` made it."""
    if d.owns_group and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.world > 1:
        tdist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands each rank the gradient of its own rows, summed
    over ranks (every rank's loss depends on every rank's rows). Ours rather than
    torch.distributed.nn.functional.all_gather, which torch 2.13 deprecates in favour
    of a private module; all_reduce + slice works on gloo (CPU tests) and NCCL alike."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, world: int, rank: int) -> torch.Tensor:
        ctx.world, ctx.rank, ctx.rows = world, rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        tdist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        tdist.all_reduce(grad)  # sum of every rank's d(loss_r)/d(rows)
        mine = grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]
        return mine, None, None


def gather_with_grad(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """(B, D) per rank -> (world * B, D), rank order; gradients flow back to each rank."""
    if d.world == 1:
        return x
    return _GatherWithGrad.apply(x, d.world, d.rank)


def all_mean(x: torch.Tensor, d: Dist) -> float:
    """Mean of a scalar over ranks (for logging the global loss)."""
    if d.world > 1:
        x = x.clone()
        tdist.all_reduce(x)
        x /= d.world
    return x.item()


def all_means(x: torch.Tensor, d: Dist) -> list[float]:
    """Means of a vector's entries over ranks, in one reduction."""
    if d.world > 1:
        x = x.clone()
        tdist.all_reduce(x)
        x /= d.world
    return x.tolist()
