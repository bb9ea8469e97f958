"""Pretraining settings: a YAML file (or a packaged name) plus `key=value` overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from animalclap_edge.contracts.prompts import ALL_TEMPLATES, Template

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")
ATTENTIONS = ("eager", "sdpa")  # window_attention.py


def warmup_steps(cfg: PretrainConfig, total: int, stop_at: int) -> tuple[int, list[str]]:
    """cfg.warmup_steps, auto resolved against the schedule's `total` steps, and the
    lines a run should log about it (it stops at `stop_at`)."""
    notes = []
    if cfg.warmup_steps == "auto":
        warmup = max(1, total // 10)
        notes.append(
            f"warm-up: {warmup} step{'s' * (warmup != 1)} (auto: a tenth of the "
            f"{total}-step schedule)"
        )
    else:
        warmup = int(cfg.warmup_steps)
    if warmup > stop_at:  # step s (from 0) of the warm-up runs at lr * (s + 1) / warmup
        notes.append(
            f"warmup_steps {warmup} > the {stop_at} steps of this run: the learning rate "
            f"stays below lr {cfg.lr:g} throughout (set warmup_steps lower, or auto)"
        )
    return warmup, notes


@dataclass
class PretrainConfig:
    data: str = "small"  # prepared folder, benchmark size[:seed] or recordings folder
    out: str = "runs/pretrain"
    # hub id or local path of a ClapModel, or scratch:<small|fast|full> (full: HTS-AT
    # + RoBERTa-base sizes, random weights, our offline tokenizer)
    init: str = "laion/clap-htsat-unfused"
    split: str = "zeroshot"  # or "seen"
    # Regional retraining: global data replayed against forgetting (its zero-shot
    # train side), making up `replay_fraction` of every epoch.
    replay: str | None = None
    replay_fraction: float = 0.25
    val_fraction: float = 0.1
    templates: list[str] = field(default_factory=lambda: [t.value for t in ALL_TEMPLATES])
    shuffle_tax: bool = False
    seed: int = 0
    epochs: int = 20
    clips_per_species: int = 30
    crop_seconds: float = 10.0
    batch_size: int = 256  # global: split evenly over ranks
    lr: float = 1e-4
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.99
    # Steps of linear warm-up to lr; auto: a tenth of the run's schedule (what
    # fine-tuning uses, whose schedule follows the region's size).
    warmup_steps: int | str = 500
    grad_clip: float = 1.0
    precision: str = "bf16"  # or "fp32"
    grad_checkpointing: bool = False
    # torch.compile the towers (inductor): 2.2x the eager step on an H100 at batch 256
    # (docs/pretraining.md). The first steps compile (about 100 s); off for CPU runs.
    compile: bool = False
    # torch.compile mode: default, max-autotune-no-cudagraphs, or reduce-overhead (CUDA
    # graphs: one launch replays a step's kernels; shapes must be fixed, so it needs
    # prompt_length).
    compile_mode: str = "default"
    # Tokens per prompt: 0 pads each batch to its longest prompt (the shape varies);
    # N pads every prompt to N (refused at start if a catalogue prompt is longer);
    # auto: the catalogue's longest prompt, rounded up to a multiple of 8.
    prompt_length: int | str = 0
    # Tokens per row when prompts are packed end to end instead of padded (0: off;
    # auto: 64, or the catalogue's longest prompt rounded up to 8 where that is
    # longer). Fixed shapes, as prompt_length gives, for a third of the text tokens on
    # eBird names (packing.py); a number is refused below the longest prompt.
    prompt_packing: int | str = 0
    # Copy batch n + 1 to the GPU on a side stream while step n runs (prefetch.py).
    # With compile_mode=reduce-overhead: 1,875 -> 2,120 samples/s on an H100
    # (docs/pretraining.md).
    device_prefetch: bool = False
    # Steps the host may queue ahead of the GPU (pacing.py): 1 prepares step n + 1
    # while step n runs; 0 synchronises after every step (the loop until 2026-11-26,
    # which every H100 figure in docs/pretraining.md so far used).
    run_ahead: int = 1
    # Attention in both towers: eager (transformers' default for ClapModel: every
    # score written out; HTS-AT's in fp32 under autocast) or sdpa (one fused
    # scaled_dot_product_attention call per layer, same parameters; the same results
    # in fp32, and under bf16 within its rounding, as the bias is added in bf16;
    # window_attention.py). On an H100 the compiled step 9% faster (2026-11-27, and
    # the same step time on 2026-11-28) and HTS-AT's eager step 1.28x; on CPU no
    # faster (no fused kernel takes a bias with a gradient), so eager stays the
    # default here and the GPU recipe (pretrain_paper.yaml) sets sdpa.
    attention: str = "eager"
    # HTS-AT normalises its input mel bins with BatchNorm. sync: SyncBatchNorm across
    # ranks (CUDA only; elsewhere it falls back to local, and says so); local: per-rank
    # batch statistics; frozen: running statistics, no update (fine-tuning).
    batchnorm: str = "sync"
    workers: int = 8  # DataLoader processes per rank
    # Batch slots in locked shared memory that workers write crops into and the GPU
    # copies from, instead of the pinning thread copying every batch (the loader's
    # limit on an H100 host: 1,945-2,459 clips/s pinned, 5,200 unpinned). Costs
    # (workers x 4 + 2) batches of locked host memory (13.3 GB at 14 workers and batch
    # 256 of 10 s crops). ring.py. On an H100 (2026-11-28) the loader delivered 6,579
    # clips/s through it against 2,048 pinned, in the same run. Off by default (a CPU
    # run gains nothing, and the slots are locked for the run); the GPU recipe
    # (pretrain_paper.yaml) turns it on.
    pinned_ring: bool = False
    wire_int16: bool = True  # crops cross processes as 16-bit PCM (see data.Collate)
    checkpoint_every: int = 500  # steps
    keep_checkpoints: int = 3
    log_every: int = 10
    max_steps: int | None = None  # stop early (benchmarks, smoke runs); schedule unchanged
    tensorboard: bool = True

    def check(self) -> None:
        """One-line errors for settings that cannot work, before any process starts."""
        choices = {
            "split": ("zeroshot", "seen"),
            "precision": ("fp32", "bf16"),
            "batchnorm": ("sync", "local", "frozen"),
            "compile_mode": COMPILE_MODES,
            "attention": ATTENTIONS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not one of {allowed}")
        at_least_one = (
            "epochs",
            "clips_per_species",
            "batch_size",
            "checkpoint_every",
            "log_every",
            "keep_checkpoints",  # 0 kept none, and left a run that could not resume
        )
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps != "auto" and (
            not isinstance(self.warmup_steps, int) or self.warmup_steps < 0
        ):
            raise ValueError(
                f"warmup_steps must be 0 or more steps, or auto, got {self.warmup_steps!r}"
            )
        for name in ("workers", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(
                f"max_steps must be at least 1 (or null for the whole schedule), got {self.max_steps}"
            )
        if self.run_ahead < 0:
            raise ValueError(
                f"run_ahead must be 0 (synchronise every step) or more steps, got {self.run_ahead}"
            )
        if not 0 <= self.replay_fraction < 1:
            raise ValueError(f"replay_fraction must be in [0, 1), got {self.replay_fraction}")
        if self.prompt_length != "auto" and (
            not isinstance(self.prompt_length, int) or self.prompt_length < 0
        ):
            raise ValueError(
                "prompt_length must be 0 (longest in batch), a number of tokens or auto, "
                f"got {self.prompt_length!r}"
            )
        if self.prompt_packing != "auto" and (
            not isinstance(self.prompt_packing, int) or self.prompt_packing < 0
        ):
            raise ValueError(
                "prompt_packing must be 0 (off), tokens per row or auto, "
                f"got {self.prompt_packing!r}"
            )
        if self.prompt_packing and self.prompt_length:
            raise ValueError(
                "prompt_packing and prompt_length both fix the prompts' shape: "
                "set one of them, and the other to 0"
            )
        if self.compile_mode == "reduce-overhead" and not (
            self.prompt_length or self.prompt_packing
        ):
            raise ValueError(
                "compile_mode=reduce-overhead replays CUDA graphs, which need fixed shapes: "
                "set prompt_packing=auto or prompt_length=auto as well"
            )
        # before the data and the model load: a typo in a template met the first
        # batch, and an empty list failed inside the tokenizer with a traceback
        template_names = ", ".join(t.value for t in ALL_TEMPLATES)
        if not self.templates:
            raise ValueError(f"templates: give at least one of {template_names}")
        for name in self.templates:
            try:
                Template.parse(name)
            except ValueError as e:
                raise ValueError(f"templates: {e}") from None
        for name in ("crop_seconds", "lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def _coerce(name: str, hint, value):
    """A YAML/CLI value as the field's type ("1e-4" is a str to YAML 1.1)."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if (
        value is None
        and (origin in (typing.Union, types.UnionType))
        and type(None) in typing.get_args(hint)
    ):
        return None
    if origin in (typing.Union, types.UnionType) and len(args) > 1:
        for arg in args:  # int | str: the first type that takes the value
            try:
                return _coerce(name, arg, value)
            except ValueError:
                pass
        names = " or ".join(_KIND.get(a, str(a)) for a in args)
        raise ValueError(f"{name}: {value!r} is not {names}")
    base = args[0] if origin in (typing.Union, types.UnionType) else hint
    if typing.get_origin(base) is list:
        items = value if isinstance(value, list) else str(value).split(",")
        return [str(v).strip() for v in items]
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(value, bool) and base in (int, float):
            raise ValueError  # YAML's true is not batch_size 1
        if base is int and isinstance(value, float):
            if not value.is_integer():
                raise ValueError  # int(2.5) would quietly train 2 epochs
            return int(value)
        return base(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {value!r} is not {_KIND.get(base, base)}") from None


_KIND = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def load_config(
    source: str | None = None,
    overrides: list[str] | None = None,
    defaults: dict | None = None,
) -> PretrainConfig:
    """Defaults <- YAML file (a path, or a name in training/configs) <- key=value overrides."""
    values: dict = dict(defaults or {})
    if source:
        path = Path(source)
        if not path.exists():
            path = CONFIG_DIR / f"pretrain_{source}.yaml"
        if not path.exists():
            names = sorted(
                p.stem.removeprefix("pretrain_") for p in CONFIG_DIR.glob("pretrain_*.yaml")
            )
            raise ValueError(f"config {source!r}: not a file and not one of {names}")
        if path.is_dir():
            raise ValueError(f"config {path}: is a folder; give a YAML file")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" line {where.line + 1}, column {where.column + 1}" if where else ""
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ValueError(f"config {path}{at}: not valid YAML ({what})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"config {path}: expected a mapping of settings")
        values.update(loaded)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: write it as key=value, e.g. lr=3e-4")
        values[key.strip().replace("-", "_")] = yaml.safe_load(raw) if raw else ""
    hints = typing.get_type_hints(PretrainConfig)
    known = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
    cfg = PretrainConfig(**{k: _coerce(k, hints[k], v) for k, v in values.items()})
    cfg.check()
    return cfg
