"""The text tower's training step on a batch of real prompts: padded to the catalogue's
longest (prompt_length=auto, what CUDA graphs used), padded to the batch's longest
(prompt_length=0, shapes vary), and packed (prompt_packing), in one run.

Prompts are drawn as a balanced epoch draws them: species uniformly from the first
--species eBird 2024 species (birdnames), one of the five templates uniformly. The
tokenizer is the offline one a scratch run fits on the catalogue's prompts (a hub
model's RoBERTa vocabulary splits names into more tokens). The tower has RoBERTa-base's
shapes (scratch:full, random weights). FLOPs are counted by torch.utils.flop_counter
on forward and backward; the plan's rows are checked against --simulate batches.

    python scripts/benchmarks/prompt_packing.py                     # CPU: --batch 32
    python scripts/benchmarks/prompt_packing.py --batch 256 --steps 10 # GPU
    python scripts/benchmarks/prompt_packing.py --size wide --batch 256 --lengths-only
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ClapConfig

from animalclap_edge.contracts.prompts import ALL_TEMPLATES, render, sample_prompt
from training.benchmark.corpus import SIZES
from training.benchmark.taxonomy import ebird_catalogue, select_species
from training.model import build_tokenizer, new_clap_model
from training.pretrain.data import Collate
from training.pretrain.packing import PackPlan, pack, packed_text_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=None, help="default 32 on CPU, 256 on a GPU")
    ap.add_argument("--species", type=int, default=6823, help="first N eBird species")
    ap.add_argument(
        "--size", default=None, help="a benchmark size's species instead (small, wide, ...)"
    )
    ap.add_argument(
        "--lengths-only", action="store_true", help="prompt lengths and the plan; no model"
    )
    ap.add_argument("--row", type=int, default=64, help="prompt_packing: tokens per row")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per pass")
    ap.add_argument("--passes", type=int, default=2, help="alternating passes of each")
    ap.add_argument("--simulate", type=int, default=2000, help="batches to check the plan on")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (256 if device.type == "cuda" else 32)

    if args.size:  # the catalogue `animalclap-train benchmark --size` writes (seed 0)
        size = SIZES[args.size]
        species = list(
            select_species(
                size.species_per_class, 0, max_species_per_genus=size.max_species_per_genus
            )
        )
    else:
        species = list(ebird_catalogue())[: args.species]
    all_texts = [render(s, t) for s in species for t in ALL_TEMPLATES]
    tok = build_tokenizer(all_texts)
    lengths = [len(ids) for ids in tok(all_texts)["input_ids"]]
    longest = max(lengths)
    auto = -(-longest // 8) * 8
    plan = PackPlan.for_lengths(lengths, batch, args.row)
    print(
        f"{len(species)} species x {len(ALL_TEMPLATES)} templates: prompts of "
        f"{np.mean(lengths):.1f} tokens on average, longest {longest} (auto pads to {auto}); "
        f"plan: {plan.rows} rows of {plan.row_tokens} a batch of {batch}",
        flush=True,
    )

    rng = random.Random(0)

    def draw() -> list[str]:
        return [sample_prompt(rng.choice(species), rng) for _ in range(batch)]

    rows, packing_s = [], 0.0
    for _ in range(args.simulate):
        ids = tok(draw())["input_ids"]
        t = time.perf_counter()
        rows.append(len(pack(ids, plan.row_tokens, 1, tok.pad_token_id)["input_ids"]))
        packing_s += time.perf_counter() - t
    if rows:
        over = sum(r > plan.rows for r in rows)
        print(
            f"{args.simulate} drawn batches needed {np.mean(rows):.1f} rows on average, at "
            f"most {max(rows)}: {over} past the plan's {plan.rows}; packing took "
            f"{1000 * packing_s / len(rows):.2f} ms a batch",
            flush=True,
        )
    if args.lengths_only:
        return

    texts = draw()
    layouts = {
        f"padded to {auto} (auto)": Collate(tok, max_len=512, pad_to=auto).tokens(texts),
        "padded to the batch's longest": Collate(tok, max_len=512).tokens(texts),
        f"packed, rows of {args.row}": Collate(tok, max_len=512, pack=plan).tokens(texts),
    }
    torch.manual_seed(0)
    config = ClapConfig(text_config={"vocab_size": len(tok)}, audio_config={"enable_fusion": False})
    model = new_clap_model(config).to(device).train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    on_device = {k: {n: t.to(device) for n, t in v.items()} for k, v in layouts.items()}

    def step(text: dict) -> None:
        model.zero_grad(set_to_none=True)
        with autocast:
            if "segments" in text:
                out = packed_text_features(model, **text)
            else:
                out = model.get_text_features(**text).pooler_output
        out.float().square().mean().backward()

    flops = {}
    for name, text in on_device.items():
        counter = FlopCounterMode(display=False)
        with counter:
            step(text)
        flops[name] = counter.get_total_flops()
    times: dict[str, list[float]] = {k: [] for k in on_device}
    for _ in range(args.passes):
        for name, text in on_device.items():
            step(text)  # warm
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                step(text)
            sync()
            times[name].append((time.perf_counter() - t) / args.steps)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"{gpu}{threads}: text tower forward+backward, batch {batch}, {args.precision}")
    base = next(iter(times))
    for name, ts in times.items():
        tokens = layouts[name]["input_ids"].numel()
        speed = statistics.median(times[base]) / statistics.median(ts)
        print(
            f"  {name:>32}: {tokens:>6} tokens, {flops[name] / 1e12:.3f} TFLOP, "
            + ", ".join(f"{1000 * t:.0f}" for t in ts)
            + f" ms per step ({speed:.2f}x the first's speed, median of the passes)"
        )


if __name__ == "__main__":
    main()
