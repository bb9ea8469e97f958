"""The pretraining loop: `pretrain(cfg)` on every rank of a torchrun job (or alone)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from types import GeneratorType
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from animalclap_edge.contracts.prompts import Template, render
from training.curves import draw_run_curves
from training.identity import (
    PRETRAIN_RUN,
    TRAIN_RUN,
    absolute_paths,
    held_exclusively,
    refuse_other_settings,
    removed_if_left_empty,
    with_absolute_paths,
)
from training.loss import clamp_logit_scales
from training.model import AudioEncoder, LoadedClap, load_clap, tokens_taken
from training.pretrain import state
from training.pretrain.config import PretrainConfig, warmup_steps
from training.pretrain.data import (
    Collate,
    EpochPlanDataset,
    RankBatches,
    epoch_plan,
    prompt_lengths,
)
from training.pretrain.dist import (
    Dist,
    agree,
    all_mean,
    all_means,
    barrier,
    close,
    init_distributed,
)
from training.pretrain.loss import gathered_clip_loss
from training.pretrain.mixed import training_data
from training.pretrain.pacing import RunAhead
from training.pretrain.packing import (
    PACKED_KEYS,
    PackPlan,
    auto_row,
    is_packed,
    overflowed,
    packed_text_features,
)
from training.pretrain.prefetch import DevicePrefetch
from training.pretrain.ring import PinnedRing, RingBatches, RingFeed
from training.splits import write_split

if TYPE_CHECKING:  # transformers takes seconds to load
    from transformers import ClapModel
    from transformers.models.clap.configuration_clap import ClapTextConfig


class ClapTrainModule(nn.Module):
    """Both towers in one module, so DDP sees every parameter in one forward."""

    def __init__(self, loaded: LoadedClap):
        super().__init__()
        self.clap = loaded.model
        self.audio = AudioEncoder(loaded.model, loaded.frontend, mode="fft")

    def forward(
        self,
        wave: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        cls_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded prompts: input_ids and attention_mask (B, T). Packed (packing.py):
        input_ids and segments (R, L), cls_index (B,)."""
        if wave.dtype == torch.int16:  # 16-bit PCM from the loader (Collate int16)
            wave = wave.float().mul_(1 / 32768)
        audio = self.audio(wave)  # (B, D), normalised
        if segments is not None:
            # packed batches carry cls_index with their segments (PACKED_KEYS)
            text = packed_text_features(
                self.clap, input_ids, segments, cast(torch.Tensor, cls_index)
            )
        else:
            out = self.clap.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
            text = out.pooler_output
        return audio.float(), nn.functional.normalize(text.float(), dim=-1)


def compile_module(net: nn.Module, mode: str = "default", fixed_prompts: bool = False) -> Callable:
    """torch.compile (inductor) of the training forward, DDP-wrapped or not.

    Batch and crop shapes are fixed. Unless prompts are padded to a fixed length, the
    prompt length varies from batch to batch, so it is marked dynamic before the first
    call: one compilation for the run, instead of a recompilation at the second length
    met (measured on CPU: 23 s steps while recompiling in the timed part of `bench`)."""
    compiled = torch.compile(net, mode=None if mode == "default" else mode)
    if fixed_prompts:
        return compiled

    def forward(wave, input_ids, attention_mask):  # padded prompts alone: packed are fixed
        torch._dynamo.mark_dynamic(input_ids, 1)
        torch._dynamo.mark_dynamic(attention_mask, 1)
        return compiled(wave, input_ids, attention_mask)

    return forward


def text_limit(loaded: LoadedClap) -> int:
    """Tokens the text tower takes: its tokenizer's limit, and RoBERTa's positions less
    the two its padding offset uses."""
    return tokens_taken(loaded.tokenizer, loaded.model.config)


def check_prompts_fit(cfg: PretrainConfig, checkpoint: str, species: Sequence) -> None:
    """ValueError naming the longest prompt, its species and template, where one of
    `species`' prompts under cfg.templates is longer than the text tower of
    `checkpoint` takes (or a fixed prompt_length): read from its tokenizer and config
    alone, so that finetune refuses before its "before" report, not after it."""
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    limit = tokens_taken(tok, AutoConfig.from_pretrained(checkpoint))
    resolve_prompt_length(cfg, catalogue_prompt_lengths(cfg, tok, species), limit, species)


def catalogue_prompt_lengths(cfg: PretrainConfig, tokenizer, species) -> list[int]:
    """Tokens of every prompt the run's templates give the catalogue, tokenized once for
    both the length checks and packing's rows."""
    return prompt_lengths(tokenizer, species, [Template.parse(t) for t in cfg.templates])


