"""CLIP loss over features gathered from every rank (open_clip's local loss).

Each rank scores its own B rows against all world * B columns; DDP's gradient
average of these local losses equals the gradient of the loss one process would
compute on the whole global batch, at 1/world of the logits memory.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from training.loss import MAX_LOGIT_SCALE
from training.pretrain.dist import Dist, gather_with_grad


def gathered_clip_loss(
    audio: torch.Tensor,
    text: torch.Tensor,
    scale_audio: torch.Tensor,
    scale_text: torch.Tensor,
    d: Dist,
) -> torch.Tensor:
    """audio, text: (B, D) L2-normalised on this rank; scales: log inverse temperatures
    (CLAP keeps one per direction: logit_scale_a, logit_scale_t)."""
    all_audio, all_text = gather_with_grad(audio, d), gather_with_grad(text, d)
    labels = torch.arange(len(audio), device=audio.device) + d.rank * len(audio)
    per_audio = scale_audio.clamp(max=MAX_LOGIT_SCALE).exp() * audio @ all_text.t()
    per_text = scale_text.clamp(max=MAX_LOGIT_SCALE).exp() * text @ all_audio.t()
    return 0.5 * (F.cross_entropy(per_audio, labels) + F.cross_entropy(per_text, labels))
