"""How far the host may run ahead of the GPU: one step, not zero, not unbounded.

Synchronising after every step (what the loop and `bench` did until 2026-11-26) keeps
the GPU idle while the host waits for the next batch, moves it and launches the next
step's kernels: the "host overhead" `bench` measured (26% compiled, 12% with CUDA
graphs and the side-stream prefetch, on an H100). Not synchronising at all lets the
host queue steps until CUDA's launch queue is full, each holding a 245 MB batch in
pinned host memory and on the device. `RunAhead(depth)` waits, after queueing step
n, for step n - depth to finish: the host prepares and queues step n + 1 while the
GPU runs step n, and no more than `depth` steps are in flight.
"""

from __future__ import annotations

from collections import deque

import torch


class RunAhead:
    """`step_queued()` after each step's work is queued; `drain()` before timing ends.

    depth 0 synchronises after every step (the old behaviour, for A/B runs). On a CPU
    device every call is a no-op: the work already ran when it was queued.
    """

    def __init__(self, device: torch.device, depth: int = 1):
        if depth < 0:
            raise ValueError(f"run_ahead must be >= 0 steps, got {depth}")
        self.device, self.depth = device, depth
        self._in_flight: deque[torch.cuda.Event] = deque()

    def step_queued(self) -> None:
        if self.device.type != "cuda":
            return
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        self._in_flight.append(done)
        while len(self._in_flight) > self.depth:
            self._in_flight.popleft().synchronize()

    def drain(self) -> None:
        while self._in_flight:
            self._in_flight.popleft().synchronize()
