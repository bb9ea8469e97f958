"""A ring of batch slots in page-locked shared memory: crops go from the loader's
workers to the GPU without the main process touching them.

With `pin_memory=True` each batch crosses the host three times: a worker writes it
into fresh shared memory, the main process's one pinning thread faults those pages
in and copies the batch (245 MB at batch 256) into pinned memory, and the GPU reads
that. On an H100 host (2026-11-27) that thread capped 14 workers at 1,945-2,459
clips/s pinned against 5,200-5,254 unpinned: the loader's limit, level with the step.

Here the slots are allocated once in shared memory and page-locked once
(cudaHostRegister, as torch.distributed's checkpoint stager does for its shared
buffers); workers inherit them and write each batch's crops straight into the slot
its sequence number names; the main process receives only the slot's number and the
GPU copies from the slot directly (DMA), on a side stream that overlaps the step
before. Nothing is copied on the host after the worker's read.

Slot reuse: a DataLoader keeps at most `workers * prefetch_factor` batches
outstanding, and sends the next batch's keys to a worker only when it hands one over.
So when batch j is handed over, a worker may begin writing batch j + W * P; with
K = W * P + MARGIN slots that is the slot of batch j - MARGIN, whose copy to the GPU
`RingFeed` waits for before it takes batch j.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Protocol

import torch
from torch.utils.data import Sampler

from training.pretrain.packing import clips_in

# Batches taken whose slots are not yet reused: the copy of batch j - MARGIN must end
# before batch j is taken (module docstring). On a CPU device a yielded batch's wave is
# the slot itself and stays valid until MARGIN more batches have been taken.
MARGIN = 2


class PinnedRing:
    """`slots` batches of (rows, samples) crops in shared memory, page-locked for
    `device` when it is a GPU. Use as a context manager, or `close()` when the loader
    that fills it has stopped: the memory stays locked until then."""

    def __init__(self, slots: int, rows: int, samples: int, dtype: torch.dtype, device):
        self.slots, self.device = slots, torch.device(device)
        nbytes = slots * rows * samples * dtype.itemsize
        try:
            self.wave = torch.empty((slots, rows, samples), dtype=dtype).share_memory_()
        except (RuntimeError, OSError) as e:  # /dev/shm too small (containers: 64 MB)
            raise RuntimeError(
                f"pinned_ring: could not allocate {nbytes / 2**30:.1f} GB of shared memory "
                f"for {slots} batch slots ({e}): give the container more /dev/shm "
                "(docker --shm-size), lower workers, or set pinned_ring=false"
            ) from e
        self._locked = False
        if self.device.type == "cuda":
            err = int(torch.cuda.cudart().cudaHostRegister(self.wave.data_ptr(), nbytes, 1))
            if err:  # 1: cudaHostRegisterPortable, as torch's own shared-buffer pinning
                raise RuntimeError(
                    f"pinned_ring: could not page-lock {nbytes / 2**30:.1f} GB for "
                    f"{slots} batch slots (cudaError {err}): lower workers or set "
                    "pinned_ring=false"
                )
            self._locked = True

    @classmethod
    def for_loader(
        cls, outstanding: int, rows: int, samples: int, int16: bool, device
    ) -> PinnedRing:
        """Enough slots for a DataLoader that keeps `outstanding` batches in its workers'
        queues (workers x prefetch_factor; 0 without workers)."""
        dtype = torch.int16 if int16 else torch.float32
        return cls(outstanding + MARGIN, rows, samples, dtype, device)

    def slot(self, k: int) -> torch.Tensor:
        return self.wave[k]

    @property
    def gigabytes(self) -> float:
        return self.wave.numel() * self.wave.element_size() / 2**30

    def close(self) -> None:
        if self._locked:
            torch.cuda.synchronize(self.device)  # no copy may still read the slots
            torch.cuda.cudart().cudaHostUnregister(self.wave.data_ptr())
            self._locked = False

    def __enter__(self) -> PinnedRing:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SlotKeys(list):
    """One batch's dataset keys, and the ring slot its crops go into."""

    def __init__(self, keys: Iterable, slot: int):
        super().__init__(keys)
        self.slot = slot

    def __reduce__(self):  # sent to a worker through a queue: keep the slot
        return (SlotKeys, (list(self), self.slot))


class _Batches(Protocol):
    """A batch sampler that knows its length (data.RankBatches): batches of keys."""

    def __iter__(self) -> Iterator[Iterable[object]]: ...

    def __len__(self) -> int: ...


class RingBatches(Sampler):
    """A batch sampler's batches, batch i into slot i % slots."""

    def __init__(self, batches: _Batches, slots: int):
        self.batches, self.slots = batches, slots

    def __iter__(self) -> Iterator[SlotKeys]:
        for i, keys in enumerate(self.batches):
            yield SlotKeys(keys, i % self.slots)

    def __len__(self) -> int:
        return len(self.batches)


class RingFeed:
    """Iterate a DataLoader over `RingBatches` (batches that name their slot instead
    of carrying their wave) as whole batches on `device`; on a GPU the wave is copied
    from its locked slot on a side stream, and the compute stream waits for it."""

    def __init__(self, loader: Iterable[dict], ring: PinnedRing, device: torch.device):
        self.loader, self.ring, self.device = loader, ring, torch.device(device)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # a side stream on a GPU alone
        side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        taken: deque[torch.cuda.Event | None] = deque()  # one per batch, oldest first
        for batch in _pulled(self.loader, taken):
            host = self.ring.slot(int(batch.pop("slot")))[: clips_in(batch)]
            if side is None:
                taken.append(None)
                yield {"wave": host, **batch}
                continue
            compute = torch.cuda.current_stream(self.device)
            with torch.cuda.stream(side):
                out = {"wave": host.to(self.device, non_blocking=True)}
                copied = torch.cuda.Event()
                copied.record(side)
            out.update({k: v.to(self.device, non_blocking=True) for k, v in batch.items()})
            compute.wait_stream(side)
            out["wave"].record_stream(compute)  # allocated on side, used on compute
            taken.append(copied)
            yield out


def _pulled(loader: Iterable[dict], taken: deque) -> Iterator[dict]:
    """The loader's batches, each pulled only once the slot its dispatch may reuse is
    free: the copy of the batch taken MARGIN batches before has ended."""
    it = iter(loader)
    while True:
        while len(taken) >= MARGIN:
            oldest = taken.popleft()
            if oldest is not None:
                oldest.synchronize()
        batch = next(it, None)
        if batch is None:
            return
        yield batch
