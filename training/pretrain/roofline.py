"""A roofline bound on one training step: how fast it could run on a GPU, and so the
highest MFU its shapes allow, from the operators it calls.

Each aten operator of an eager forward and backward is recorded with its FLOPs (the
formulas `torch.utils.flop_counter` counts MFU with) and the bytes of the tensors it
reads and writes (views move nothing and are left out). On a device of peak P FLOP/s
and memory bandwidth W B/s an operator takes at least max(FLOPs / P, bytes / W): a
matrix product whose inner or outer sizes are small (HTS-AT's first stage has 96
channels, its attention heads 24, its windows 64 tokens) is bound by memory, not by
the tensor cores. Three bounds on the step:

- "unfused": every operator at its own roofline, as eager runs them (each elementwise
  operator reads and writes its tensors);
- "fused": only the operators that have FLOPs, at their roofline, with every other
  operator free (as if each were fused into a neighbour), plus a fused AdamW's traffic.
  Short of fusing matrix products into each other (a flash kernel does, for
  attention's: the next bound), no compiled step does better on these shapes;
- "fused, flash attention": fused, with attention's products reading and writing only
  q, k, v and their output: the CPU records attention's math path (batched products,
  softmax), whose scores a flash kernel on a GPU keeps on chip.

All three assume every kernel runs at the device's peak or its full bandwidth, which
none does; they are ceilings, not predictions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

if TYPE_CHECKING:
    from training.pretrain.config import PretrainConfig

# bytes a fused AdamW moves per fp32 parameter: the weight, exp_avg and exp_avg_sq read
# and written (24), the gradient read (4)
ADAMW_BYTES_PER_PARAM = 28

# (kind, operator-name fragments), first match wins; names are aten overload packets
KINDS = (
    # every batched product in HTS-AT and RoBERTa is attention's (scores and their
    # weighted sum, on the math path the CPU takes); their projections are mm and addmm
    ("attention", ("attention", "aten.bmm", "aten.baddbmm")),
    ("matmul", ("aten.mm", "aten.addmm", "aten._scaled_mm")),
    ("convolution", ("conv",)),
    ("front-end FFT", ("fft",)),
    ("normalisation", ("layer_norm", "batch_norm", "group_norm")),
    ("softmax", ("softmax",)),
    ("copy", ("copy", "clone", "aten.cat", "aten.stack", "roll", "constant_pad", "index")),
)


def kind_of(name: str) -> str:
    return next((k for k, parts in KINDS if any(p in name for p in parts)), "elementwise")


@dataclass(frozen=True)
class Device:
    name: str
    peak_flops: float  # dense bf16 tensor-core FLOP/s
    bandwidth: float  # memory, bytes/s


# A device's figures from NVIDIA's data sheets, by a part of its name: the first key
# the name contains, so variants come before their family (an SXM H100 reads "NVIDIA
# H100 80GB HBM3"). Dense bf16 tensor-core peaks, TFLOP/s (the sparse figures halved):
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
}
# and memory bandwidth, TB/s
MEMORY_TBPS = {
    "H100 PCIe": 2.0,
    "H100 NVL": 3.9,
    "H200 NVL": 4.8,
    "H100": 3.35,
    "H200": 4.8,
    "A100-SXM4-40GB": 1.555,
    "A100-PCIE-40GB": 1.555,
    "A100 80GB PCIe": 1.935,
    "A100": 2.039,
    "L40S": 0.864,
    "A10": 0.6,
}


def by_name(table: dict[str, float], device_name: str) -> float | None:
    """`table`'s figure for the first key `device_name` contains; None for none."""
    return next((v for k, v in table.items() if k in device_name), None)


def _sxm(name: str, key: str) -> Device:
    peak, tbps = PEAK_BF16_TFLOPS[key], MEMORY_TBPS[key]
    return Device(f"{name} ({peak:g} TFLOP/s bf16, {tbps:g} TB/s)", peak * 1e12, tbps * 1e12)


# the SXM parts roofline.py bounds a step on without the GPU
DEVICES = {
    "h100": _sxm("NVIDIA H100 SXM", "H100"),
    "h200": _sxm("NVIDIA H200 SXM", "H200"),
    "a100": _sxm("NVIDIA A100 SXM 80GB", "A100"),
}


