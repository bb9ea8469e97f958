"""The highest MFU a pretraining step's shapes allow on a GPU: a roofline bound from the
operators of an eager step recorded on this machine's CPU (no GPU needed).

    python scripts/benchmarks/roofline.py                              # full size, batch 256
    python scripts/benchmarks/roofline.py --set prompt_packing=64      # packed prompts
    python scripts/benchmarks/roofline.py --device h200 --measured-s 0.1027

The step (both towers, the gathered CLIP loss, backward) is recorded at --small and
--large clips of a real batch, and each operator's FLOPs and bytes are extrapolated
to --batch on the line through the two (training/pretrain/roofline.py). The default
data, the `wide` benchmark, has prompts as long as eBird's 6,823 species' (padded to
48 tokens by `prompt_length: auto`, as bench pads them).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

from training.pretrain.bench import PAPER_SAMPLES
from training.pretrain.config import load_config
from training.pretrain.roofline import (
    ADAMW_BYTES_PER_PARAM,
    DEVICES,
    bound,
    plot_bound,
    step_costs,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data",
        default="wide",
        help="benchmark size or data folder (wide: prompts as long as eBird's, padded to 48)",
    )
    ap.add_argument("--batch", type=int, default=256, help="the batch to bound (per GPU)")
    ap.add_argument("--small", type=int, default=16, help="clips of the first recorded step")
    ap.add_argument("--large", type=int, default=32, help="clips of the second")
    ap.add_argument("--device", choices=sorted(DEVICES), default="h100")
    ap.add_argument(
        "--measured-s",
        type=float,
        help="a step time measured with the same settings, to set beside the bounds",
    )
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", help="also write the bounds and each kind's figures as JSON here")
    ap.add_argument("--plot", help="also draw the bounds, kind by kind, into this PNG")
    a = ap.parse_args()
    if not 0 < a.small < a.large:
        ap.error("give 0 < --small < --large")
    cfg = load_config(
        None,
        [f"data={a.data}", f"batch_size={a.large}", "workers=0", *a.set],
        {"init": "scratch:full", "attention": "sdpa", "prompt_length": "auto", "precision": "bf16"},
    )
    t0 = time.monotonic()
    costs = step_costs(cfg, a.batch, a.small, a.large)
    ops, params = costs.ops, costs.params
    device = DEVICES[a.device]
    b = bound(ops, device, params)
    print(f"recorded {len(ops)} operators a step in {time.monotonic() - t0:.0f} s on the CPU")
    print(
        f"model: {costs.source}, {params / 1e6:.1f} M trainable parameters; "
        f"prompts of the recorded batch {costs.text_shape}"
    )
    print(f"device: {device.name}; batch {a.batch}")
    print(f"model FLOPs: {b.model_flops / 1e12:.2f} TFLOP per step")
    print()
    print("| kind | FLOPs | of them memory-bound | GB moved | unfused roofline ms |")
    print("|---|---|---|---|---|")
    for kind, k in sorted(b.by_kind.items(), key=lambda kv: -kv[1]["unfused_s"]):
        bound_share = k["memory_bound_flops"] / k["flops"] if k["flops"] else 0.0
        print(
            f"| {kind} | {k['flops'] / b.model_flops:.1%} | {bound_share:.0%} "
            f"| {k['bytes'] / 1e9:.1f} | {k['unfused_s'] * 1e3:.1f} |"
        )
    adamw_gb = params * ADAMW_BYTES_PER_PARAM / 1e9
    print(f"| fused AdamW | | | {adamw_gb:.1f} | {b.optimizer_s * 1e3:.1f} |")
    print()
    by_op: dict[str, float] = defaultdict(float)
    for o in ops:
        by_op[o.name] += o.seconds(device)
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:10]
    print("costliest operators, unfused: " + ", ".join(f"{n} {s * 1e3:.1f} ms" for n, s in top))
    print()
    for name, s, mfu in (
        ("unfused (every operator reads and writes its tensors)", b.unfused_s, b.mfu_unfused),
        ("fused (only operators with FLOPs, plus AdamW)", b.fused_s, b.mfu_fused),
        ("fused, attention's scores kept on chip (flash)", b.flash_s, b.mfu_flash),
    ):
        rate = a.batch / s
        print(
            f"bound, {name}: {s * 1e3:.1f} ms a step, {rate:,.0f} samples/s, "
            f"MFU <= {mfu:.1%}, paper-scale run >= {PAPER_SAMPLES / rate / 60:.1f} min"
        )
    if a.out:  # beside `bench --profile`'s profile.json, kind by kind
        figures = {
            "device": device.name,
            "batch": a.batch,
            "settings": a.set,
            "data": a.data,
            "model_tflop": b.model_flops / 1e12,
            "params": params,
            "unfused_ms": b.unfused_s * 1e3,
            "fused_ms": b.fused_s * 1e3,
            "flash_ms": b.flash_s * 1e3,
            "optimizer_ms": b.optimizer_s * 1e3,
            "mfu_bound": {"unfused": b.mfu_unfused, "fused": b.mfu_fused, "flash": b.mfu_flash},
            "by_kind": b.by_kind,
        }
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
    if a.plot:
        title = f"Roofline of one step: {a.data}, batch {a.batch}" + (
            f", {' '.join(a.set)}" if a.set else ""
        )
        plot_bound(b, a.plot, title, a.measured_s)
    if a.measured_s:
        mfu = b.model_flops / (a.measured_s * device.peak_flops)
        print(
            f"measured: {a.measured_s * 1e3:.1f} ms a step, MFU {mfu:.1%}: "
            f"{b.fused_s / a.measured_s:.0%} of the fused bound's speed, "
            f"{b.flash_s / a.measured_s:.0%} of the flash one's"
        )


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:  # a setting that does not fit the data: its one line
        raise SystemExit(f"roofline: {e}") from None
