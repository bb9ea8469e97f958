"""Crops cross processes as 16-bit PCM: exact for 16-bit audio, scaled back on the device."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch

from animalclap_edge.audio.decode import read_all
from training.pretrain.data import Collate


class _Tok:
    def __call__(self, texts, **kw):
        ids = torch.ones((len(texts), 4), dtype=torch.long)
        return {"input_ids": ids, "attention_mask": ids}


def test_int16_collate_is_exact_for_16_bit_audio_and_halves_the_bytes(realaudio, tmp_path):
    # a real 16-bit recording, decoded as the loader decodes it
    src = sorted(realaudio.glob("srkw*.wav"))[0]
    assert sf.info(str(src)).subtype == "PCM_16"
    x = read_all(src, sf.info(str(src)).samplerate)[: 48_000 * 2]
    batch = [(x, "a"), (x[::-1].copy(), "b")]
    wide = Collate(_Tok())(batch)["wave"]
    narrow = Collate(_Tok(), int16=True)(batch)["wave"]
    assert narrow.dtype == torch.int16 and wide.dtype == torch.float32
    assert narrow.element_size() * 2 == wide.element_size()
    back = narrow.float().mul_(1 / 32768)  # what ClapTrainModule.forward does
    torch.testing.assert_close(back, wide, rtol=0, atol=0)


def test_int16_collate_clips_full_scale_instead_of_wrapping():
    x = np.array([1.0, -1.0, 0.99999, -0.5], np.float32)
    wave = Collate(_Tok(), int16=True)([(x, "a")])["wave"][0]
    assert wave.tolist() == [32767, -32768, 32767, -16384]


class _Crops(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        return np.random.default_rng(i).uniform(-1.2, 1.2, 4_800).astype(np.float32), "a"


def test_a_loader_worker_hands_over_the_same_batch_as_the_main_process():
    for int16 in (False, True):
        collate = Collate(_Tok(), int16=int16)
        here = collate([_Crops()[i] for i in range(3)])["wave"]
        loader = torch.utils.data.DataLoader(
            _Crops(), batch_size=3, num_workers=2, collate_fn=collate
        )
        there = [b["wave"] for b in loader]
        assert torch.equal(there[0], here) and there[0].dtype == here.dtype
        assert len(there) == 2 and not torch.equal(there[0], there[1])


def test_fixed_prompt_length_pads_every_batch_to_one_shape_and_refuses_to_cut(
    pretrain_checkpoint,
):
    from training.model import load_clap

    tok = load_clap(str(pretrain_checkpoint)).tokenizer
    x = np.zeros(480, np.float32)
    short, longer = (x, "Turdus merula"), (x, "Aves Passeriformes Turdidae Turdus merula")
    free = Collate(tok)([short, longer])
    n = free["input_ids"].shape[1]
    fixed = Collate(tok, pad_to=n + 5)
    for batch in ([short], [short, longer]):
        out = fixed(batch)
        assert out["input_ids"].shape == (len(batch), n + 5)
    both = fixed([short, longer])
    # the real tokens are those of the batch padded to its longest; the rest is padding
    assert torch.equal(both["input_ids"][:, :n], free["input_ids"])
    assert torch.equal(both["attention_mask"][:, :n], free["attention_mask"])
    assert not both["attention_mask"][:, n:].any()
    assert Collate(tok, pad_to=n)([short, longer])["input_ids"].shape == (2, n)  # exact fit
    with pytest.raises(ValueError, match=f"longer than prompt_length={n - 1} tokens"):
        Collate(tok, pad_to=n - 1)([short, longer])


def test_a_prompt_longer_than_the_text_model_takes_is_refused_not_cut(pretrain_checkpoint):
    from training.model import load_clap

    tok = load_clap(str(pretrain_checkpoint)).tokenizer
    x = np.zeros(480, np.float32)
    batch = [(x, "Turdus merula"), (x, "Aves Passeriformes Turdidae Turdus merula")]
    n = Collate(tok)(batch)["input_ids"].shape[1]
    assert Collate(tok, max_len=n)(batch)["input_ids"].shape == (2, n)  # exact fit
    with pytest.raises(ValueError, match=f"'Aves Passeriformes .*' is longer than the {n - 1}"):
        Collate(tok, max_len=n - 1)(batch)


def test_replay_fraction_0_replays_nothing():
    """finetune --replay G --set replay_fraction=0 (replay weight 0) used to plan a
    balanced epoch over every species, the replayed global ones included: with 3
    regional species and 20 global ones, 87% of each epoch was replay."""
    from training.pretrain.data import epoch_plan

    species = [f"r{i}" for i in range(3) for _ in range(4)] + [f"g{i}" for i in range(20)]
    is_replay = np.array([s.startswith("g") for s in species])
    plan = epoch_plan(species, is_replay, 5, 0.0, seed=0, epoch=0)
    assert not is_replay[plan].any()
    assert sorted(Counter(species[i] for i in plan).values()) == [5, 5, 5]
    quarter = epoch_plan(species, is_replay, 5, 0.25, seed=0, epoch=0)
    assert is_replay[quarter].sum() == 5  # 15 regional clips -> 5 replayed = 25%