@dataclass(frozen=True)
class OpCost:
    name: str  # aten overload packet, e.g. "aten.mm"
    flops: float
    bytes: float  # read and written (a tensor written in place twice)
    largest: float = 0.0  # bytes of its largest tensor (attention's: the scores)

    @property
    def kind(self) -> str:
        return kind_of(self.name)

    def seconds(self, device: Device) -> float:
        return max(self.flops / device.peak_flops, self.bytes / device.bandwidth)


def _tensor_bytes(values) -> tuple[float, float]:
    """(total, largest) bytes of the distinct tensors among `values`."""
    sizes = {
        id(t): t.numel() * t.element_size()
        for t in tree_leaves(values)
        if isinstance(t, torch.Tensor)
    }
    return float(sum(sizes.values())), float(max(sizes.values(), default=0))


def _written_bytes(func, args, kwargs) -> float:
    """Bytes of the arguments `func` writes in place (or into out=): read and written,
    they count twice, where _tensor_bytes counts them once."""
    if not func._schema.is_mutable:
        return 0.0
    total = 0.0
    for i, a in enumerate(func._schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            value = args[i] if i < len(args) else kwargs.get(a.name)
            total += sum(
                t.numel() * t.element_size()
                for t in tree_leaves(value)
                if isinstance(t, torch.Tensor)
            )
    return total


def _aliases(func, args, out) -> bool:
    """Whether every tensor `func` returned shares storage with one it was given, and
    it wrote none (an in-place or out= operator writes through its alias)."""
    if func._schema.is_mutable:
        return False
    given = {
        t.untyped_storage().data_ptr() for t in tree_leaves(args) if isinstance(t, torch.Tensor)
    }
    outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    return bool(outs) and all(t.untyped_storage().data_ptr() in given for t in outs)


class OpRecorder(TorchDispatchMode):
    """Records every aten operator run under it as an OpCost, in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[OpCost] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if _aliases(func, args, out):
            return out  # a view (or _unsafe_view, detach...) reads and writes nothing
        flops = 0.0
        if packet in flop_registry:
            flops = float(flop_registry[packet](*args, **kwargs, out_val=out))
        moved, largest = _tensor_bytes((args, kwargs, out))
        moved += _written_bytes(func, args, kwargs)
        self.ops.append(OpCost(str(packet), flops, moved, largest))
        return out


def record(fn: Callable[[], object]) -> list[OpCost]:
    """The operators `fn()` runs, in order."""
    with OpRecorder() as rec:
        fn()
    return rec.ops


def extrapolate(
    small: Sequence[OpCost], large: Sequence[OpCost], n_small: int, n_large: int, batch: int
) -> list[OpCost]:
    """Each operator's FLOPs and bytes at `batch`, on the line through its costs at
    n_small and n_large clips: the activations grow with the batch, a weight read does
    not. The two recordings must call the same operators in the same order."""
    return fit([small, large], [(n_small,), (n_large,)], (batch,))


def fit(
    recordings: Sequence[Sequence[OpCost]],
    points: Sequence[tuple[float, ...]],
    at: tuple[float, ...],
) -> list[OpCost]:
    """Each operator's costs at `at`, from its costs in `recordings` made at `points`
    (one more recording than a point has coordinates: clips, or clips and rows of packed
    prompts), solved exactly as a + b . point. Every recording must call the same
    operators in the same order."""
    names = [o.name for o in recordings[0]]
    for rec, point in zip(recordings[1:], points[1:], strict=True):
        if [o.name for o in rec] != names:
            raise ValueError(
                f"the steps at {points[0]} and {point} call different operators "
                f"({len(recordings[0])} against {len(rec)}): cannot extrapolate one from "
                "the other"
            )
    x = np.array([[1.0, *p] for p in points])  # (k, k)
    y = np.array([[[o.flops, o.bytes, o.largest] for o in rec] for rec in recordings])
    coef = np.linalg.solve(x, y.reshape(len(points), -1))  # (k, ops * 3)
    got = np.maximum(0.0, np.array([1.0, *at]) @ coef).reshape(len(names), 3)
    return [OpCost(n, *map(float, row)) for n, row in zip(names, got, strict=True)]


@dataclass(frozen=True)
class Bound:
    device: Device
    model_flops: float  # FLOPs of the step, as MFU counts them
    unfused_s: float
    fused_s: float
    # fused, with attention's products moving no scores: a flash kernel keeps them on
    # chip, where the math path the CPU records writes them out
    flash_s: float
    optimizer_s: float  # a fused AdamW's share of both
    by_kind: dict[str, dict[str, float]]  # kind -> flops, bytes, unfused_s, memory_bound_flops

    @property
    def mfu_unfused(self) -> float:
        return self.model_flops / (self.unfused_s * self.device.peak_flops)

    @property
    def mfu_fused(self) -> float:
        return self.model_flops / (self.fused_s * self.device.peak_flops)

    @property
    def mfu_flash(self) -> float:
        return self.model_flops / (self.flash_s * self.device.peak_flops)


def bound(
    ops: Sequence[OpCost], device: Device, params: int, attention: Sequence[str] = ("aten.bmm",)
) -> Bound:
    """The step's rooflines on `device`; `params`: trainable parameters (AdamW);
    `attention`: the operators that are attention's products (see KINDS)."""
    optimizer_s = params * ADAMW_BYTES_PER_PARAM / device.bandwidth
    figures = ("flops", "bytes", "unfused_s", "fused_s", "flash_s", "memory_bound_flops")
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(figures, 0.0))
    for op in ops:
        s = op.seconds(device)
        k = kinds[op.kind]
        k["flops"] += op.flops
        k["bytes"] += op.bytes
        k["unfused_s"] += s
        if op.flops:
            k["fused_s"] += s
            # a flash kernel reads and writes q, k, v and the output, never the scores:
            # each of attention's products has one operand the scores' size, its largest
            k["flash_s"] += (
                max(op.flops / device.peak_flops, (op.bytes - op.largest) / device.bandwidth)
                if op.name in attention
                else s
            )
            if op.bytes / device.bandwidth > op.flops / device.peak_flops:
                k["memory_bound_flops"] += op.flops

    def total(key: str) -> float:
        return sum(k[key] for k in kinds.values())

    return Bound(
        device=device,
        model_flops=total("flops"),
        unfused_s=total("unfused_s") + optimizer_s,
        fused_s=total("fused_s") + optimizer_s,
        flash_s=total("flash_s") + optimizer_s,
        optimizer_s=optimizer_s,
        by_kind=dict(kinds),
    )


