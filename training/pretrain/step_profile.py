"""Where the step's time goes: torch.profiler over a few runs of bench's step alone,
the device time summed by kind of kernel (matrix products, attention, normalisation,
...) beside the wall time, so that idle gaps show. Written as a table, a JSON file and
a gzipped Chrome trace (https://ui.perfetto.dev or chrome://tracing open it).

On a GPU the kernels are what is summed; on a CPU, the aten operators' own time
across the intra-op threads (so "busy" can pass 100% there).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# First match wins: the memory-efficient attention kernels are CUTLASS ones too, and
# compiled kernels name the operators they fused (a fused layer norm stays a norm).
KINDS = (
    ("attention", r"fmha|flash|attention"),
    ("matmul", r"gemm|nvjet|xmma|cutlass|cublas|aten::(mm|bmm|addmm|matmul|linear)$"),
    ("convolution", r"conv|cudnn"),
    ("front-end FFT", r"fft"),
    ("normalisation", r"layer_?norm|batch_?norm|group_?norm"),
    ("softmax", r"softmax"),
    ("optimizer", r"adam|foreach|multi_tensor|optimizer"),
    ("copy", r"copy|memcpy|memset|\bcat\b"),
    ("compiled, fused", r"triton_|cpp_fused"),
    (
        "elementwise, reductions",
        r"elementwise|vectorized|unrolled|reduce_kernel|"
        r"aten::(add|sub|mul|div|sqrt|rsqrt|exp|log|pow|lerp|neg|where|gelu|relu|"
        r"sigmoid|tanh|clamp|bernoulli|abs|sum|mean|amax|max|min|fill|zero|norm|linalg)",
    ),
)
TOP = 15  # kernels listed by name
FILES = ("profile.md", "profile.json", "trace.json.gz")


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, low)), "other")


@dataclass
class StepProfile:
    device: str
    steps: int
    wall_ms: float  # per step, the host timing the profiled steps (one sync at the end)
    busy_ms: float  # per step, summed kernel (GPU) or operator (CPU) time
    kinds: dict[str, float]  # ms per step by kind, largest first
    top: list[tuple[str, float, float]]  # (name, ms per step, calls per step)
    note: str = ""

    def table(self) -> str:
        cpu = self.device == "cpu"
        unit = "operator time, all threads" if cpu else "kernel time"
        busy = self.busy_ms / self.wall_ms if self.wall_ms else 0.0
        lines = [
            f"where the step's time goes ({self.steps} steps of the step alone on "
            f"{self.device}): {self.busy_ms:.1f} ms busy per step ({unit}) of "
            f"{self.wall_ms:.1f} ms wall ({busy:.0%})",
            "",
            "| kind | ms per step | share of busy |",
            "|---|---|---|",
        ]
        for kind, ms in self.kinds.items():
            lines.append(f"| {kind} | {ms:.2f} | {ms / max(self.busy_ms, 1e-9):.1%} |")
        what = "operator" if cpu else "kernel"
        lines += ["", f"| {what} | ms per step | calls per step |", "|---|---|---|"]
        for name, ms, calls in self.top:
            short = name if len(name) <= 90 else name[:87] + "..."
            lines.append(f"| `{short}` | {ms:.2f} | {calls:g} |")
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


def profile_step(
    step: Callable[[], None], steps: int, device: torch.device, folder: str | Path
) -> StepProfile:
    """Run `step` `steps` times under torch.profiler and write FILES into `folder`."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync()
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        wall = (time.perf_counter() - t0) / steps
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    result = summarise(prof.key_averages(), steps, wall, cuda, name)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.md").write_text(result.table() + "\n", encoding="utf-8")
    (out / "profile.json").write_text(json.dumps(asdict(result), indent=2), encoding="utf-8")
    prof.export_chrome_trace(str(out / "trace.json.gz"))  # gzipped by its name
    return result


def summarise(rows, steps: int, wall_s: float, cuda: bool, device: str = "") -> StepProfile:
    """Per-step times by kind from key_averages() rows: the kernels' own device time
    on a GPU, the operators' own CPU time elsewhere."""
    times: dict[str, tuple[float, int]] = {}
    for r in rows:
        if cuda:
            if r.device_type != torch.autograd.DeviceType.CUDA or r.self_device_time_total <= 0:
                continue
            us = r.self_device_time_total
        else:
            if r.self_cpu_time_total <= 0 or r.key.startswith("ProfilerStep"):
                continue
            us = r.self_cpu_time_total
        t, n = times.get(r.key, (0.0, 0))
        times[r.key] = (t + us, n + r.count)
    kinds: dict[str, float] = {}
    for name, (us, _) in times.items():
        kind = kind_of(name)
        kinds[kind] = kinds.get(kind, 0.0) + us / 1e3 / steps
    busy = sum(kinds.values())
    ranked = sorted(times.items(), key=lambda kv: -kv[1][0])[:TOP]
    note = ""
    if cuda and not times:
        note = (
            "No kernel was recorded on the GPU: CUDA graphs (compile_mode=reduce-overhead) "
            "replay kernels the profiler may not see; profile with compile_mode=default."
        )
    return StepProfile(
        device=device,
        steps=steps,
        wall_ms=round(wall_s * 1e3, 3),
        busy_ms=round(busy, 3),
        kinds={k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        top=[(name, round(us / 1e3 / steps, 3), n / steps) for name, (us, n) in ranked],
        note=note,
    )
