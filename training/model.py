"""CLAP models: a small config for CPU runs, an offline tokenizer, and loading.

Every checkpoint, ours or a hub one (`laion/clap-htsat-unfused`,
`davidrrobinson/BioLingual`), goes through `load_clap`, which reads the
checkpoint's own feature-extractor config into our `FrontendConfig`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import torch
from torch import nn

from animalclap_edge.contracts.frontend import CLAP_UNFUSED, FrontendConfig
from training.devices import module_device
from training.frontend import LogMelFrontend, frontend_from_feature_extractor, repeat_pad_torch

if TYPE_CHECKING:  # imported where used: transformers takes seconds to load
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        PreTrainedTokenizerBase,
        RobertaTokenizerFast,
    )
    from transformers.modeling_outputs import BaseModelOutputWithPooling

DEFAULT_CHECKPOINT = "laion/clap-htsat-unfused"


class CheckpointError(ValueError):
    """A checkpoint that is missing or is not an unfused CLAP model."""


@dataclass
class LoadedClap:
    model: ClapModel
    tokenizer: PreTrainedTokenizerBase
    frontend: FrontendConfig
    source: str


# HTS-AT variants for from-scratch CPU runs. "small": patch 4 (64x64 tokens at stage
# 1), 0.64 s per step of 16 on 2 cores. "fast": patch 16 (16x16 tokens), 3 stages,
# 0.39 s per step; on the small benchmark it left the ln(batch) plateau after ~800
# steps (loss 2.50 after 1588 steps, 10 min) where "small" was still flat at 734.
AUDIO_VARIANTS: dict[str, dict] = {
    "small": dict(
        patch_embeds_hidden_size=32,
        hidden_size=256,
        depths=[1, 1, 2, 1],
        num_attention_heads=[2, 4, 8, 8],
        window_size=8,
    ),
    "fast": dict(
        patch_size=16,
        patch_stride=[16, 16],
        patch_embeds_hidden_size=128,
        hidden_size=512,
        depths=[1, 1, 2],
        num_attention_heads=[4, 8, 8],
        window_size=4,
    ),
}


def small_clap_config(
    vocab_size: int, projection_dim: int = 512, max_text_len: int = 64, audio: str = "small"
) -> ClapConfig:
    """A ClapConfig small enough to train for minutes on 2 CPU cores.

    HTS-AT needs spec_size >= 256 for 64 mel bins with freq_ratio 4 (10 s = 1001
    frames fit in 256 * 4), so the image size stays; depth, width and (for "fast")
    the patch size change. `audio` picks one of AUDIO_VARIANTS.
    """
    if audio not in AUDIO_VARIANTS:
        raise ValueError(f"audio config {audio!r}: use one of {sorted(AUDIO_VARIANTS)}")
    from transformers import ClapConfig

    text = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=max_text_len + 2,
        projection_dim=projection_dim,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    audio_cfg = dict(
        spec_size=256,
        num_mel_bins=CLAP_UNFUSED.n_mels,
        projection_dim=projection_dim,
        enable_fusion=False,
        **AUDIO_VARIANTS[audio],
    )
    return ClapConfig(text_config=text, audio_config=audio_cfg, projection_dim=projection_dim)


def new_clap_model(config) -> ClapModel:
    """A ClapModel from a config, initialised for training from scratch.

    transformers' ClapPreTrainedModel._init_weights draws every Linear and Conv2d
    weight with std = hidden_size**-0.5 * (2 * num_hidden_layers)**-0.5 taken from the
    top-level ClapConfig (768, 16): about 0.0064 whatever the layer's width. That is
    harmless before pretrained weights are loaded, but from scratch each layer adds
    almost nothing to the residual stream and every input maps to nearly the same
    embedding, a plateau contrastive training is slow to leave (loss ln(batch)).
    LeCun-normal weights (std = 1/sqrt(fan_in)) let each layer mix in its inputs at
    unit scale. Measured on the tiny benchmark (2026-11-25, 2 CPU cores): mean
    pairwise cosine at init text 0.995 -> 0.93, audio 0.98 -> 0.94 (on real clips
    0.990 -> 0.989: the text tower gains most); after 4 minutes
    loss 1.84 and seen-species top-1 0.13-0.19 against 2.2 and 0.00-0.05 after 10
    minutes with transformers' init. Embeddings, norms and logit scales keep
    transformers' init.
    """
    from transformers import ClapModel

    model = ClapModel(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.normal_(m.weight, std=m.weight[0].numel() ** -0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model


def build_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000, max_len: int = 64
) -> RobertaTokenizerFast:
    """A byte-level BPE RoBERTa tokenizer trained offline on `texts` (no hub access)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(texts),
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        # its bar printed three blank lines into every run's output when not on a
        # terminal; training takes seconds even on a paper-size catalogue
        show_progress=False,
    )
    with tempfile.TemporaryDirectory() as d:
        bpe.save_model(d)
        vocab = json.loads(Path(d, "vocab.json").read_text(encoding="utf-8"))
        lines = Path(d, "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(m.split(" ")) for m in lines if m and not m.startswith("#version")]
    # transformers 5 takes the vocabulary and merges themselves: vocab_file/merges_file
    # are silently ignored there, leaving a tokenizer that maps every text to <unk>.
    # transformers annotates merges as list[str]; its BPE model takes the (a, b) pairs
    tok = RobertaTokenizerFast(vocab=vocab, merges=merges)  # type: ignore[arg-type]
    probe = tok("a b")["input_ids"]
    if tok.unk_token_id in probe:
        raise RuntimeError(f"offline tokenizer is broken: 'a b' -> {probe}")
    tok.model_max_length = max_len
    return tok


def feature_extractor_for(frontend: FrontendConfig) -> ClapFeatureExtractor:
    """The transformers ClapFeatureExtractor configured like the unfused hub checkpoints."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=frontend.n_mels,
        sampling_rate=frontend.sample_rate,
        hop_length=frontend.hop_length,
        max_length_s=int(frontend.clip_seconds),
        fft_window_size=frontend.n_fft,
        frequency_min=frontend.f_min,
        frequency_max=frontend.f_max,
        truncation="rand_trunc",
        padding="repeatpad",
    )


@contextmanager
def quiet_hub_bars() -> Iterator[None]:
    """transformers' own bars ("Loading weights", "Writing model shards") off for a block.

    Our commands have their own progress output; a bar per load or checkpoint buried it.
    The global setting is restored afterwards, so a notebook keeps its choice.
    """
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def save_checkpoint(model, tokenizer, frontend: FrontendConfig, out_dir: str | Path) -> Path:
    """Save so that `ClapModel.from_pretrained` and `ClapProcessor.from_pretrained` load it."""
    from transformers import ClapProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_hub_bars():
        model.save_pretrained(out)
        ClapProcessor(
            feature_extractor=feature_extractor_for(frontend), tokenizer=tokenizer
        ).save_pretrained(out)
    readable_as_umask_allows(out)
    return out


def readable_as_umask_allows(folder: Path) -> None:
    """Give the files of a saved model the mode the umask allows: safetensors writes
    model.safetensors 0600 whatever the umask (the other files get 0644), so on a
    shared runs folder no one else in the group could read or finetune a final model."""
    from training.atomic import process_umask

    mode = 0o666 & ~process_umask()
    for f in folder.iterdir():
        if f.is_file() and f.stat().st_mode & 0o777 != mode:
            f.chmod(mode)


def missing_local_path(name_or_path: str) -> str | None:
    """Why `name_or_path`, meant as a local folder, is not there; None if it is there or
    reads as a hub id. A hub id is `name` or `org/name`; `runs/x` is one too in form, so
    it counts as local when `runs/` exists here: a typo'd run folder should not spend
    half a minute on hub retries and end in a connection error."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return None
    parts = Path(name_or_path).parts
    local = (
        name_or_path.startswith((".", "/", "~"))
        or len(parts) > 2
        or (len(parts) == 2 and Path(parts[0]).is_dir())
    )
    if not local:
        return None
    there = next((a for a in p.absolute().parents if a.is_dir()), None)
    return f"no such folder (nearest that exists: {there})" if there else "no such folder"


def models_in_run(folder: Path) -> list[Path]:
    """The checkpoints a run folder holds, as load_clap takes them: `train` writes
    RUN/checkpoint, `pretrain` and `finetune` RUN/final and, while they run,
    RUN/checkpoints/step-N/model (the one `latest` names)."""
    found = [folder / n for n in ("checkpoint", "final") if (folder / n / "config.json").is_file()]
    latest = folder / "checkpoints" / "latest"
    if latest.is_file():
        step = folder / "checkpoints" / latest.read_text(encoding="utf-8").strip() / "model"
        if (step / "config.json").is_file():
            found.append(step)
    return found


def check_checkpoint_path(name_or_path: str) -> None:
    """The checks of load_clap that read no model: a local folder that is not there, or
    a run folder given for the checkpoint inside it (CheckpointError, one line)."""
    missing = missing_local_path(name_or_path)
    if missing:
        raise CheckpointError(f"checkpoint {name_or_path!r}: {missing}")
    folder = Path(name_or_path).expanduser()
    if folder.is_dir() and not (folder / "config.json").exists():
        # transformers says only "Unrecognized model ... `model_type`" about these
        inside = models_in_run(folder)
        if inside:
            raise CheckpointError(
                f"{name_or_path!r} is a run folder, not a checkpoint: give "
                + " or ".join(str(m) for m in inside)
            )
        if (folder / "model" / "config.json").is_file():  # checkpoints/step-N
            raise CheckpointError(
                f"{name_or_path!r} holds a checkpoint with its training state: give "
                f"{folder / 'model'}"
            )
        if (folder / "manifest.json").is_file() and (folder / "text_embeddings.npy").is_file():
            made_from = _bundle_source(folder)
            raise CheckpointError(
                f"{name_or_path!r} is a model bundle (for recorders), not a checkpoint: give "
                + (f"the checkpoint it was made from, {made_from}" if made_from else "a checkpoint")
            )
        raise CheckpointError(
            f"{name_or_path!r} holds no config.json, so it is no saved model: give a run's "
            "checkpoint/ folder (save_pretrained layout) or a hub id"
        )
    if folder.is_file():  # transformers read it as a config: "not a valid JSON file"
        raise CheckpointError(
            f"{name_or_path!r} is a file, not a checkpoint: give the folder a model was saved "
            "in (config.json and model.safetensors; a run's checkpoint/) or a hub id"
        )


def _bundle_source(folder: Path) -> str | None:
    """The checkpoint a bundle's manifest says it was made from (None: unreadable)."""
    import json

    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        return manifest.get("producer", {}).get("teacher_checkpoint")
    except (OSError, ValueError, AttributeError):
        return None


def load_clap(name_or_path: str, device: str | torch.device = "cpu") -> LoadedClap:
    """Load a CLAP checkpoint by hub id or local path (hub ids need a connected machine)."""
    from transformers import AutoConfig, AutoTokenizer, ClapFeatureExtractor, ClapModel

    check_checkpoint_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0].rstrip(".")
        advice = ""
        if "connect" in first and not Path(name_or_path).expanduser().exists():
            # GPU nodes are often offline: the hub id cannot work there, a folder can
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            advice = (
                f"; on a machine without internet, download it where there is one "
                f"(`hf download {name_or_path} --local-dir DIR`) and give that folder "
                "instead (pretrain: --init DIR)"
                + (
                    " (HF_HUB_OFFLINE is set, and the hub's cache here does not hold it)"
                    if offline
                    else ", or set HF_HUB_OFFLINE=1 where it is cached"
                )
            )
        raise CheckpointError(f"cannot load checkpoint {name_or_path!r}: {first}{advice}") from e
    if config.model_type != "clap":
        raise CheckpointError(
            f"{name_or_path!r} is a {config.model_type!r} model, not CLAP; give a ClapModel "
            f"checkpoint such as {DEFAULT_CHECKPOINT}"
        )
    if getattr(config.audio_config, "enable_fusion", False):
        raise CheckpointError(f"{name_or_path!r} is a fused CLAP model; use an unfused one")
    with quiet_hub_bars():
        # transformers' @wraps(nn.Module.to) hides the bound self from mypy
        model = ClapModel.from_pretrained(name_or_path).to(device).eval()  # type: ignore[arg-type]
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    try:
        fe = ClapFeatureExtractor.from_pretrained(name_or_path)
        frontend = frontend_from_feature_extractor(fe)
    except OSError as e:
        raise CheckpointError(
            f"{name_or_path!r} has no feature-extractor config (preprocessor_config.json or processor_config.json): the front-end must come with the model"
        ) from e
    except ValueError as e:
        raise CheckpointError(f"{name_or_path!r}: {e}") from e
    return LoadedClap(model=model, tokenizer=tokenizer, frontend=frontend, source=str(name_or_path))