# one colour a kind in plot_bound, in the order of KINDS, then the rest
COLOURS = {
    "attention": "#762a83",
    "matmul": "#1b7837",
    "convolution": "#5aae61",
    "front-end FFT": "#a6dba0",
    "normalisation": "#2166ac",
    "softmax": "#92c5de",
    "copy": "#d6604d",
    "elementwise": "#f4a582",
    "AdamW": "#777777",
}


def plot_bound(b: Bound, out_png: str | Path, title: str, measured_s: float | None = None) -> Path:
    """The three bounds as bars of their kinds' time (ms), and a measured step beside
    them: where a step's time could go, and how far it is from there."""
    # Figure, not pyplot: no global backend or figure registry touched
    from matplotlib.figure import Figure

    bars = [("unfused", "unfused_s"), ("fused", "fused_s"), ("flash", "flash_s")]
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    for y, (_, key) in enumerate(bars):
        left = 0.0
        parts = [(kind, k[key]) for kind, k in b.by_kind.items()] + [("AdamW", b.optimizer_s)]
        for kind, s in parts:
            if s <= 0:
                continue
            ax.barh(y, s * 1e3, left=left, color=COLOURS.get(kind, "#bbbbbb"), label=kind)
            left += s * 1e3
        mfu = b.model_flops / (left / 1e3 * b.device.peak_flops)
        ax.text(left, y, f" {left:.1f} ms, MFU <= {mfu:.0%}", va="center", fontsize=8)
    labels = [label for label, _ in bars]
    if measured_s:
        y = len(bars)
        ax.barh(y, measured_s * 1e3, color="black")
        mfu = b.model_flops / (measured_s * b.device.peak_flops)
        ax.text(
            measured_s * 1e3,
            y,
            f" {measured_s * 1e3:.1f} ms, MFU {mfu:.0%}",
            va="center",
            fontsize=8,
        )
        labels.append("measured")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"ms a step on {b.device.name}")
    ax.set_title(title, fontsize=9)
    handles, names = ax.get_legend_handles_labels()
    seen = dict(zip(names, handles, strict=True))  # one entry a kind
    fig.legend(seen.values(), seen.keys(), fontsize=7, loc="outside lower center", ncols=5)
    ax.set_xlim(0, max(b.unfused_s, measured_s or 0) * 1e3 * 1.35)
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110, format="png")
    return out_png


