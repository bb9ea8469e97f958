"""Packed prompts (prompt_packing): the layout round-trips, the rows are sized for the
catalogue, and the text tower gives packed prompts the features and gradients it gives
them padded."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from animalclap_edge.contracts.prompts import ALL_TEMPLATES
from training.model import load_clap
from training.pretrain.data import Collate, prompt_lengths
from training.pretrain.loop import ClapTrainModule, pretrain
from training.pretrain.packing import (
    PackPlan,
    auto_row,
    clips_in,
    overflowed,
    pack,
    packed_text_features,
    take,
    unpack,
)
from training.pretrain.window_attention import use_attention

from .conftest import tiny_run


def _prompts(rng: np.random.Generator, n: int, longest: int = 40) -> list[list[int]]:
    # <s>=0 ... </s>=2 around ids from 5 up, as a RoBERTa tokenizer gives them
    return [[0, *rng.integers(5, 300, rng.integers(1, longest - 1)).tolist(), 2] for _ in range(n)]


def test_pack_round_trips_and_points_at_each_prompts_first_token():
    prompts = _prompts(np.random.default_rng(0), 50)
    batch = pack(prompts, row_tokens=64, rows=20, pad_id=1)
    ids, seg = batch["input_ids"], batch["segments"]
    assert ids.shape == seg.shape == (20, 64) and clips_in(batch) == 50
    assert unpack(batch) == prompts
    flat_ids, flat_seg = ids.flatten(), seg.flatten()
    assert (flat_ids[batch["cls_index"]] == 0).all()  # every <s>, in the prompts' order
    assert (flat_seg[batch["cls_index"]] == torch.arange(1, 51)).all()
    assert (flat_ids[flat_seg == 0] == 1).all()  # padding is pad, and only padding is
    # a prompt never straddles two rows
    for k in range(1, 51):
        assert len(set((seg == k).nonzero()[:, 0].tolist())) == 1
    # packed first-fit by decreasing length: close to the tokens the prompts hold
    used_rows = int((seg > 0).any(dim=1).sum())
    assert used_rows == -(-sum(map(len, prompts)) // 64)


def test_a_batch_that_does_not_fit_its_rows_takes_more_and_says_so():
    plan = PackPlan(row_tokens=16, rows=2, prompts=6)
    prompts = [[0, 5, 6, 7, 8, 9, 10, 2]] * 6  # 48 tokens: three rows of 16
    batch = pack(prompts, plan.row_tokens, plan.rows, pad_id=1)
    assert batch["input_ids"].shape == (3, 16) and unpack(batch) == prompts
    assert overflowed(batch, plan) == 1
    assert overflowed(pack(prompts[:4], 16, 2, 1), plan) == 0
    with pytest.raises(ValueError, match="a prompt of 17 tokens does not fit a row of 16"):
        pack([[0] * 17], 16, 2, 1)


def test_the_plan_leaves_room_for_the_batches_the_catalogue_gives():
    rng = np.random.default_rng(1)
    # eBird-like: most prompts short (names), a long tail (taxonomy with common name)
    lengths = np.concatenate([rng.integers(4, 12, 3000), rng.integers(14, 44, 2000)])
    plan = PackPlan.for_lengths(lengths, prompts=256, row_tokens=64)
    needed = [
        len(pack([[7] * n for n in rng.choice(lengths, 256)], 64, 1, 1)["input_ids"])
        for _ in range(300)
    ]
    assert max(needed) <= plan.rows < 1.25 * np.mean(needed)  # room, and not much more
    assert plan.tokens < 256 * 44 / 2  # under half the tokens of padding to the longest
    with pytest.raises(ValueError, match="set prompt_packing=43 or more"):
        PackPlan.for_lengths([5, 43], prompts=8, row_tokens=32)
    assert PackPlan.for_lengths([60], prompts=3, row_tokens=64).rows == 3  # one a prompt


def test_auto_rows_are_64_tokens_unless_a_prompt_is_longer(pretrain_checkpoint, species):
    from training.pretrain.loop import catalogue_prompt_lengths, resolve_packing

    assert auto_row([5, 43]) == 64
    assert auto_row([5, 70]) == 72  # a hub tokenizer's long name: rounded up to 8
    cfg = tiny_run("unused", pretrain_checkpoint, prompt_packing="auto")
    lengths = catalogue_prompt_lengths(cfg, load_clap(pretrain_checkpoint).tokenizer, species)
    plan = resolve_packing(cfg, lengths, 8)
    assert plan.row_tokens == 64 and plan.prompts == 8
    assert resolve_packing(tiny_run("unused", pretrain_checkpoint), lengths, 8) is None


def test_a_slice_of_a_packed_batch_is_repacked_in_proportion():
    plan = PackPlan(row_tokens=64, rows=20, prompts=50)
    prompts = _prompts(np.random.default_rng(2), 50)
    batch = {"wave": torch.zeros(50, 8), **pack(prompts, 64, plan.rows, 1)}
    half = take(batch, 25, plan, pad_id=1)
    assert half["input_ids"].shape == (10, 64) and half["wave"].shape == (25, 8)
    assert unpack(half) == prompts[:25]
    padded = {"input_ids": torch.ones(50, 9), "attention_mask": torch.ones(50, 9)}
    assert take(padded, 5, None, 1)["input_ids"].shape == (5, 9)


@pytest.fixture(scope="module")
def text_model(pretrain_checkpoint):
    loaded = load_clap(pretrain_checkpoint)
    torch.manual_seed(0)
    with torch.no_grad():  # weights away from their init, so every term shows
        for p in loaded.model.text_model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return loaded


@pytest.fixture(scope="module")
def species():
    from training.labelled_audio import open_labelled

    return list(open_labelled("tiny").catalogue)


def _text_grads(model, features):
    model.zero_grad()
    (features * torch.linspace(-1, 1, features.shape[-1])).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_prompts_get_the_padded_prompts_features_and_gradients(
    text_model, species, attention
):
    tok = text_model.tokenizer
    model = copy.deepcopy(text_model.model).eval()
    use_attention(model, attention)
    texts = [f"{s.scientific_name} with common name {s.common_name}" for s in species[:5]]
    texts += [s.common_name for s in species[5:12]] + [s.scientific_name for s in species[:4]]
    padded = tok(texts, padding=True, return_tensors="pt")
    want = model.get_text_features(**padded).pooler_output  # normalised
    want_grads = _text_grads(model, want)

    batch = pack(tok(texts)["input_ids"], 48, 4, tok.pad_token_id)
    assert batch["input_ids"].numel() < padded["input_ids"].numel()
    got = torch.nn.functional.normalize(packed_text_features(model, **batch), dim=-1)
    got_grads = _text_grads(model, got)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for name, g in want_grads.items():
        torch.testing.assert_close(got_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_the_module_takes_a_packed_batch_as_it_takes_a_padded_one(text_model, species):
    module = ClapTrainModule(copy.deepcopy(text_model)).eval()
    tok = text_model.tokenizer
    lengths = prompt_lengths(tok, species, list(ALL_TEMPLATES))
    plan = PackPlan.for_lengths(lengths, prompts=6, row_tokens=48)
    texts = [s.common_name for s in species[:3]] + [s.scientific_name for s in species[:3]]
    wave = torch.randn(6, 48_000)
    with torch.no_grad():
        audio_p, text_p = module(wave, **Collate(tok, pad_to=32).tokens(texts))
        audio_k, text_k = module(wave, **Collate(tok, pack=plan).tokens(texts))
    torch.testing.assert_close(audio_k, audio_p)
    torch.testing.assert_close(text_k, text_p, atol=2e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="a packed row of prompt_packing=4 tokens: raise"):
        Collate(tok, pack=PackPlan(4, 6, 6)).tokens(texts)


def _losses(out) -> list[float]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    return [r["loss"] for r in rows if "step" in r]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_packed_run_trains_as_the_padded_run(pretrain_checkpoint, tmp_path, checkpointing):
    padded = tiny_run(
        tmp_path / "padded",
        pretrain_checkpoint,
        max_steps=3,
        log_every=1,
        grad_checkpointing=checkpointing,
    )
    packed = dataclasses.replace(padded, out=str(tmp_path / "packed"), prompt_packing=48)
    pretrain(padded, progress=False)
    pretrain(packed, progress=False)
    log = (tmp_path / "packed" / "train_log.jsonl").read_text()
    assert "prompts packed into" in log and "beyond the" not in log
    a, b = _losses(tmp_path / "padded"), _losses(tmp_path / "packed")
    assert len(a) == len(b) == 3
    np.testing.assert_allclose(b, a, rtol=1e-4)
