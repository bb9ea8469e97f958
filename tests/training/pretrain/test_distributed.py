"""torchrun with two CPU ranks (gloo) against one process with the same global batch,
and a run killed with SIGKILL and resumed against an uninterrupted one."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training.pretrain.loop import pretrain

from .conftest import (
    REPO,
    child_env,
    cli_args,
    tiny_run,
    torchrun_two_nodes,
    torchrun_two_ranks,
    two_nodes,
)


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    return {r["step"]: r["loss"] for r in rows if "step" in r}  # later lines win (resume)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import ClapModel

    return ClapModel.from_pretrained(folder).state_dict()


def _two_ranks_match_one_process(checkpoint, tmp_path: Path, launch, steps: int) -> None:
    """Same settings in one process and as two ranks started by `launch`: same losses."""
    one = tiny_run(tmp_path / "one", checkpoint, max_steps=steps)
    torch.set_num_threads(1)
    pretrain(one, progress=False)
    launch(dataclasses.replace(one, out=str(tmp_path / "two")))
    assert "2 rank(s) on cpu" in (tmp_path / "two" / "train_log.jsonl").read_text()
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert list(a) == list(b) == list(range(1, steps + 1))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), step


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(pretrain_checkpoint, tmp_path):
    _two_ranks_match_one_process(pretrain_checkpoint, tmp_path, torchrun_two_ranks, 3)
    # Adam's first steps are ~lr * sign(grad): where a gradient is ~0, summation-order
    # noise can flip a sign, so weights are compared as a whole against how far
    # training moved them, not element by element.
    w0 = _weights(pretrain_checkpoint)
    wa, wb = _weights(tmp_path / "one" / "final"), _weights(tmp_path / "two" / "final")
    moved = sum(((wa[k] - w0[k]).double() ** 2).sum() for k in wa) ** 0.5
    apart = sum(((wa[k] - wb[k]).double() ** 2).sum() for k in wa) ** 0.5
    assert moved > 0.1 and apart / moved < 1e-3, (float(moved), float(apart))


def test_two_nodes_of_one_rank_each_match_one_process(pretrain_checkpoint, tmp_path):
    """The multi-node path: ranks that share LOCAL_RANK 0, on "nodes" met by rendezvous."""
    _two_ranks_match_one_process(pretrain_checkpoint, tmp_path, torchrun_two_nodes, 2)
    assert (tmp_path / "two" / "final" / "config.json").is_file()


def test_nodes_started_with_other_settings_or_out_are_refused_on_every_node(
    pretrain_checkpoint, tmp_path
):
    """Two nodes with another lr each trained on without a word (one model per node);
    another max_steps hung; another --out (a node's own scratch) mixed a resumed rank
    with a new one, then hung (found in a multi-node dry run)."""
    base = tiny_run(tmp_path / "a", pretrain_checkpoint, max_steps=2)
    other = dataclasses.replace(base, lr=5e-2, out=str(tmp_path / "b"))
    for code, err in two_nodes([base, other], timeout=240):
        assert code != 0
        assert "the ranks disagree on lr (rank 0: 0.001, rank 1: 0.05), out (rank 0:" in err
        assert "one --out that every node sees" in err
    assert not (tmp_path / "a" / "final").exists()


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(pretrain_checkpoint, tmp_path):
    # checkpoints every 3 steps of 5-step epochs: at 3, 6, 9, 12, none on a boundary
    whole = tiny_run(
        tmp_path / "whole", pretrain_checkpoint, workers=2, tensorboard=True, checkpoint_every=3
    )
    torch.set_num_threads(1)
    pretrain(whole, progress=False)
    assert list((tmp_path / "whole" / "tensorboard").glob("events.out.tfevents.*"))

    cut = dataclasses.replace(whole, out=str(tmp_path / "cut"), workers=0)
    proc = subprocess.Popen(
        [sys.executable, *cli_args(cut)], cwd=REPO, env=child_env(), stderr=subprocess.DEVNULL
    )
    latest = tmp_path / "cut" / "checkpoints" / "latest"
    try:
        deadline = time.monotonic() + 240
        while not (latest.exists() and latest.read_text() >= "step-00000006"):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-epoch: 5 steps per epoch
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "final").exists()

    pretrain(cut, progress=False)  # same settings, same --out: resumes from `latest`
    log = (tmp_path / "cut" / "train_log.jsonl").read_text()
    resumed = int(log.split("resuming at step ")[1].split()[0])
    assert resumed in (6, 9, 12)  # mid-epoch, from a checkpoint of the killed run
    wa, wb = _weights(tmp_path / "whole" / "final"), _weights(tmp_path / "cut" / "final")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)
    a, b = _losses(tmp_path / "whole"), _losses(tmp_path / "cut")
    assert a == b and len(a) == 15  # 3 epochs of 20 seen species x 2 clips / batch 8


def test_an_out_folder_holding_another_run_is_not_resumed(pretrain_checkpoint, tmp_path):
    """A reused --out with other data or seed used to 'resume' silently: the old run's
    model went on under the new settings, and its report named the new ones."""
    first = tiny_run(
        tmp_path / "run", pretrain_checkpoint, max_steps=2, checkpoint_every=1, warmup_steps=3
    )
    torch.set_num_threads(1)
    pretrain(first, progress=False)
    saved = (tmp_path / "run" / "pretrain_config.json").read_bytes()
    # 3 warm-up steps of a 2-step run: the rate never reached lr, and the log says so
    assert (
        "warmup_steps 3 > the 2 steps of this run"
        in (tmp_path / "run" / "train_log.jsonl").read_text()
    )
    with pytest.raises(ValueError, match=r"holds another run \(seed 0, not 7\).*new --out"):
        pretrain(dataclasses.replace(first, seed=7), progress=False)
    assert (tmp_path / "run" / "pretrain_config.json").read_bytes() == saved
    # the same run, told to go further, resumes: max_steps is not what makes a run
    pretrain(dataclasses.replace(first, max_steps=3), progress=False)
    assert "resuming at step 2" in (tmp_path / "run" / "train_log.jsonl").read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_saves_the_step_reached_and_the_resumed_run_ends_the_same(
    pretrain_checkpoint, tmp_path, sig
):
    """SLURM pre-empts (and ends a job at its time limit) with SIGTERM to every process
    of the job, loader workers included, and a terminal's Ctrl-C sends SIGINT to its
    whole process group. The run used to die at once, losing every step since its
    last checkpoint (here all of them: checkpoint_every is past the run); now it stops
    at the step it reached, saves it, and says so."""
    whole = tiny_run(tmp_path / "whole", pretrain_checkpoint, workers=1, checkpoint_every=100)
    cut = dataclasses.replace(whole, out=str(tmp_path / "cut"))
    log = tmp_path / "cut" / "train_log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, *cli_args(cut)],
        cwd=REPO,
        env=child_env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a SLURM job step's
    )
    try:
        deadline = time.monotonic() + 240
        while not (log.exists() and '"step": 4,' in log.read_text()):
            assert proc.poll() is None, "the run ended before it could be signalled"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, sig)  # the rank and its loader worker
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command again to resume" in err
    saved = (tmp_path / "cut" / "checkpoints" / "latest").read_text()
    assert "step-00000004" <= saved < "step-00000015"
    assert f"{sig.name}: stopped at step {int(saved[5:])} and saved {saved}" in log.read_text()
    assert not (tmp_path / "cut" / "final").exists()

    torch.set_num_threads(1)
    pretrain(cut, progress=False)
    assert f"resuming at step {int(saved[5:])}" in log.read_text()
    pretrain(whole, progress=False)
    wa, wb = _weights(tmp_path / "whole" / "final"), _weights(tmp_path / "cut" / "final")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize(
    ("more", "said"),
    [
        ({}, "pinned_ring: 6 batch slots"),
        # each rank packs its own half of the batch into rows sized for it
        ({"prompt_packing": 48}, "a batch of 4 ("),
    ],
)
def test_two_gloo_ranks_through_the_ring_match_one_process(
    pretrain_checkpoint, tmp_path, more, said
):
    """pinned_ring per rank (each its own slots, sized for its share of the batch), as
    the paper config runs it on a node of GPUs, with prompts padded or packed: the
    losses of one plain process with padded prompts."""
    one = tiny_run(tmp_path / "one", pretrain_checkpoint, max_steps=3, workers=1)
    torch.set_num_threads(1)
    pretrain(one, progress=False)
    two = dataclasses.replace(one, out=str(tmp_path / "two"), pinned_ring=True, **more)
    torchrun_two_ranks(two)
    notes = (tmp_path / "two" / "train_log.jsonl").read_text()
    assert "2 rank(s) on cpu" in notes and said in notes
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert list(a) == list(b) == [1, 2, 3]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), step
