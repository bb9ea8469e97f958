"""Taxonomy-aware contrastive training of a CLAP model (the thin, single-process path).

One step: a batch of random crops of balanced-epoch recordings, one prompt per
clip drawn uniformly from the chosen templates, the symmetric CLIP loss.
`precision="bf16"` runs forward passes under autocast (1.3x per step on an
AVX512-BF16 CPU; the loss and the weights stay fp32). Multi-GPU (torchrun) and
resumable checkpoints are the pretraining issue's.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from animalclap_edge.contracts.catalogue import TAXON_LEVELS, Catalogue
from animalclap_edge.contracts.prompts import (
    ALL_TEMPLATES,
    Template,
    render,
    sample_prompt,
    taxon_prompt,
)
from training.curves import draw_run_curves
from training.embed_audio import embed_items
from training.identity import with_absolute_paths
from training.labelled_audio import LabelledSet, crop, open_labelled
from training.lineage import init_split
from training.loss import clamp_logit_scales, clip_loss
from training.metrics import accuracies, similarity_ranks
from training.model import (
    AudioEncoder,
    LoadedClap,
    build_tokenizer,
    load_clap,
    new_clap_model,
    small_clap_config,
)
from training.prepare.manifest import background_unmatched, unmatched_note
from training.pretrain.state import save_final
from training.sampling import balanced_epoch, group_split
from training.splits import ZeroShotSplit, heard_unseen_note, items_digest, zero_shot_split
from training.zeroshot import species_prompt_embeddings

PRECISIONS = {"fp32", "bf16"}


@dataclass
class TrainConfig:
    out: str
    data: str = "tiny"  # benchmark size[:seed], benchmark folder, or real-recordings folder
    init: str | None = None  # checkpoint (path or hub id); None = small config from scratch
    seed: int = 0
    templates: list[str] = field(default_factory=lambda: [t.value for t in ALL_TEMPLATES])
    shuffle_tax: bool = False
    clips_per_species: int = 30
    crop_seconds: float = 3.0  # the paper uses 10 s; the streaming window is 3 s
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 20
    epochs: int = 20
    max_minutes: float | None = None  # stop early, shortening the cosine schedule to fit
    val_fraction: float = 0.1
    # "zeroshot": hold out rare species as unseen test species (the paper's split,
    # written to split.json for evaluation); "seen": train on every species.
    split: str = "zeroshot"
    audio_config: str = "small"  # from-scratch HTS-AT variant (training.model.AUDIO_VARIANTS)
    threads: int | None = None
    precision: str = "fp32"  # "fp32" or "bf16" (autocast on the forward pass)
    cache_gb: float = 4.0  # decoded training audio kept in memory


def all_prompts(catalogue: Catalogue, seen: Collection[str]) -> list[str]:
    """The prompts a from-scratch tokenizer is fitted on: those of the `seen` species
    only, in catalogue order (so the same for any order of `seen`). Fitted on every
    species, the unseen ones' names got tokens of their own that no training prompt
    holds, and their text was shaped by the very names zero-shot evaluation tests."""
    missing = set(seen) - set(catalogue.ids)
    if missing:
        raise ValueError(
            f"seen species not in the catalogue ({catalogue.source}): {', '.join(sorted(missing))}"
        )
    seen = set(seen)
    rng = random.Random(0)
    texts = []
    for sp in catalogue:
        if sp.id not in seen:
            continue
        texts += [render(sp, t) for t in ALL_TEMPLATES]
        texts += [render(sp, Template.TAX, rng) for _ in range(3)]
        texts += [taxon_prompt(sp, level) for level in TAXON_LEVELS]
    return texts


class _Cache:
    """Rendered/decoded recordings kept in memory up to a byte budget."""

    def __init__(self, data: LabelledSet, budget_bytes: float):
        self.data, self.budget, self.used = data, budget_bytes, 0
        self.store: dict[str, np.ndarray] = {}

    def __call__(self, item) -> np.ndarray:
        wave = self.store.get(item.id)
        if wave is None:
            wave = self.data.load(item)
            if self.used + wave.nbytes <= self.budget:
                self.store[item.id] = wave
                self.used += wave.nbytes
        return wave


LOSS_WINDOW = 50  # steps averaged at each end of a run's loss curve


def loss_summary(losses: list[float], batch_size: int) -> dict:
    """The training loss at the start and the end of a run (means over LOSS_WINDOW
    steps), beside the plateau ln(batch): the CLIP loss of a model that tells no pair in
    the batch apart. A run that ends near it learned little, whatever it scores."""
    first, last = losses[:LOSS_WINDOW], losses[-LOSS_WINDOW:]
    return {
        "first": float(np.mean(first)) if first else None,
        "last": float(np.mean(last)) if last else None,
        "plateau": math.log(batch_size),
        "window": LOSS_WINDOW,
    }


def machine() -> dict:
    """The processor and torch a run trained on: its figures repeat only on the same."""
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "torch": torch.__version__}


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train and save a checkpoint under cfg.out/checkpoint; returns that path."""
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision {cfg.precision!r}: choose one of {sorted(PRECISIONS)}")
    # recorded absolute, so evaluate/probe --run find the data from any directory
    cfg = with_absolute_paths(cfg)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Templates, data, split and init are checked before --out is made: a typo in any
    # of them used to leave an empty run folder behind.
    templates = [Template.parse(t) for t in cfg.templates]
    data = open_labelled(cfg.data)
    if note := unmatched_note(background_unmatched(data.items, data.catalogue)):
        print(note, flush=True)
    split = make_split(data, cfg.split, cfg.seed, cfg.val_fraction)
    if cfg.split == "zeroshot" and (found := init_split(cfg.init, cfg.data, data.items, split)):
        split, note = found
        print(note, flush=True)
    if note := heard_unseen_note(split):
        print(note, flush=True)
    train_items = [data.items[i] for i in split.train]
    val_items = [data.items[i] for i in split.val]

    if cfg.init:
        loaded = load_clap(cfg.init)
    else:
        from animalclap_edge.contracts.frontend import CLAP_UNFUSED

        tokenizer = build_tokenizer(all_prompts(data.catalogue, split.seen_species))
        model = new_clap_model(small_clap_config(vocab_size=len(tokenizer), audio=cfg.audio_config))
        loaded = LoadedClap(
            model=model,
            tokenizer=tokenizer,
            frontend=CLAP_UNFUSED,
            source=f"small-config ({cfg.audio_config} audio)",
        )
    out.mkdir(parents=True, exist_ok=True)
    split.to_json(out / "split.json")
    model, tok = loaded.model, loaded.tokenizer
    encoder = AudioEncoder(model, loaded.frontend, mode="fft")
    window = round(cfg.crop_seconds * loaded.frontend.sample_rate)
    cache = _Cache(data, cfg.cache_gb * 1e9)

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    species_of = [it.species_id for it in train_items]
    steps_per_epoch = max(1, len(set(species_of)) * cfg.clips_per_species // cfg.batch_size)
    total_steps = max_steps = steps_per_epoch * cfg.epochs
    log = open(out / "train_log.jsonl", "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
    t_start, step, epoch, stop = time.monotonic(), 0, 0, False
    losses: list[float] = []
    fit_mark = (t_start, 0)  # (time, step) the schedule was last fitted at
    bar = tqdm(total=total_steps, desc="training", disable=not progress)
    loader = ThreadPoolExecutor(1, thread_name_prefix="audio")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def load_batch(items):  # runs in the loader thread only: the cache is not shared
        return [cache(it) for it in items]

    try:
        while epoch < cfg.epochs and not stop:
            plan = balanced_epoch(species_of, cfg.clips_per_species, cfg.seed, epoch)
            rng = np.random.default_rng([cfg.seed, epoch, 1])
            prng = random.Random(cfg.seed * 1_000_003 + epoch)
            batches = [
                [train_items[i] for i in plan[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
                for b in range(steps_per_epoch)
            ]
            # The next batch is decoded/rendered in a thread while this one trains
            # (numpy, soundfile and soxr release the GIL); crops stay in order here.
            pending = loader.submit(load_batch, batches[0])
            for b, items in enumerate(batches):
                t0 = time.monotonic()
                waves = pending.result()
                if b + 1 < len(batches):
                    pending = loader.submit(load_batch, batches[b + 1])
                x = torch.from_numpy(np.stack([crop(w, window, rng) for w in waves]))
                texts = [
                    sample_prompt(
                        data.catalogue[data.catalogue.index(it.species_id)],
                        prng,
                        templates,
                        cfg.shuffle_tax,
                    )
                    for it in items
                ]
                t1 = time.monotonic()
                lr = cosine_lr(step, total_steps, cfg.lr, cfg.warmup_steps)
                for g in opt.param_groups:
                    g["lr"] = lr
                model.train()
                enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
                with autocast:
                    audio = encoder(x)
                    text = model.get_text_features(
                        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                    ).pooler_output
                # The similarity logits are taken in fp32: bf16 has 8 mantissa bits.
                text = torch.nn.functional.normalize(text.float(), dim=-1)
                loss = clip_loss(audio.float(), text, model.logit_scale_a)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                clamp_logit_scales(model)
                t2 = time.monotonic()
                step += 1
                rec = {
                    "step": step,
                    "epoch": epoch,
                    "loss": loss.item(),
                    "lr": lr,
                    "data_s": t1 - t0,
                    "compute_s": t2 - t1,
                }
                log.write(json.dumps(rec) + "\n")
                log.flush()  # so `tail -f train_log.jsonl` follows a run
                losses.append(rec["loss"])
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
                if cfg.max_minutes and (step == 3 or step % 20 == 0):
                    # Refit the cosine schedule to the time left. Early steps also render
                    # audio into the cache, so per-step time is re-measured as it settles.
                    now = time.monotonic()
                    per_step = (now - fit_mark[0]) / max(1, step - fit_mark[1])
                    fit_mark = (now, step)
                    left = cfg.max_minutes * 60 - (now - t_start)
                    total_steps = min(max_steps, step + max(1, int(left / per_step)))
                    bar.total = total_steps
                if step >= total_steps:
                    stop = True
                    break
            epoch += 1
    finally:
        loader.shutdown(wait=True, cancel_futures=True)
        bar.close()
        log.close()

    # whole or not at all: `experiments` skips training where a checkpoint/ exists, so a
    # sweep killed mid-write evaluated a half-written model on its rerun
    ckpt = save_final(out / "checkpoint", model, tok, loaded.frontend)
    summary = {
        "config": asdict(cfg),
        "data": data.name,
        "steps": step,
        "epochs_started": epoch,
        "minutes": (time.monotonic() - t_start) / 60,
        "split": cfg.split,
        "train_recordings": len(train_items),
        "val_recordings": len(val_items),
        "test_species": len(split.test_species),
        # seen species' recordings with an unseen one in the background: trained on by none
        "heard_unseen_left_out": len(split.heard_unseen),
        "species": len(data.catalogue),
        "init": loaded.source,
        "val_seen_species": validate_seen(loaded, encoder, data, val_items, window, progress),
        # bf16 CPU kernels differ between processors: the same seed trains differently
        "machine": machine(),
        "loss": loss_summary(losses, cfg.batch_size),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    draw_run_curves(out, "train")
    return ckpt


SEEN_ADVICE = (
    "train on every species with split seen (train: --split seen; pretrain: --set split=seen)"
)


def replay_advice(replay: str) -> str:
    """Why replayed data needs a zero-shot split, for `make_split(..., advice=)`."""
    return (
        f"--replay {replay} keeps its zero-shot split (its unseen species stay unseen), so "
        "it needs enough species for one: give a larger global set"
    )


def make_split(
    data: LabelledSet, kind: str, seed: int, val_fraction: float, advice: str = SEEN_ADVICE
) -> ZeroShotSplit:
    """The paper's zero-shot split, or every species seen (grouped train/val only);
    `advice` ends the error when the data cannot make a zero-shot split."""
    if kind == "zeroshot":
        try:
            return zero_shot_split(data.items, data.catalogue, seed=seed, val_fraction=val_fraction)
        except ValueError as e:
            raise ValueError(f"{e}; {advice}") from None
    if kind == "seen":
        train_idx, val_idx = group_split([it.group for it in data.items], val_fraction, seed)
        return ZeroShotSplit(
            train=train_idx.tolist(),
            val=val_idx.tolist(),
            test=[],
            test_species=[],
            seen_species=sorted({it.species_id for it in data.items}),
            stop_reason="split seen: no test species",
            params={"seed": seed, "val_fraction": val_fraction},
            items_digest=items_digest(data.items),
        )
    raise ValueError(f"split {kind!r}: use 'zeroshot' or 'seen'")


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def validate_seen(
    loaded: LoadedClap,
    encoder,
    data: LabelledSet,
    items,
    window: int,
    progress: bool,
    templates: tuple[Template, ...] = (Template.COM, Template.SCI, Template.TAX),
    keep_hits: bool = False,
) -> dict:
    """Top-1/top-5 on held-out site-days of seen species, per query template, on the
    encoder's device. `keep_hits`: also "hits", whether each item was right at top-1
    ({"ids": item ids, template: (bool, ...)}), to compare two models on the same
    recordings."""
    if not items:
        return {}
    loaded.model.eval()
    audio = embed_items(encoder, data, items, window, desc="validation", progress=progress)
    labels = np.array([data.catalogue.index(it.species_id) for it in items])
    res: dict = {}
    hits: dict = {"ids": tuple(it.id for it in items)}
    for t in templates:
        text = species_prompt_embeddings(loaded, data.catalogue, t)
        r = similarity_ranks(audio, text, labels)  # once for both: a paper-size side is 70k
        res[t.value] = accuracies(r)
        if keep_hits:
            hits[t.value] = tuple(bool(h) for h in r < 1)
    return {**res, "hits": hits} if keep_hits else res