class AudioEncoder(nn.Module):
    """Raw mono waveform (B, window samples) -> L2-normalised embedding (B, D).

    Repeat-pads the window to the model's clip length as CLAP's feature extractor
    does, then front-end, HTS-AT and projection. This is what gets exported.
    """

    def __init__(self, clap_model, frontend: FrontendConfig, mode: Literal["dft", "fft"] = "dft"):
        super().__init__()
        self.clap = clap_model
        self.frontend_cfg = frontend
        # on the tower's device: an encoder of a model loaded on a GPU runs there whole
        self.frontend = LogMelFrontend(frontend, mode=mode).to(module_device(clap_model))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = repeat_pad_torch(wave, self.frontend_cfg.clip_samples)
        mel = self.frontend(x).unsqueeze(1)  # (B, 1, frames, n_mels), fp32 by design
        # the tower's own dtype: a no-op in fp32 and under autocast, needed for bf16 weights
        out = self.clap.get_audio_features(input_features=mel.to(self.clap.dtype))
        return torch.nn.functional.normalize(out.pooler_output, dim=-1)


def tokens_taken(tokenizer, config) -> int:
    """Tokens a CLAP text tower takes, from its tokenizer and ClapConfig (no weights
    needed): the tokenizer's limit, and RoBERTa's positions less the two its padding
    offset uses."""
    positions = config.text_config.max_position_embeddings - 2
    return min(int(tokenizer.model_max_length), positions)


