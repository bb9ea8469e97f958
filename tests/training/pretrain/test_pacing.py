"""RunAhead: the host queues at most `depth` steps ahead of the GPU; the loop's logs
time whole intervals between loss reads."""

import json

import pytest
import torch

from training.pretrain.config import PretrainConfig
from training.pretrain.pacing import RunAhead

from .conftest import tiny_run


def test_on_cpu_it_waits_for_nothing_and_a_negative_depth_is_refused():
    pace = RunAhead(torch.device("cpu"), 1)
    for _ in range(3):
        pace.step_queued()
    pace.drain()
    with pytest.raises(ValueError, match="run_ahead must be >= 0"):
        RunAhead(torch.device("cpu"), -1)
    with pytest.raises(ValueError, match="run_ahead must be 0"):
        PretrainConfig(run_ahead=-1).check()


def test_the_loop_logs_per_interval_timings(pretrain_checkpoint, tmp_path):
    from training.pretrain.loop import pretrain

    cfg = tiny_run(tmp_path, pretrain_checkpoint, max_steps=4, log_every=2, checkpoint_every=100)
    pretrain(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "train_log.jsonl").open()]
    steps = [r for r in rows if "step" in r]
    assert [r["step"] for r in steps] == [1, 2, 4]
    for r in steps:
        assert 0 <= r["data_wait_s"] <= r["step_s"]
        assert r["samples_per_s"] == pytest.approx(8 / r["step_s"], rel=1e-3)


@pytest.mark.hardware
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_at_most_depth_steps_are_in_flight():
    dev = torch.device("cuda")
    for depth in (0, 1, 2):
        pace = RunAhead(dev, depth)
        for _ in range(4):
            torch.cuda._sleep(50_000_000)  # a "step" of tens of ms on the compute stream
            pace.step_queued()
            assert len(pace._in_flight) <= depth
            if depth == 0:
                assert torch.cuda.current_stream(dev).query()  # nothing left running
        pace.drain()
        assert torch.cuda.current_stream(dev).query()


@pytest.mark.hardware
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_running_ahead_trains_the_same_model(pretrain_checkpoint, tmp_path):
    from training.pretrain.loop import pretrain

    losses = []
    for depth in (0, 1):
        out = tmp_path / f"ahead{depth}"
        pretrain(tiny_run(out, pretrain_checkpoint, max_steps=4, run_ahead=depth), progress=False)
        rows = [json.loads(line) for line in (out / "train_log.jsonl").open()]
        losses.append([r["loss"] for r in rows if "step" in r])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
