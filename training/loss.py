"""Symmetric CLIP contrastive loss with a learnable logit scale."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

MAX_LOGIT_SCALE = math.log(100.0)  # as CLIP: the temperature cannot fall below 0.01


def clip_loss(audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """audio, text: (B, D) L2-normalised; logit_scale: log of the temperature's inverse.

    The scale is clamped at ln(100) as in CLIP so training cannot blow it up; the
    parameter itself is held there by `clamp_logit_scales` after each step.
    """
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * audio @ text.t()  # (B, B), row i = audio i against every text
    target = torch.arange(len(audio), device=audio.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@torch.no_grad()
def clamp_logit_scales(clap: torch.nn.Module) -> None:
    """Hold a ClapModel's logit scales at ln(100), after every optimizer step (as CLIP
    and open_clip do). The loss's clamp alone passes no gradient once a scale is past
    it, so one step over the edge would pin the temperature at 0.01 for good."""
    for name in ("logit_scale_a", "logit_scale_t"):
        getattr(clap, name).clamp_(max=MAX_LOGIT_SCALE)
