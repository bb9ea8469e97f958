"""HTS-AT's training step, forward and backward, with transformers' window attention
(eager) and with `training.pretrain.window_attention` (sdpa), alternating in one run.

The full-size audio tower (laion/clap-htsat-unfused's shapes, random weights) on 10 s
log-mel input; no text tower, loader or optimizer, so the attention is all that
differs. On a GPU it also reports the peak memory of the step.

    python scripts/benchmarks/window_attention.py                      # CPU: --batch 4
    python scripts/benchmarks/window_attention.py --batch 256 --steps 10 # H100
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from transformers import ClapConfig

from training.model import new_clap_model
from training.pretrain.window_attention import use_attention


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=None, help="default 4 on CPU, 256 on a GPU")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per pass")
    ap.add_argument("--passes", type=int, default=2, help="alternating passes of each")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--compile", action="store_true", help="torch.compile each (minutes)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (256 if device.type == "cuda" else 4)
    torch.manual_seed(0)
    config = ClapConfig(text_config={"vocab_size": 64}, audio_config={"enable_fusion": False})
    model = new_clap_model(config).audio_model.to(device).train()
    mel = torch.randn(batch, 1, 1001, 64, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    forwards = {}
    for kind in ("eager", "sdpa"):
        # one model each, so that a compiled graph is never asked to retrace
        each = model if kind == "eager" else copy.deepcopy(model)
        use_attention(each, kind)
        forwards[kind] = (each, torch.compile(each) if args.compile else each)

    def step(kind: str) -> None:
        each, forward = forwards[kind]
        each.zero_grad(set_to_none=True)
        with autocast:
            out = forward(input_features=mel).pooler_output
        out.float().square().mean().backward()

    times: dict[str, list[float]] = {k: [] for k in forwards}
    peak: dict[str, float] = {}
    for kind in forwards:  # warm-up (and compile) outside the timings
        t = time.perf_counter()
        step(kind)
        sync()
        print(f"{kind}: first step {time.perf_counter() - t:.1f} s", flush=True)
    for _ in range(args.passes):
        for kind in forwards:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                step(kind)
            sync()
            times[kind].append((time.perf_counter() - t) / args.steps)
            if device.type == "cuda":
                peak[kind] = torch.cuda.max_memory_allocated(device) / 2**30
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(
        f"{name}{threads}: HTS-AT forward+backward, batch {batch}, {args.precision}"
        + (", compiled" if args.compile else "")
    )
    for kind, ts in times.items():
        each = ", ".join(f"{1000 * t:.0f}" for t in ts)
        mem = f", peak {peak[kind]:.1f} GB" if kind in peak else ""
        print(f"  {kind:>5}: {each} ms per step ({batch / min(ts):.0f} clips/s best{mem})")
    ratio = statistics.median(times["eager"]) / statistics.median(times["sdpa"])
    print(f"  sdpa is {ratio:.2f}x eager's speed (median of the passes)")


if __name__ == "__main__":
    main()
