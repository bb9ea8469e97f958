"""`compile=true`: the torch.compile'd loop trains the same model as the eager one."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from training.pretrain.loop import pretrain

from .conftest import tiny_run


def _losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    return [r["loss"] for r in rows if "step" in r]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("attention", "packing"), [("eager", 0), ("sdpa", 0), ("eager", 48), ("sdpa", 48)]
)
def test_compiled_run_matches_the_eager_run(pretrain_checkpoint, tmp_path, attention, packing):
    eager = tiny_run(
        tmp_path / "eager",
        pretrain_checkpoint,
        max_steps=3,
        checkpoint_every=100,
        prompt_packing=packing,
    )
    compiled = dataclasses.replace(
        eager, out=str(tmp_path / "compiled"), compile=True, attention=attention
    )
    torch.set_num_threads(1)
    pretrain(eager, progress=False)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()  # reset() keeps them, and an earlier compiled test would count here
    pretrain(compiled, progress=False)
    assert counters["stats"]["unique_graphs"] == 1  # inductor ran, on one whole graph
    # compiled once, though prompt lengths (padded) or the prompts in each row (packed) vary
    assert counters["frames"]["total"] == 1
    assert not counters["graph_break"]

    assert "torch.compile: inductor" in (tmp_path / "compiled" / "train_log.jsonl").read_text()
    a, b = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert len(a) == len(b) == 3
    # Same batches and weights; inductor fuses and reorders float ops, so close, not equal.
    assert b == pytest.approx(a, rel=2e-3), (a, b)
    assert a[0] != a[-1]  # it trained


@pytest.mark.slow
def test_compiled_ddp_ranks_match_one_eager_process(pretrain_checkpoint, tmp_path):
    """compile=true on DDP-wrapped towers (what a multi-GPU run does), on two gloo ranks."""
    from .conftest import torchrun_two_ranks

    one = tiny_run(tmp_path / "one", pretrain_checkpoint, max_steps=3, checkpoint_every=100)
    two = dataclasses.replace(one, out=str(tmp_path / "two"), compile=True)
    torch.set_num_threads(1)
    pretrain(one, progress=False)
    torchrun_two_ranks(two, timeout=600)
    log = (tmp_path / "two" / "train_log.jsonl").read_text()
    assert "2 rank(s) on cpu" in log and "torch.compile: inductor" in log
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 3
    assert b == pytest.approx(a, rel=2e-3), (a, b)
