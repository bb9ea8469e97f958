"""Both towers' attention through torch's fused `scaled_dot_product_attention`.

transformers runs ClapModel's attention eagerly (ClapModel does not declare SDPA
support). Its HTS-AT attention (`ClapAudioSelfAttention`, Swin's) writes out every
window's scores: (B·windows, heads, 64, 64), in fp32 under autocast since the bias added
to them is fp32. At batch 256 of 10 s crops that is 1.1 GB per tensor in stage 1 alone,
and the scale, bias, shift mask, softmax and their backward each pass over such
tensors. `SdpaWindowAttention` computes the same attention in one fused call
(memory-efficient or cuDNN kernels on a GPU), with the bias and the shift mask passed
as one additive mask (in the compute dtype: bf16 under autocast, where eager adds
the bias to fp32 scores), and Q, K, V from one matmul. The RoBERTa text tower already has an
SDPA path in transformers; `use_attention` selects it through its config.

Parameters, buffers and state-dict keys stay the modules' own, and the choice is not
saved: a checkpoint saved with either attention loads into plain `ClapModel`.
`output_attentions=True` takes transformers' path, which returns the probabilities.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.clap.modeling_clap import (
    ClapAudioSelfAttention,
    ClapTextModel,
    ClapTextSelfAttention,
)

from training.pretrain.config import ATTENTIONS


class SdpaWindowAttention(ClapAudioSelfAttention):
    """`ClapAudioSelfAttention` computed by `F.scaled_dot_product_attention`."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = False,
    ) -> tuple[torch.Tensor]:
        if output_attentions:
            return super().forward(hidden_states, attention_mask, output_attentions)
        b, n, _ = hidden_states.shape  # (batch·windows, tokens per window, dim)
        heads, d = self.num_attention_heads, self.attention_head_size
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = None
        if self.query.bias is not None:
            bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        # (b, n, 3·dim) -> (3, b, heads, n, d), contiguous, so that splitting b into
        # (images, windows) and merging windows with heads below are views
        qkv = F.linear(hidden_states, weight, bias).view(b, n, 3, heads, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        position = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        # (1, heads, n, n), contiguous: fused kernels want the key axis at stride 1
        mask = position.view(n, n, heads).permute(2, 0, 1).contiguous().unsqueeze(0)
        if attention_mask is not None:
            # the shifted windows' mask, (windows, n, n), one per window of every image:
            # (images, windows·heads, n, n) attention with a (1, windows·heads, n, n)
            # mask broadcast over images, never written out per image
            windows = attention_mask.shape[0]
            mask = (mask + attention_mask.unsqueeze(1)).reshape(1, windows * heads, n, n)
            q, k, v = (t.view(b // windows, windows * heads, n, d) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask.to(q.dtype),
            dropout_p=self.dropout.p if self.training else 0.0,
        )
        # (b, heads, n, d) -> (b, n, heads·d), as transformers returns it
        return (out.reshape(b, heads, n, d).transpose(1, 2).reshape(b, n, heads * d),)


def text_attention_dispatches() -> bool:
    """Whether this transformers' CLAP text attention picks its implementation from the
    config at each forward (its ALL_ATTENTION_FUNCTIONS path), as 5.24's does."""
    return "_attn_implementation" in ClapTextSelfAttention.forward.__code__.co_names


def use_attention(model: nn.Module, kind: str) -> tuple[int, int]:
    """Switch the attention of every CLAP tower in `model` to `kind` (eager or sdpa), in
    place. Returns (HTS-AT window attentions, RoBERTa layers) now running `kind`; the
    text count is 0 for sdpa where transformers' text attention has no such path."""
    if kind not in ATTENTIONS:
        raise ValueError(f"attention: {kind!r} is not one of {ATTENTIONS}")
    window = SdpaWindowAttention if kind == "sdpa" else ClapAudioSelfAttention
    audio = text = 0
    for m in model.modules():
        if isinstance(m, ClapAudioSelfAttention):
            m.__class__ = window
            audio += 1
        elif isinstance(m, ClapTextModel) and text_attention_dispatches():
            # transformers reads the implementation from the config at every forward
            m.config._attn_implementation = kind
            text += sum(isinstance(s, ClapTextSelfAttention) for s in m.modules())
    return audio, text
