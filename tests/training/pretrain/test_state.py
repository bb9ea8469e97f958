"""Checkpoints on disk: how many are kept, what `latest` may name, what a resume refuses."""

from __future__ import annotations

import dataclasses

import pytest
from transformers import ClapModel

from training.pretrain import state
from training.pretrain.loop import pretrain

from .conftest import tiny_run


def test_old_checkpoints_are_pruned_and_the_newest_loads(pretrain_checkpoint, tmp_path):
    cfg = tiny_run(tmp_path / "run", pretrain_checkpoint, epochs=2, keep_checkpoints=2)
    pretrain(cfg, progress=False)  # 10 steps, a checkpoint every 2
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000008", "step-00000010"]
    newest = state.latest(folder)
    assert newest == folder / "step-00000010"
    assert state.load_counters(newest)["global_step"] == 10
    assert ClapModel.from_pretrained(newest / "model") is not None

    # the same folder with another global batch: refused, not silently re-planned
    other = dataclasses.replace(cfg, batch_size=4)
    with pytest.raises(ValueError, match="trained with batch_size 8; resume with the same"):
        pretrain(other, progress=False)


def test_latest_naming_an_incomplete_checkpoint_is_refused(tmp_path):
    (tmp_path / "step-00000004" / "model").mkdir(parents=True)  # killed before its state
    (tmp_path / "latest").write_text("step-00000004")
    with pytest.raises(ValueError, match="names step-00000004, which is incomplete"):
        state.latest(tmp_path)
    assert state.latest(tmp_path / "nothing-yet") is None