@dataclass(frozen=True)
class StepCosts:
    ops: list[OpCost]  # at the bounded batch
    params: int  # trainable
    source: str  # the model's
    text_shape: tuple[int, ...]  # a recorded step's input_ids


def trainable(module: torch.nn.Module) -> int:
    """Parameters AdamW updates: the optimizer's share of a bound."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def record_step(
    module,
    full: dict,
    pack,
    pad_id: int,
    autocast,
    device: torch.device,
    *,
    batch: int,
    small: int,
    large: int,
) -> list[OpCost]:
    """The operators of an eager forward and backward of `module` (a ClapTrainModule
    on `device`) at `batch` clips: recorded on the first `small` and `large` clips of
    `full` (a batch of at least `large`) and extrapolated, or on `batch` itself where
    it is no larger than `large`."""
    from training.pretrain.dist import Dist
    from training.pretrain.loop import forward_loss, gradient_checkpointing_off
    from training.pretrain.packing import PackPlan, take

    one = Dist(rank=0, world=1, local_rank=0, device=device)

    def step(n: int, plan=pack) -> tuple[list[OpCost], int]:
        """The slice's operators, and the text rows it took: packed, a slice that
        overflows its planned rows takes more (packing.py)."""
        part = {k: v.to(device) for k, v in take(full, n, plan, pad_id).items()}
        module.train()

        def run() -> None:
            forward_loss(module, module, part, autocast, one).backward()

        with gradient_checkpointing_off(module):
            ops = record(run)
        module.zero_grad(set_to_none=True)
        return ops, int(part["input_ids"].shape[0])

    if batch <= large:
        return step(batch)[0]
    if pack is None:
        return extrapolate(step(small)[0], step(large)[0], small, large, batch)
    # Packed prompts: the text costs follow the rows, the audio the clips, and a
    # slice's rows are rounded up (rows_for), so a line in the clips alone misses the
    # batch's rows. A third step, of `large` clips and one row more, separates the two.
    r_large = pack.rows_for(large)
    more = PackPlan(pack.row_tokens, r_large + 1, large)  # rows_for(large) = r_large + 1
    (a, rows_a), (b, rows_b), (c, rows_c) = step(small), step(large), step(large, more)
    if rows_b == rows_c:
        raise ValueError(f"packed slices of {large} clips took {rows_b} rows either way")
    return fit([a, b, c], [(small, rows_a), (large, rows_b), (large, rows_c)], (batch, pack.rows))


def step_costs(cfg: PretrainConfig, batch: int, small: int = 16, large: int = 32) -> StepCosts:
    """The operators of one eager training step of `cfg` (both towers, the CLIP loss,
    backward; the optimizer is `bound`'s) at `batch` clips, extrapolated from steps of
    `small` and `large` clips of a real batch, run on this machine's CPU under `cfg`'s
    autocast. Packed prompts follow the plan of a `batch` batch, repacked in proportion."""
    from training.pretrain.data import RankBatches
    from training.pretrain.loop import (
        ClapTrainModule,
        build_model,
        configure_towers,
        make_collate,
        make_dataset,
        make_loader,
    )
    from training.pretrain.mixed import training_data

    if not 0 < small < large:
        raise ValueError(f"record steps of 0 < small < large clips, not {small} and {large}")
    cpu = torch.device("cpu")
    td = training_data(cfg.data, cfg.split, cfg.seed, cfg.val_fraction, cfg.replay, cfg.init)
    loaded = build_model(cfg, td.data, td.seen_species)
    configure_towers(cfg, loaded.model)
    module = ClapTrainModule(loaded)
    collate = make_collate(cfg, loaded, td.data.catalogue, batch)
    clips = min(batch, large)  # the clips record_step takes
    dataset = make_dataset(cfg, td, loaded)
    if len(dataset) < clips:
        raise ValueError(f"{cfg.data}: {len(dataset)} clips an epoch, fewer than {clips}")
    sampler = RankBatches(len(dataset) // clips, clips, 0, 1, 0, 1)
    full = next(iter(make_loader(cfg, dataset, collate, sampler, cpu)))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    pad = loaded.tokenizer.pad_token_id
    ops = record_step(
        module, full, collate.pack, pad, autocast, cpu, batch=batch, small=small, large=large
    )
    return StepCosts(
        ops=ops,
        params=trainable(module),
        source=loaded.source,
        text_shape=tuple(full["input_ids"].shape),
    )
