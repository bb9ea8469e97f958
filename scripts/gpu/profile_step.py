"""Where one pretraining step's GPU time goes: the full-size model (scratch:full, bf16),
one real batch from the loader kept on the GPU, torch.profiler over a few steps.

    python3 scripts/gpu/profile_step.py --data /tmp/bench-small --batch 256
"""

from __future__ import annotations

import argparse
import time

import torch

from animalclap_edge.contracts.prompts import Template
from training.pretrain.config import load_config
from training.pretrain.data import Collate, EpochPlanDataset, RankBatches
from training.pretrain.dist import Dist
from training.pretrain.loop import ClapTrainModule, build_model
from training.pretrain.loss import gathered_clip_loss
from training.pretrain.mixed import training_data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cpu", action="store_true", help="a local dry run of this script")
    ap.add_argument("--compile", action="store_true", help="torch.compile both towers")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument(
        "--bf16-weights",
        action="store_true",
        help="weights in bf16 and no autocast: what the casts cost (not a training recipe)",
    )
    a = ap.parse_args()
    cfg = load_config(None, [f"data={a.data}", f"batch_size={a.batch}"], {"init": "scratch:full"})
    dev = torch.device("cpu" if a.cpu else "cuda")
    one = Dist(rank=0, world=1, local_rank=0, device=dev)
    td = training_data(cfg.data, cfg.split, cfg.seed, cfg.val_fraction, cfg.replay)
    loaded = build_model(cfg, td.data, td.seen_species)
    module = ClapTrainModule(loaded).to(dev)
    if a.bf16_weights:
        module = module.to(torch.bfloat16)
        module.audio.frontend.float()  # the log-mel front-end stays fp32 by design
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, fused=dev.type == "cuda")
    ds = EpochPlanDataset(
        td.data,
        td.train,
        [Template.parse(t) for t in cfg.templates],
        False,
        0,
        cfg.clips_per_species,
        round(cfg.crop_seconds * loaded.frontend.sample_rate),
    )
    dl = torch.utils.data.DataLoader(
        ds,
        batch_sampler=RankBatches(len(ds) // a.batch, a.batch, 0, 1),
        num_workers=8,
        collate_fn=Collate(loaded.tokenizer),
    )
    batch = {k: v.to(dev) for k, v in next(iter(dl)).items()}
    audio_tower, text_tower = module.audio, module.clap.get_text_features
    if a.compile:
        audio_tower, text_tower = torch.compile(audio_tower), torch.compile(text_tower)
    print({k: tuple(v.shape) for k, v in batch.items()})

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(parts: dict) -> None:
        sync()
        t = [time.perf_counter()]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=not a.bf16_weights):
            wave = batch["wave"].to(torch.bfloat16) if a.bf16_weights else batch["wave"]
            audio = audio_tower(wave)
            sync()
            t.append(time.perf_counter())
            text = text_tower(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            text = torch.nn.functional.normalize(text.pooler_output.float(), dim=-1)
        sync()
        t.append(time.perf_counter())
        loss = gathered_clip_loss(
            audio.float(), text, module.clap.logit_scale_a, module.clap.logit_scale_t, one
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t.append(time.perf_counter())
        opt.step()
        sync()
        t.append(time.perf_counter())
        names = ("audio forward", "text forward", "loss + backward", "optimizer")
        for k, a0, a1 in zip(names, t, t[1:], strict=False):
            parts[k] = parts.get(k, 0.0) + a1 - a0

    parts: dict = {}
    t0 = time.perf_counter()
    for _ in range(3):
        step({})
    print(f"warm-up (with compilation if any): {time.perf_counter() - t0:.1f} s")
    for _ in range(a.steps):
        step(parts)
    per = {k: round(v / a.steps, 4) for k, v in parts.items()}
    total = sum(per.values())
    print("per step (s):", per, f"total {total:.4f} s = {a.batch / total:.0f} samples/s")
    if a.no_profile:
        return
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(2):
            step({})
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main()