@torch.no_grad()
def text_embeddings(loaded: LoadedClap, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings (len(prompts), D), float32 on CPU. A prompt longer
    than the text tower takes is cut to fit, with a UserWarning saying how many and the
    longest: two species' bundle embeddings came from cut names with no word said.
    (Training refuses such a catalogue before it starts: resolve_prompt_length.)"""
    model, tok = loaded.model, loaded.tokenizer
    device = next(model.parameters()).device
    limit = tokens_taken(tok, model.config)
    # verbose=False: transformers' own warning of the same, before ours, said less
    lengths = [len(ids) for ids in tok(prompts, verbose=False)["input_ids"]]
    long = [(p, n) for p, n in zip(prompts, lengths, strict=True) if n > limit]
    if long:
        import warnings

        p, n = max(long, key=lambda pn: pn[1])
        warnings.warn(
            f"{len(long)} of {len(prompts)} prompts cut to the text model's {limit} tokens "
            f"(the longest, {n}: {p!r}): their embeddings hold a part of the name; "
            "shorten the names or the templates",
            UserWarning,
            stacklevel=2,
        )
    out = []
    for i in range(0, len(prompts), batch_size):
        part = prompts[i : i + batch_size]
        batch = tok(part, padding=True, truncation=True, max_length=limit, return_tensors="pt").to(
            device
        )
        # return_dict is on (the config's default): the output object, not a tuple, and
        # get_text_features always sets its pooler_output (the projected embedding)
        result = cast(
            "BaseModelOutputWithPooling",
            model.get_text_features(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ),
        )
        feats = cast(torch.Tensor, result.pooler_output)
        out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.empty(0, model.config.projection_dim)