def resolve_prompt_length(
    cfg: PretrainConfig, lengths: Sequence[int], limit: int = 512, species: Sequence = ()
) -> int:
    """Tokens every prompt is padded to (0: each batch's longest). The catalogue's
    longest prompt (of `lengths`, catalogue_prompt_lengths) is checked, before a run
    starts, against the text tower's `limit` and a fixed length; auto is that prompt's
    length rounded up to a multiple of 8 (tensor-core tiles). `species`: the catalogue
    the lengths are of, for the error to name the prompt."""
    longest = max(lengths)
    if longest > limit:
        raise ValueError(
            f"the catalogue's longest prompt has {longest} tokens and the text model takes "
            f"at most {limit}{_which_prompt(cfg, lengths, species)}: shorten the templates "
            "(templates=...) or the names"
        )
    if not cfg.prompt_length:
        return 0
    if cfg.prompt_length == "auto":
        return min(-(-longest // 8) * 8, limit)
    length = cast(int, cfg.prompt_length)  # a number once not auto (PretrainConfig.check)
    if longest > length:
        raise ValueError(
            f"prompt_length={length} would cut prompts: the catalogue's "
            f"longest has {longest} tokens; set prompt_length={longest} or more, or auto"
        )
    return length


def _which_prompt(cfg: PretrainConfig, lengths: Sequence[int], species: Sequence) -> str:
    """' (species id, template: "prompt")' of the longest of `lengths`, in the order
    catalogue_prompt_lengths gives them (each species' templates in turn)."""
    if not species:
        return ""
    i = max(range(len(lengths)), key=lengths.__getitem__)
    sp, template = (
        species[i // len(cfg.templates)],
        Template.parse(cfg.templates[i % len(cfg.templates)]),
    )
    return f" ({sp.id}, {template.value}: {render(sp, template)!r})"


def resolve_packing(cfg: PretrainConfig, lengths: Sequence[int], prompts: int) -> PackPlan | None:
    """The rows packed prompts take in a batch of `prompts` (per rank), sized from
    `lengths` (catalogue_prompt_lengths); None when packing is off."""
    if not cfg.prompt_packing:
        return None
    # a number once not auto (PretrainConfig.check)
    row = auto_row(lengths) if cfg.prompt_packing == "auto" else cast(int, cfg.prompt_packing)
    return PackPlan.for_lengths(lengths, prompts, row)


def make_collate(cfg: PretrainConfig, loaded: LoadedClap, species, prompts: int) -> Collate:
    """The batch collator for batches of `prompts` clips (per rank), padding prompts as
    resolve_prompt_length says or packing them as resolve_packing does, and refusing,
    never truncating, one longer than the text tower takes."""
    limit = text_limit(loaded)
    lengths = catalogue_prompt_lengths(cfg, loaded.tokenizer, species)
    pad_to = resolve_prompt_length(cfg, lengths, limit, species)
    plan = resolve_packing(cfg, lengths, prompts)
    return Collate(loaded.tokenizer, limit, int16=cfg.wire_int16, pad_to=pad_to, pack=plan)


def fixed_prompts(collate: Collate) -> bool:
    """Whether every batch's prompts have one shape (padded to a length, or packed)."""
    return bool(collate.pad_to) or collate.pack is not None


def prompts_note(cfg: PretrainConfig, collate: Collate) -> str | None:
    """How prompts reach the text tower, for the run's log."""
    if collate.pack is not None:
        plan = collate.pack
        return (
            f"prompts packed into {plan.rows} rows of {plan.row_tokens} tokens a batch of "
            f"{plan.prompts} ({plan.tokens} tokens; a batch that needs more rows is logged)"
        )
    if collate.pad_to:
        return f"every prompt padded to {collate.pad_to} tokens" + (
            " (auto: the catalogue's longest, rounded up to 8)"
            if cfg.prompt_length == "auto"
            else ""
        )
    return None


def make_dataset(cfg: PretrainConfig, td, loaded: LoadedClap) -> EpochPlanDataset:
    """The balanced epoch plan over the training side of `td` (replay included), with
    crops at the model front-end's rate: what the loop, `bench` and the loader
    benchmark read."""
    return EpochPlanDataset(
        td.data,
        td.train,
        [Template.parse(t) for t in cfg.templates],
        cfg.shuffle_tax,
        cfg.seed,
        cfg.clips_per_species,
        round(cfg.crop_seconds * loaded.frontend.sample_rate),
        td.is_replay,
        cfg.replay_fraction,
        pcm16=cfg.wire_int16,
    )


def make_optimizer(
    cfg: PretrainConfig, module: nn.Module, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and norms; on a GPU its fused kernel (one
    launch for all parameters instead of a few per tensor). The loop and `bench` share
    it, so that bench times the loop's own optimizer."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=device.type == "cuda",
    )


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict) -> None:
    """A saved AdamW's moments and step counts, under this run's settings. A plain
    `load_state_dict` also brings back each group's saved betas, weight decay and
    `fused`: a resume with another beta2 (which the log reports as changed) would keep
    the old one, and a run begun on CPU would stay unfused on a GPU."""
    mine = opt.state_dict()["param_groups"]
    if len(saved["param_groups"]) != len(mine):
        raise ValueError(
            f"the checkpoint's optimizer has {len(saved['param_groups'])} parameter groups, "
            f"this run's {len(mine)}: it was saved by another version; give a new --out"
        )
    groups = [
        {**old, **{k: v for k, v in new.items() if k != "params"}}
        for old, new in zip(saved["param_groups"], mine, strict=True)
    ]
    opt.load_state_dict({**saved, "param_groups": groups})


def optimizer_step(opt: torch.optim.Optimizer, cfg: PretrainConfig, clap: nn.Module) -> None:
    """Clip the gradient norm over every parameter the optimizer holds, step, and hold
    the logit scales at ln(100): the loop's update, which `bench` times as well."""
    if cfg.grad_clip:
        params = [p for group in opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    clamp_logit_scales(clap)


class Preempted(KeyboardInterrupt):
    """The run stopped on SIGTERM or Ctrl-C after saving a checkpoint of the step it
    reached; the command line says so as it says an interrupt (run the same command to
    resume)."""


class StopRequest:
    """SIGTERM, as SLURM sends on pre-emption or at the time limit and torchrun on
    shutdown, and a first Ctrl-C (SIGINT) ask the run to stop at a step boundary, save a
    checkpoint and exit, instead of dying with every step since the last checkpoint
    lost (checkpoint_every: 1000 in the paper config; a Ctrl-C before the first one
    lost the whole run). A second Ctrl-C stops at once. A no-op outside the main
    thread."""

    def __init__(self, say: Callable[[str], None] | None = None):
        self.requested: str | None = None  # the signal's name once one came
        self.say = say
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.requested == "SIGINT":  # the second: at once
                raise KeyboardInterrupt
            if self.say is not None:
                self.say(
                    "Ctrl-C: stopping after this step to save a checkpoint (Ctrl-C again "
                    "to stop at once, losing the steps since the last checkpoint)"
                )
        self.requested = self.requested or signal.Signals(signum).name

    def close(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def _ignore_sigterm(worker_id: int) -> None:
    """Loader workers leave SIGTERM and Ctrl-C to their rank: SLURM signals every
    process of the job, a terminal's Ctrl-C its whole process group, and a worker
    killed by either failed the rank's next batch before the rank could save. A worker
    whose rank is gone exits by itself (torch's watchdog)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


LOADER_PREFETCH = 4  # batches queued per DataLoader worker


def make_loader(
    cfg: PretrainConfig,
    dataset,
    collate: Collate,
    sampler: RankBatches,
    device: torch.device,
    ring: PinnedRing | None = None,
) -> Iterable[dict[str, torch.Tensor]]:
    """The run's one DataLoader (bench builds the same): `cfg.workers` processes with a
    prefetch queue of LOADER_PREFETCH batches each, pinned batches for a GPU. With a
    `ring` (pinned_ring) the workers write crops into its locked slots instead, and the
    batches come out on `device` (ring.RingFeed)."""
    batch_sampler: RankBatches | RingBatches = sampler
    if ring is not None:
        dataset.ring = ring  # before the workers start: they inherit it
        batch_sampler = RingBatches(sampler, ring.slots)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=cfg.workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda" and ring is None,
        prefetch_factor=LOADER_PREFETCH if cfg.workers else None,
        worker_init_fn=_ignore_sigterm if cfg.workers else None,
    )
    return loader if ring is None else RingFeed(loader, ring, device)


def shut_down(batches: Iterator) -> None:
    """Stop a loader iterator's workers now, not when it is collected. A traceback that
    holds it keeps them running to the interpreter's exit, where multiprocessing
    SIGTERMs its children and joins them; the workers ignore SIGTERM (_ignore_sigterm),
    so an error in bench hung until a timeout killed it (an H100, 2026-11-28). A
    generator (the ring's feed, DevicePrefetch) is closed, which drops the loader
    iterator it holds."""
    if isinstance(batches, GeneratorType):
        batches.close()
    else:  # torch's DataLoader iterators: what their __del__ calls
        getattr(batches, "_shutdown_workers", lambda: None)()


def make_ring(cfg: PretrainConfig, dataset, rows: int, device: torch.device) -> PinnedRing | None:
    """The loader's ring of locked batch slots when `pinned_ring` is on: enough for its
    workers' prefetch queues and the batches being copied."""
    if not cfg.pinned_ring:
        return None
    return PinnedRing.for_loader(
        cfg.workers * LOADER_PREFETCH, rows, dataset.crop_samples, dataset.pcm16, device
    )


def forward_loss(forward, module: ClapTrainModule, batch: dict, autocast, d: Dist) -> torch.Tensor:
    """The CLIP loss of one batch: both towers (`forward` is the module, DDP-wrapped or
    compiled), features gathered across ranks."""
    with autocast:
        if is_packed(batch):
            audio, text = forward(batch["wave"], **{k: batch[k] for k in PACKED_KEYS})
        else:
            audio, text = forward(batch["wave"], batch["input_ids"], batch["attention_mask"])
    return gathered_clip_loss(audio, text, module.clap.logit_scale_a, module.clap.logit_scale_t, d)


def _overflow_note(logs, d: Dist, step: int, extra: int, plan: PackPlan) -> None:
    message = (
        f"step {step}, rank {d.rank}: the batch's prompts took {extra} packed row(s) "
        f"beyond the {plan.rows} planned (a new shape: a recompilation when compiled)"
    )
    if logs:
        logs.note(message)
    else:
        warnings.warn(message, stacklevel=2)


def build_model(cfg: PretrainConfig, data, seen: Collection[str]) -> LoadedClap:
    """The init the config names: a checkpoint (hub id or path), scratch:<size>, or a
    ClapConfig JSON file (random weights; the text vocabulary is our tokenizer's,
    fitted on the prompts of the `seen` species alone: see `all_prompts`)."""
    from_json = cfg.init.endswith(".json") and Path(cfg.init).is_file()
    if not cfg.init.startswith("scratch:") and not from_json:
        return load_clap(cfg.init)
    from animalclap_edge.contracts.frontend import CLAP_UNFUSED
    from training.model import build_tokenizer, new_clap_model, small_clap_config
    from training.train import all_prompts

    size = cfg.init.removeprefix("scratch:")
    tok = build_tokenizer(all_prompts(data.catalogue, seen))
    if from_json:
        from transformers import ClapConfig

        config = ClapConfig.from_json_file(cfg.init)
        # ClapConfig makes its text_config a ClapTextConfig (typed as dict | config | None)
        cast("ClapTextConfig", config.text_config).vocab_size = len(tok)
    elif size == "full":
        from transformers import ClapConfig

        # transformers' defaults are laion/clap-htsat-unfused's sizes: HTS-AT (patch 4,
        # depths 2-2-6-2) and a RoBERTa-base text tower; only the vocabulary is ours.
        config = ClapConfig(
            text_config={
                "vocab_size": len(tok),
                "pad_token_id": 1,
                "bos_token_id": 0,
                "eos_token_id": 2,
            },
            audio_config={"enable_fusion": False},
        )
    elif size in ("small", "fast"):
        config = small_clap_config(vocab_size=len(tok), audio=size)
    else:
        raise ValueError(f"init {cfg.init!r}: scratch sizes are small, fast and full")
    return LoadedClap(
        model=new_clap_model(config), tokenizer=tok, frontend=CLAP_UNFUSED, source=cfg.init
    )


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Recompute each HTS-AT stage and RoBERTa layer in backward; returns how many.

    ClapModel says it does not support `gradient_checkpointing_enable`, but its stages
    and layers are transformers GradientCheckpointingLayers, which do.
    """
    from functools import partial

    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    n = 0
    for m in model.modules():
        if isinstance(m, GradientCheckpointingLayer):
            m.gradient_checkpointing = True
            # torch types Module.__setattr__ for tensors and modules alone; it sets any value
            m._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)  # type: ignore[assignment]  # torch stub too narrow
            n += 1
    return n


@contextlib.contextmanager
def gradient_checkpointing_off(model: nn.Module) -> Iterator[None]:
    """Within it, layers that enable_gradient_checkpointing switched on run plainly:
    `bench` counts a step's model FLOPs there, without the recomputed forwards, which
    are work the hardware does but not work the model needs (MFU, not HFU)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    on = [
        m
        for m in model.modules()
        if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing
    ]
    for m in on:
        m.gradient_checkpointing = False
    try:
        yield
    finally:
        for m in on:
            m.gradient_checkpointing = True


def configure_towers(cfg: PretrainConfig, model: nn.Module) -> list[str]:
    """Gradient checkpointing and the towers' attention as `cfg` asks; returns log notes."""
    from training.pretrain.window_attention import use_attention

    notes = []
    if cfg.grad_checkpointing:
        notes.append(f"gradient checkpointing on {enable_gradient_checkpointing(model)} layers")
    audio, text = use_attention(model, cfg.attention)
    if cfg.attention != "eager":
        notes.append(
            f"attention {cfg.attention}: {audio} HTS-AT window attentions "
            f"(window_attention.py) and {text} RoBERTa layers (transformers' own) "
            "through scaled_dot_product_attention"
            + ("" if text else "; RoBERTa stays eager: this transformers has no SDPA path for it")
        )
    return notes


def _batchnorm(model: nn.Module, mode: str, d: Dist, notes: list[str]) -> nn.Module:
    if mode == "sync" and d.world > 1:
        if d.device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        notes.append("batchnorm: SyncBatchNorm needs CUDA; using per-rank statistics")
    if mode == "frozen":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.requires_grad_(False)
    return model


def _freeze_bn_stats(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _drop_steps_after(path: Path, step: int) -> int:
    """Rewrite the JSONL log without the step records after `step` (notes stay);
    returns how many went. A resumed run logs those steps again: appended after the
    interrupted run's, each appeared twice (and TensorBoard purges them too)."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            rec = json.loads(line)
        except ValueError:  # a line torn by the kill: nothing to keep
            dropped += line.strip() != ""
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > step:
            dropped += 1
        else:
            kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


class _Logs:
    """JSONL always; TensorBoard when installed (its absence is logged, not hidden)."""

    def __init__(self, out: Path, cfg: PretrainConfig, resumed_at: int, command: str):
        self.command = command  # what printed notes start with
        # a run started afresh drops them all: one stopped before its first checkpoint
        # left steps that the new run logs again (each appeared twice in the curves)
        dropped = _drop_steps_after(out / "train_log.jsonl", resumed_at)
        self.jsonl = open(out / "train_log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if dropped:
            self.note(
                f"dropped {dropped} logged step(s) after step {resumed_at}: the interrupted "
                "run logged them after its last checkpoint, and they are trained again"
                if resumed_at
                else f"dropped {dropped} logged step(s): the interrupted run logged them "
                "before its first checkpoint, and this run starts again from step 0"
            )
        self.tb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # events after the checkpoint's step are the interrupted run's, trained
                # again; the checkpoint's own step was logged before it was saved
                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resumed_at + 1)
            except ImportError:
                self.note("tensorboard not installed: JSONL log only (pip install tensorboard)")

    def note(self, text: str) -> None:
        print(f"{self.command}: {text}", flush=True)
        self.jsonl.write(json.dumps({"note": text}) + "\n")

    def step(self, rec: dict) -> None:
        self.jsonl.write(json.dumps(rec) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(f"train/{k}", v, rec["step"])

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


def pretrain(
    cfg: PretrainConfig,
    on_step: Callable[[int], None] | None = None,
    progress: bool = True,
    fit_batch: bool = False,
) -> Path:
    """Train on this rank; returns the final checkpoint folder (same on every rank).
    With `fit_batch` (finetune on a small region) a batch larger than one epoch is
    capped to it and the cap printed, where otherwise it is refused."""
    cfg.check()
    cfg = with_absolute_paths(cfg)
    # before any process group: every rank reads the same folder and stops alike
    _refuse_another_run(Path(cfg.out), cfg)
    d = init_distributed()
    out = Path(cfg.out)
    try:
        # before the folder's lock, the first collective whose ranks could disagree
        agree(
            d,
            asdict(cfg),
            "start every node with the same command and settings, and one --out that "
            "every node sees (a shared file system)",
        )
        # catch_warnings: the filters a run installs (workers_note) end with the run
        with (
            warnings.catch_warnings(),
            removed_if_left_empty(out),
            held_exclusively(out, take=d.main) as (held, lock_note),
        ):
            # every rank learns whether rank 0 holds the folder, and stops alike
            if all_mean(torch.tensor(float(held), device=d.device), d) < 1:
                raise FileExistsError(
                    f"{out} is in use by another pretrain or finetune run (it holds the "
                    "folder's lock): wait for it to end, or stop it; killing torchrun "
                    "alone can leave its ranks running"
                )
            notes = [lock_note] if lock_note else []
            return _pretrain(cfg, d, on_step, progress, fit_batch, notes, lock_note is None)
    finally:
        close(d)


# What makes a run this run: resuming with any of them changed would continue one
# model on another's data, plan or schedule, and report it as one run.
RUN_IDENTITY = (
    "init", "data", "split", "replay", "replay_fraction", "val_fraction", "templates",
    "shuffle_tax", "seed", "clips_per_species", "crop_seconds", "lr", "weight_decay",
    "warmup_steps",
)  # fmt: skip


def _refuse_another_run(out: Path, cfg: PretrainConfig) -> None:
    """`out` may hold this run, to be resumed, and no other: a start writes split.json
    and pretrain_config.json over whatever run the folder holds."""
    for name in ("data", "replay"):
        folder = getattr(cfg, name)
        if folder and Path(folder).exists() and Path(folder).resolve() == out.resolve():
            raise ValueError(
                f"--out {out} is the --{name} folder: give the run a folder of its own"
            )
    held = [name for name in TRAIN_RUN if (out / name).exists()]
    if held:
        raise FileExistsError(
            f"{out} holds a run of `animalclap-train train` ({', '.join(held)}) whose "
            "split.json this run would overwrite: give a new --out"
        )
    held = [name for name in PRETRAIN_RUN if (out / name).exists()]
    if held and not (out / "pretrain_config.json").is_file():
        raise FileExistsError(
            f"{out} holds a run ({', '.join(held)}) with no pretrain_config.json to tell "
            "whether it is this one: give a new --out"
        )
    if (out / "final").exists() and not (out / "checkpoints" / "latest").exists():
        raise FileExistsError(
            f"{out} holds a finished run (final/) with no checkpoints/latest to resume "
            "from, so it would be trained again from the start over it: give a new --out"
        )
    refuse_other_settings(
        out / "pretrain_config.json",
        asdict(cfg),
        RUN_IDENTITY,
        "another run",
        "give a new --out, or the same settings to resume it",
        read_as=absolute_paths,
    )


def refuse_changed_data(out: Path, data: str, split) -> None:
    """Refuse to resume a run in `out` on data whose recordings are not those it began
    with (its split.json's digest): the run would go on, or stop at once, and its
    reports describe recordings the model never trained on."""
    from training.splits import ZeroShotSplit

    saved = out / "split.json"
    if not saved.is_file():
        return
    then = ZeroShotSplit.from_json(saved)
    if then.items_digest and then.items_digest != split.items_digest:
        raise ValueError(
            f"{data} has changed since the run in {out} began ({then.recordings} recordings "
            f"then, {split.recordings} now): give a new --out to train on it as it is"
        )


def _load_resumed(resume: Path) -> LoadedClap:
    """The model of the checkpoint a run resumes from; a damaged one in one line."""
    try:
        return load_clap(str(resume / "model"))
    except Exception as e:  # safetensors' and transformers' own errors, many kinds
        raise ValueError(
            f"cannot load {resume / 'model'} ({str(e).splitlines()[0]}): move {resume} out "
            f"of {resume.parent} to resume from the checkpoint before it"
        ) from None


def resume_notes(saved: Path, cfg: PretrainConfig, step: int, stop_at: int) -> list[str]:
    """What a resumed run logs about itself: the settings it changes from the run it
    continues (those outside RUN_IDENTITY may change: a longer schedule, another
    precision), and a stop it has already passed."""
    notes = []
    if saved.is_file():
        old = absolute_paths(json.loads(saved.read_text(encoding="utf-8")))
        changed = [
            f"{k} {old[k]!r} -> {v!r}" for k, v in asdict(cfg).items() if k in old and old[k] != v
        ]
        if changed:
            notes.append("resumed with changed settings: " + ", ".join(changed))
    if step >= stop_at:
        notes.append(
            f"the run is already at step {step}, at or past this run's last step {stop_at}: "
            f"no step is trained, and final/ is step {step}'s model"
        )
    return notes


def epoch_clips(cfg: PretrainConfig, td) -> int:
    """Clips in one epoch of the plan over `td` (replay included): the most one batch
    can take. The crop length does not change it."""
    species_of = [it.species_id for it in td.train]
    plan = epoch_plan(
        species_of, td.is_replay, cfg.clips_per_species, cfg.replay_fraction, cfg.seed, 0
    )
    return len(plan)


def fitting_batch(clips: int, world: int) -> int:
    """The largest global batch one epoch of `clips` fills that splits over `world`
    ranks (0: none does)."""
    return clips // world * world


def capped_batch(cfg: PretrainConfig, clips: int, world: int) -> tuple[PretrainConfig, str | None]:
    """`cfg` with its global batch capped to one epoch of `clips` (split over `world`
    ranks), and the note saying so (None: unchanged). Unchanged when it fits, or when
    no batch does (check_batch_fits then names the fix)."""
    fit = fitting_batch(clips, world)
    if cfg.batch_size <= clips or not fit:
        return cfg, None
    note = (
        f"batch_size {cfg.batch_size} exceeds one epoch of this data ({clips} clips): "
        f"capped to {fit} (--set batch_size=N to choose another)"
    )
    return dataclasses.replace(cfg, batch_size=fit), note


def check_batch_fits(cfg: PretrainConfig, clips: int, world: int) -> None:
    """One epoch must fill at least one global batch; the error names a batch that does."""
    if cfg.batch_size <= clips:
        return
    fit = fitting_batch(clips, world)
    if not fit:
        raise ValueError(
            f"one epoch has {clips} clips, fewer than the {world} ranks: raise "
            f"clips_per_species (--set clips_per_species=N) or run on fewer ranks"
        )
    raise ValueError(
        f"batch_size {cfg.batch_size} exceeds one epoch ({clips} clips): give "
        f"--set batch_size={fit} (or less), or raise clips_per_species"
    )


def workers_note(workers: int) -> str | None:
    """One line when the loader's processes outnumber the CPU cores this process may
    use (None when they do not)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cores or workers <= cores:
        return None
    # torch warns about this twice per loader (at creation and at iteration), on every
    # rank, in a paragraph each; the run's note says it once. pretrain() scopes the
    # filter to the run.
    warnings.filterwarnings(
        "ignore", message=r"This DataLoader will create \d+ worker processes", category=UserWarning
    )
    return (
        f"workers {workers} per rank on {cores} CPU core(s): the loader processes share "
        f"them (set workers={cores} to match the cores)"
    )


def _pretrain(
    cfg: PretrainConfig,
    d: Dist,
    on_step,
    progress: bool,
    fit_batch: bool,
    notes: list[str],
    locked: bool,
) -> Path:
    """The run itself; `notes` (to log) come from what pretrain() did before it;
    `locked`: this process holds the folder's lock (False where the file system would
    not lock it)."""
    from tqdm.auto import tqdm

    from training.train import cosine_lr

    command = "finetune" if fit_batch else "pretrain"  # what its output is labelled
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    resume, fallback = state.resume_from(ckpt_dir)
    agree(
        d,
        {"resume from": str(resume) if resume else "none (a new run)"},
        f"{ckpt_dir} must be one folder that every node sees (a shared file system), "
        "not a folder of each node's own",
    )
    # A resumed run goes on with the split it began with (and its replay split): a new
    # draw, under a rule changed since, could hold out species it has trained on.
    td = training_data(
        cfg.data,
        cfg.split,
        cfg.seed,
        cfg.val_fraction,
        cfg.replay,
        cfg.init,
        resumed=out if resume else None,
    )
    data, split = td.data, td.split
    clips = epoch_clips(cfg, td)
    if fit_batch:  # before the resume check: a rerun caps alike and resumes
        cfg, cap_note = capped_batch(cfg, clips, d.world)
        notes = [*notes, *([cap_note] if cap_note else [])]
    if cfg.batch_size % d.world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split over {d.world} ranks")
    check_batch_fits(cfg, clips, d.world)
    counters = state.load_counters(resume) if resume else {}
    if counters and counters["batch_size"] != cfg.batch_size:
        raise ValueError(
            f"{resume} was trained with batch_size {counters['batch_size']}; resume with the same global batch"
        )
    torch.manual_seed(cfg.seed)
    loaded = _load_resumed(resume) if resume else build_model(cfg, data, td.seen_species)
    notes = [*notes, *td.notes, *([fallback] if fallback else [])]
    if counters and counters.get("world", d.world) != d.world:
        notes.append(
            f"resumed on {d.world} rank(s) from a checkpoint saved on {counters['world']}: "
            f"the global batch {cfg.batch_size} is {cfg.batch_size // d.world} per rank, "
            "so the plan and the schedule go on unchanged"
        )
    # nn.Module.to (transformers types PreTrainedModel.to's wrapper unbound) and
    # _batchnorm change the model in place: it stays the ClapModel
    model: nn.Module = cast(nn.Module, loaded.model).to(d.device)
    model = _batchnorm(model, cfg.batchnorm, d, notes)
    loaded.model = cast("ClapModel", model)
    notes += configure_towers(cfg, model)
    module = ClapTrainModule(loaded).to(d.device)
    net: nn.Module = module
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(
            module, device_ids=[d.device.index] if d.device.type == "cuda" else None
        )
    opt = make_optimizer(cfg, module, d.device)
    if counters:
        load_optimizer_state(opt, counters["optimizer"])

    dataset = make_dataset(cfg, td, loaded)
    steps_per_epoch = len(dataset) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    stop_at = min(total, cfg.max_steps) if cfg.max_steps else total
    step = counters.get("global_step", 0)
    warmup, warmup_notes = warmup_steps(cfg, total, stop_at)
    if step < stop_at:  # a run resumed past its stop trains nothing: nothing to warn of
        notes += warmup_notes
    if fit_batch:  # a region's size sets the run's length: say how short it is
        notes.append(
            f"{total} optimizer steps ({cfg.epochs} epochs of {steps_per_epoch}) at lr "
            f"{cfg.lr:g}"
            + (f", stopping after {stop_at} (max_steps)" if stop_at < total else "")
            + ": --set epochs=N for a longer run, batch_size=N for more steps per epoch"
        )
    collate = make_collate(cfg, loaded, data.catalogue, cfg.batch_size // d.world)
    if note := prompts_note(cfg, collate):
        notes.append(note)
    if cfg.compile:
        notes.append(
            f"torch.compile: inductor, mode {cfg.compile_mode}, prompt shape "
            + ("fixed" if fixed_prompts(collate) else "dynamic")
            + "; the first step compiles"
        )
    if note := workers_note(cfg.workers):
        notes.append(note)
    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    # Written once every check above has passed: a start refused for its settings
    # leaves the folder as it found it, and a corrected rerun is not met as another run.
    if resume:
        notes += resume_notes(out / "pretrain_config.json", cfg, step, stop_at)
    out.mkdir(parents=True, exist_ok=True)
    if d.main and locked:  # unlocked, another run may be writing its own temporaries
        state.clear_temporaries(out, ckpt_dir)
    if d.main and step < stop_at:  # a run that trains nothing leaves its record as it was
        # a resumed run's model trained with the splits there: never other test species
        write_split(split, out / "split.json", trained=bool(resume))
        if td.replay_split is not None:  # what a fine-tuning from this run's model replays
            write_split(td.replay_split, out / "replay_split.json", trained=bool(resume))
        (out / "pretrain_config.json").write_text(
            json.dumps(asdict(cfg), indent=2), encoding="utf-8"
        )
    logs = _Logs(out, cfg, step, command) if d.main else None
    for n in notes:
        if logs:
            logs.note(n)
    if logs:
        logs.note(
            f"{d.world} rank(s) on {d.device.type}; "
            + (
                f"{int((~td.is_replay).sum())} regional + {int(td.is_replay.sum())} replay "
                "recordings, "
                if cfg.replay
                else f"{len(td.train)} recordings, "
            )
            + f"{dataset.n_species} species; {steps_per_epoch} steps/epoch of {cfg.batch_size}; "
            + (
                f"{int(dataset.is_replay[dataset.plan(0)].sum())} of {len(dataset)} clips per "
                f"epoch replayed from {cfg.replay}; "
                if cfg.replay
                else ""
            )
            + (f"resuming at step {step} from {resume.name}" if resume else f"init {loaded.source}")
        )
    bar = tqdm(
        total=stop_at,
        initial=step,
        desc=command,
        disable=not (progress and d.main),
    )
    # the bar's postfix: the loss of the last logged step, and the epoch of this one (a
    # finetune's epochs are a few steps each: shown at logged steps only, it lagged)
    shown_loss, bar_epoch = "-", -1

    def save() -> None:
        if d.main:
            state.save(
                ckpt_dir,
                step,
                module.clap,
                loaded.tokenizer,
                loaded.frontend,
                opt,
                {"global_step": step, "batch_size": cfg.batch_size, "world": d.world},
                cfg.keep_checkpoints,
            )
        barrier(d)

    # One loader for the rest of the run: its workers and prefetch queue carry across
    # epoch boundaries instead of restarting at each.
    ring = make_ring(cfg, dataset, cfg.batch_size // d.world, d.device)
    if ring is not None and logs:
        logs.note(
            f"pinned_ring: {ring.slots} batch slots, {ring.gigabytes:.1f} GB of locked "
            "shared memory; batches go from the workers to the GPU without a host copy"
            + ("" if d.device.type == "cuda" else " (on a CPU it saves no copy)")
        )
    loader = make_loader(
        cfg,
        dataset,
        collate,
        RankBatches(steps_per_epoch, cfg.batch_size, d.rank, d.world, step, stop_at),
        d.device,
        ring,
    )
    if cfg.device_prefetch and ring is None:  # the ring copies on a side stream itself
        loader = DevicePrefetch(loader, d.device)
    forward = compile_module(net, cfg.compile_mode, fixed_prompts(collate)) if cfg.compile else net
    pace = RunAhead(d.device, cfg.run_ahead)
    stop = StopRequest(say=(lambda t: print(f"{command}: {t}", flush=True)) if d.main else None)
    batches = iter(loader)
    try:
        # Timings cover the steps since the last log, read when the loss is (a sync):
        # per-step host timestamps say nothing about a GPU the host runs ahead of.
        since = t_wait = time.perf_counter()
        waited, n_since = 0.0, 0
        for batch in batches:
            waited += time.perf_counter() - t_wait
            epoch = step // steps_per_epoch
            batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
            plan = collate.pack
            if plan is not None and (extra := overflowed(batch, plan)):
                _overflow_note(logs, d, step, extra, plan)
            lr = cosine_lr(step, total, cfg.lr, warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            net.train()
            if cfg.batchnorm == "frozen":
                _freeze_bn_stats(net)
            # dropout masks from (seed, step, rank): a resumed run draws the same ones
            torch.manual_seed(cfg.seed * 1_000_003 + step * d.world + d.rank)
            loss = forward_loss(forward, module, batch, autocast, d)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            optimizer_step(opt, cfg, module.clap)
            pace.step_queued()
            step += 1
            n_since += 1
            # one rank stops on its own at any step; ranks agree at a logged step,
            # through the reduction they join there anyway (no extra sync per step)
            stopping: bool | str | None = d.world == 1 and stop.requested
            if step % cfg.log_every == 0 or step == stop_at or step == 1:
                # every rank joins the reduction; rank 0 writes the global mean
                flag = torch.tensor(float(stop.requested is not None), device=loss.device)
                mean_loss, asked = all_means(torch.stack([loss.detach().float(), flag]), d)
                stopping = asked > 0
                now = time.perf_counter()
                if logs:
                    logs.step(
                        {
                            "step": step,
                            "epoch": epoch,
                            "loss": mean_loss,
                            "lr": lr,
                            "logit_scale": module.clap.logit_scale_a.exp().item(),
                            "logit_scale_t": module.clap.logit_scale_t.exp().item(),
                            "data_wait_s": waited / n_since,
                            "step_s": (now - since) / n_since,
                            "samples_per_s": cfg.batch_size * n_since / max(1e-9, now - since),
                        }
                    )
                shown_loss, bar_epoch = f"{mean_loss:.3f}", epoch
                bar.set_postfix(loss=shown_loss, epoch=epoch)
                since, waited, n_since = now, 0.0, 0
            elif epoch != bar_epoch:
                bar_epoch = epoch
                bar.set_postfix(loss=shown_loss, epoch=epoch, refresh=False)
            bar.update(1)
            if on_step is not None:
                on_step(step)
            if step % cfg.checkpoint_every == 0 or step == stop_at or stopping:
                t_save = time.perf_counter()
                save()
                since += time.perf_counter() - t_save  # checkpoints are not training steps
            if stopping and step < stop_at:
                why = stop.requested or "SIGTERM"  # or another rank's signal
                if logs:
                    logs.note(
                        f"{why}: stopped at step {step} and saved {state.step_name(step)}; "
                        "run the same command again to resume from it"
                    )
                raise Preempted(f"stopped on {why} at step {step}")
            t_wait = time.perf_counter()  # the sampler ends the loop at stop_at
        pace.drain()
    finally:
        stop.close()
        bar.close()
        shut_down(batches)  # its workers stop writing the ring's slots before it is unlocked
        if ring is not None:
            ring.close()
        if logs:
            logs.close()
    final = out / "final"
    if d.main:
        state.save_final(final, module.clap, loaded.tokenizer, loaded.frontend)
        draw_run_curves(out, command)
    barrier(d)
    return final
