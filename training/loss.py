"""Symmetric CLIP contrastive loss with a learnable logit scale."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def clip_loss(audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """audio, text: (B, D) L2-normalised; logit_scale: log of the temperature's inverse.

    The scale is clamped at ln(100) as in CLIP so training cannot blow it up.
    """
    scale = logit_scale.clamp(max=4.6052).exp()
    logits = scale * audio @ text.t()  # (B, B), row i = audio i against every text
    target = torch.arange(len(audio), device=audio.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
