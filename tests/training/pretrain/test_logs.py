"""The run's logs after a resume: every step once, in TensorBoard and in the JSONL."""

import dataclasses
import json

import pytest

from training.pretrain.loop import pretrain

from .conftest import tiny_run


def _tb_steps(out) -> list[int]:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    acc = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    return [e.step for e in acc.Scalars("train/loss")]


def test_a_resumed_run_keeps_the_checkpoint_step_in_tensorboard(pretrain_checkpoint, tmp_path):
    """A run stopped at its checkpoint of step 6 and resumed: TensorBoard's purge of
    the interrupted run's later events used to take step 6 itself (purge_step was the
    checkpoint's step, and events at or after it are dropped), so the resumed run's
    curve had a hole at every resume."""
    pytest.importorskip("torch.utils.tensorboard")
    cfg = tiny_run(tmp_path / "run", pretrain_checkpoint, tensorboard=True, checkpoint_every=3)
    pretrain(dataclasses.replace(cfg, max_steps=6), progress=False)
    assert _tb_steps(tmp_path / "run") == list(range(1, 7))
    pretrain(cfg, progress=False)  # resumes at step 6
    assert _tb_steps(tmp_path / "run") == list(range(1, 16))


class _Interrupted(Exception):
    pass


def _stop_at(stop: int):
    """An on_step that interrupts the run at step `stop`, as a kill would."""

    def on_step(step: int) -> None:
        if step == stop:
            raise _Interrupted

    return on_step


def test_steps_logged_after_the_last_checkpoint_appear_once_after_a_resume(
    pretrain_checkpoint, tmp_path
):
    """A run interrupted at step 8, after its checkpoint of step 6, had logged steps 7
    and 8; the resumed run trains and logs them again. They used to appear twice in
    train_log.jsonl (TensorBoard purged its copy), so a reader of the JSONL counted
    them twice; now the log holds each step once, as TensorBoard does."""
    pytest.importorskip("torch.utils.tensorboard")
    cfg = tiny_run(tmp_path / "run", pretrain_checkpoint, tensorboard=True, checkpoint_every=3)

    with pytest.raises(_Interrupted):
        pretrain(cfg, on_step=_stop_at(8), progress=False)
    log = tmp_path / "run" / "train_log.jsonl"
    with log.open("a") as f:
        f.write('{"step": 9, "epo')  # a record torn by the kill
    pretrain(cfg, progress=False)  # resumes at step 6
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows if "step" in r] == list(range(1, 16))
    assert any("dropped 3 logged step(s) after step 6" in r.get("note", "") for r in rows)
    assert _tb_steps(tmp_path / "run") == list(range(1, 16))


def test_a_run_stopped_before_its_first_checkpoint_leaves_no_steps_in_the_rerun(
    pretrain_checkpoint, tmp_path
):
    """Stopped at step 2 before any checkpoint, the run starts again from step 0: its
    steps 1 and 2 stayed in train_log.jsonl, before the new run's own (each twice in
    the curves drawn from it), and in TensorBoard."""
    pytest.importorskip("torch.utils.tensorboard")
    cfg = tiny_run(tmp_path / "run", pretrain_checkpoint, tensorboard=True, checkpoint_every=50)

    with pytest.raises(_Interrupted):
        pretrain(cfg, on_step=_stop_at(2), progress=False)
    pretrain(cfg, progress=False)  # no checkpoint: from step 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    assert [r["step"] for r in rows if "step" in r] == list(range(1, 16))
    assert any("this run starts again from step 0" in r.get("note", "") for r in rows)
    assert _tb_steps(tmp_path / "run") == list(range(1, 16))


def test_a_resume_on_another_number_of_ranks_is_said(pretrain_checkpoint, tmp_path):
    """The global batch, not the rank count, makes the plan: a run resumed on other
    ranks goes on unchanged, and now its log says it was resumed on them."""
    import torch

    cfg = tiny_run(tmp_path / "run", pretrain_checkpoint, checkpoint_every=3)
    pretrain(dataclasses.replace(cfg, max_steps=3), progress=False)
    state = tmp_path / "run" / "checkpoints" / "step-00000003" / "training_state.pt"
    saved = torch.load(state, weights_only=False)
    torch.save({**saved, "world": 2}, state)  # as two ranks would have saved it
    (tmp_path / "run" / "checkpoints" / "step-00000003" / "sizes.json").unlink()
    pretrain(dataclasses.replace(cfg, max_steps=4), progress=False)
    log = (tmp_path / "run" / "train_log.jsonl").read_text()
    assert "resumed on 1 rank(s) from a checkpoint saved on 2: the global batch 8" in log
