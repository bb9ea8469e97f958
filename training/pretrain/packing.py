"""Prompts packed end to end into fixed rows for the text tower, instead of each padded
to the catalogue's longest.

CUDA graphs need one prompt shape for the run; padding every prompt to the longest
(prompt_length=auto) spends most of the text tower's work on padding. eBird's 6,823
first species under the five templates: 14.5 tokens a prompt on average, the longest 43,
so 48 a prompt padded and 3.3x the tokens that carry text. Packed, a batch of 256 takes
a fixed budget of rows of `row_tokens` (67 rows of 64 = 4,288 tokens against 12,288
padded to 48), each prompt attends only to itself (a block-diagonal mask built on the
device from the segment ids), its positions restart at its first token, and its
feature is read at its <s>, as `ClapModel.get_text_features` reads it from a padded row
(tests/training/pretrain/test_packing.py checks both give the same features and
gradients).

A batch is packed first-fit by decreasing length into `PackPlan.rows` rows. The plan
sizes them from the catalogue's prompt lengths for 5 standard deviations above the
mean batch, plus a row for the packing's loss (on eBird lengths the largest of 3,000
drawn batches of 256 needed 64 rows of 64, 59.0 on average; the plan gives 67:
scripts/benchmarks/prompt_packing.py --batch 256 --simulate 3000 --lengths-only). A
batch that still does not fit takes more rows, a new shape (a recompilation under
torch.compile), and the loop logs it: `overflowed`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # transformers takes seconds to load
    from transformers import ClapModel

# keys of a packed batch's text, beside its "wave" (or ring "slot")
PACKED_KEYS = ("input_ids", "segments", "cls_index")
# standard deviations of a batch's total prompt tokens the rows are sized for
SIGMAS = 5.0  # one batch in 3.5 million past it, if normal: a paper run has 16,000


AUTO_ROW = 64  # tokens a row with prompt_packing=auto, unless a prompt is longer


def auto_row(lengths: Sequence[int]) -> int:
    """prompt_packing=auto: rows of AUTO_ROW tokens, or of the longest prompt rounded
    up to 8 where that is longer (a hub tokenizer splits long names finer)."""
    return max(AUTO_ROW, -(-max(lengths) // 8) * 8)


@dataclass(frozen=True)
class PackPlan:
    """Rows of `row_tokens` tokens, `rows` a batch of `prompts` prompts."""

    row_tokens: int
    rows: int
    prompts: int

    @classmethod
    def for_lengths(cls, lengths: Sequence[int], prompts: int, row_tokens: int) -> PackPlan:
        """Rows for batches of `prompts` prompts drawn from `lengths` (tokens of every
        prompt the templates give for the catalogue, special tokens included)."""
        x = np.asarray(lengths, dtype=np.float64)
        if x.size == 0:
            raise ValueError("prompt packing needs at least one prompt length")
        if x.max() > row_tokens:
            raise ValueError(
                f"prompt_packing={row_tokens} is shorter than the catalogue's longest "
                f"prompt ({int(x.max())} tokens): set prompt_packing={int(x.max())} or more"
            )
        tokens = x.mean() * prompts + SIGMAS * x.std() * math.sqrt(prompts)
        rows = min(math.ceil(tokens / row_tokens) + 1, prompts)  # never past one a prompt
        return cls(row_tokens=row_tokens, rows=rows, prompts=prompts)

    def rows_for(self, prompts: int) -> int:
        """Rows for a slice of `prompts` of a batch (bench's FLOP count), in proportion."""
        return max(1, math.ceil(self.rows * prompts / self.prompts))

    @property
    def tokens(self) -> int:
        return self.rows * self.row_tokens


def pack(
    token_lists: Sequence[Sequence[int]], row_tokens: int, rows: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Prompts' token ids first-fit by decreasing length into `rows` rows of
    `row_tokens` (more rows when they do not fit; see `overflowed`).

    Returns input_ids (rows, row_tokens) int64, pad where no prompt is; segments (rows,
    row_tokens) int32, k + 1 on prompt k's tokens and 0 on padding; cls_index (B,)
    int64, prompt k's first token in the flattened rows, in the prompts' order."""
    free: list[int] = []  # tokens left in each row
    starts = np.empty(len(token_lists), dtype=np.int64)
    for k in sorted(range(len(token_lists)), key=lambda k: -len(token_lists[k])):
        n = len(token_lists[k])
        if n > row_tokens:
            raise ValueError(f"a prompt of {n} tokens does not fit a row of {row_tokens}")
        row = next((r for r, f in enumerate(free) if f >= n), None)
        if row is None:
            row = len(free)
            free.append(row_tokens)
        starts[k] = row * row_tokens + row_tokens - free[row]
        free[row] -= n
    total = max(rows, len(free)) * row_tokens
    ids = np.full(total, pad_id, dtype=np.int64)
    segments = np.zeros(total, dtype=np.int32)
    for k, (start, tokens) in enumerate(zip(starts, token_lists, strict=True)):
        ids[start : start + len(tokens)] = tokens
        segments[start : start + len(tokens)] = k + 1
    shape = (total // row_tokens, row_tokens)
    return {
        "input_ids": torch.from_numpy(ids.reshape(shape)),
        "segments": torch.from_numpy(segments.reshape(shape)),
        "cls_index": torch.from_numpy(starts),
    }


def unpack(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """The prompts' token ids of a packed batch, in its order (what `pack` took)."""
    ids, seg = batch["input_ids"].flatten().tolist(), batch["segments"].flatten().tolist()
    out: list[list[int]] = [[] for _ in range(len(batch["cls_index"]))]
    for token, s in zip(ids, seg, strict=True):
        if s:
            out[s - 1].append(token)
    return out


def is_packed(batch: dict) -> bool:
    return "segments" in batch


def clips_in(batch: dict) -> int:
    """Clips in a batch, packed or padded (a packed batch has fewer rows than prompts)."""
    return len(batch["cls_index"]) if is_packed(batch) else len(batch["input_ids"])


def take(batch: dict[str, torch.Tensor], n: int, plan: PackPlan | None, pad_id: int) -> dict:
    """The first `n` clips of a batch; a packed one repacked into `plan.rows_for(n)`
    rows, so its text costs what `n` clips of a real batch do."""
    if not is_packed(batch):
        return {k: v[:n] for k, v in batch.items()}
    if plan is None:
        raise ValueError("a packed batch is repacked by its PackPlan: give the plan")
    text = pack(unpack(batch)[:n], plan.row_tokens, plan.rows_for(n), pad_id)
    rest = {k: v[:n] for k, v in batch.items() if k not in PACKED_KEYS}
    return {**rest, **text}


def overflowed(batch: dict, plan: PackPlan | None) -> int:
    """Rows a packed batch took beyond its plan (0 when it fit, or is not packed)."""
    if plan is None or not is_packed(batch):
        return 0
    return max(0, len(batch["input_ids"]) - plan.rows)


def _positions(segments: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """RoBERTa's position ids for packed rows: padding_idx + 1 + the token's index in
    its prompt, padding_idx on padding (what create_position_ids_from_input_ids gives a
    padded row). (R, L) -> (R, L) int64."""
    index = torch.arange(segments.shape[1], device=segments.device).expand_as(segments)
    first = torch.ones_like(segments, dtype=torch.bool)
    first[:, 1:] = segments[:, 1:] != segments[:, :-1]
    start = torch.where(first, index, torch.zeros_like(index)).cummax(dim=1).values
    return torch.where(segments > 0, index - start + padding_idx + 1, padding_idx)


def _sdpa(text: nn.Module) -> bool:
    """Whether the text layers run scaled_dot_product_attention: the config says sdpa
    and this transformers' layers read it (where they do not, as before 5.24's
    dispatch, they add the mask as eager does, and a bool mask would be wrong)."""
    from training.pretrain.window_attention import text_attention_dispatches

    sdpa = getattr(text.config, "_attn_implementation", "eager") == "sdpa"
    return sdpa and text_attention_dispatches()


def packed_text_features(
    clap: ClapModel, input_ids: torch.Tensor, segments: torch.Tensor, cls_index: torch.Tensor
) -> torch.Tensor:
    """`clap.get_text_features` of packed prompts, unnormalised: (R, L) rows -> (B, D).

    The embeddings and encoder are called directly with a 4-D mask, as the text model's
    forward would pass its own to the encoder: a bool mask where the layers run sdpa
    (the form scaled_dot_product_attention takes), additive where they run eager. Padding attends to
    padding, so no row of the softmax is empty."""
    text = clap.text_model
    same = segments[:, None, :, None] == segments[:, None, None, :]  # (R, 1, L, L)
    hidden = text.embeddings(
        input_ids=input_ids, position_ids=_positions(segments, text.embeddings.padding_idx)
    )
    if _sdpa(text):
        mask = same
    else:
        mask = torch.zeros(same.shape, dtype=hidden.dtype, device=same.device)
        mask = mask.masked_fill(~same, torch.finfo(hidden.dtype).min)
    hidden = text.encoder(hidden, attention_mask=mask)[0]  # (R, L, H)
    first = hidden.flatten(0, 1)[cls_index]  # (B, H): each prompt's <s>
    if text.pooler is None:
        raise ValueError("packed prompts are read through the text model's pooler: it has none")
    return clap.text_projection(text.pooler(first[:, None]))
