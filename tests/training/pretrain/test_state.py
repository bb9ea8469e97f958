"""Checkpoints on disk: how many are kept, what `latest` may name, what a resume refuses."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
from transformers import ClapModel

from training.model import load_clap
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


def test_with_no_whole_checkpoint_left_the_resume_is_refused(tmp_path):
    (tmp_path / "step-00000004" / "model").mkdir(parents=True)  # killed before its state
    (tmp_path / "latest").write_text("step-00000004")
    with pytest.raises(ValueError, match=r"names step-00000004, which is incomplete .* no whole"):
        state.latest(tmp_path)
    (tmp_path / "latest").write_text("")
    with pytest.raises(ValueError, match="latest is empty, and no whole checkpoint is left"):
        state.latest(tmp_path)
    assert state.latest(tmp_path / "nothing-yet") is None


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_a_torn_checkpoint_resumes_from_the_one_before_and_ends_the_same(
    pretrain_checkpoint, tmp_path
):
    """A file torn after its checkpoint was written (a node losing power, a copy cut
    short) no longer matches sizes.json: the resume takes the newest whole checkpoint,
    says so, and trains on to the weights an unbroken run ends with."""
    cfg = tiny_run(tmp_path / "whole", pretrain_checkpoint, epochs=2, keep_checkpoints=3)
    pretrain(cfg, progress=False)  # 10 steps, a checkpoint every 2
    torn = tmp_path / "torn"
    shutil.copytree(tmp_path / "whole", torn)
    weights = torn / "checkpoints" / "step-00000010" / "model" / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    path, note = state.resume_from(torn / "checkpoints")
    assert path.name == "step-00000008"
    assert (
        f"names step-00000010, which is damaged (model/model.safetensors is {size // 2} "
        f"bytes of {size}); resuming from step-00000008" in note
    )
    pretrain(dataclasses.replace(cfg, out=str(torn)), progress=False)
    log = (torn / "train_log.jsonl").read_text()
    assert "resuming from step-00000008, the newest whole checkpoint before it" in log
    got, want = _weights(torn / "final"), _weights(tmp_path / "whole" / "final")
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)


def test_a_missing_latest_resumes_from_the_newest_whole_checkpoint(pretrain_checkpoint, tmp_path):
    """Deleting `latest` (the advice before 2026-11-27) trained again from step 0 beside
    the whole checkpoints; and pruning by name then deleted each new checkpoint."""
    cfg = tiny_run(tmp_path / "run", pretrain_checkpoint, epochs=2, max_steps=6)
    pretrain(cfg, progress=False)
    folder = tmp_path / "run" / "checkpoints"
    (folder / "latest").unlink()
    path, note = state.resume_from(folder)
    assert path.name == "step-00000006" and "latest is missing; resuming from step-00000006" in note
    # a stale later step (a run resumed from before it) outlives no new checkpoint
    shutil.copytree(folder / "step-00000006", folder / "step-00000052")
    loaded = load_clap(str(folder / "step-00000006" / "model"))
    opt = torch.optim.AdamW(loaded.model.parameters())
    args = (loaded.model, loaded.tokenizer, loaded.frontend, opt, {"global_step": 8})
    state.save(folder, 8, *args, keep=2)
    assert sorted(p.name for p in folder.glob("step-*")) == ["step-00000008", "step-00000052"]
    state.save(folder, 10, *args, keep=2)
    assert sorted(p.name for p in folder.glob("step-*")) == ["step-00000010", "step-00000052"]


def test_an_unreadable_training_state_is_one_line(tmp_path):
    ckpt = tmp_path / "step-00000002"
    ckpt.mkdir()
    (ckpt / "training_state.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ValueError, match=r"cannot read .*training_state.pt \(.*\): move "):
        state.load_counters(ckpt)


def test_a_resume_on_changed_recordings_is_refused_and_out_may_not_be_the_data(
    pretrain_checkpoint, real_folder, tmp_path
):
    """A folder's recordings edited between runs: the same command met a finished run,
    trained nothing, and rewrote split.json and its reports for recordings the model
    never saw (found in a walkthrough)."""
    data = tmp_path / "region"
    shutil.copytree(real_folder, data)
    run = tmp_path / "run"
    cfg = dataclasses.replace(
        tiny_run(run, pretrain_checkpoint, data=str(data), max_steps=2), split="seen"
    )
    pretrain(cfg, progress=False)
    split_before = (run / "split.json").read_bytes()
    rows = (data / "recordings.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "recordings.csv").write_text("".join(rows[:-1]), encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"has changed since the run in .* began \(\d+ recordings then, \d+ now\)"
    ):
        pretrain(dataclasses.replace(cfg, max_steps=3), progress=False)
    assert (run / "split.json").read_bytes() == split_before
    with pytest.raises(ValueError, match="is the --data folder: give the run a folder of its own"):
        pretrain(dataclasses.replace(cfg, out=str(data)), progress=False)


def test_a_checkpoint_save_on_a_full_disk_is_said_as_such(
    pretrain_checkpoint, small_card, fill_card
):
    """torch.save reports a full disk as RuntimeError("... unexpected pos ..."): said as
    the OS says it (ENOSPC), so the command line names the remedy, and nothing half
    written is left. A real 3 MB file system."""
    import errno
    import os

    loaded = load_clap(str(pretrain_checkpoint))
    opt = torch.optim.AdamW(loaded.model.parameters())
    folder = small_card / "checkpoints"
    fill_card(small_card)
    os.truncate(small_card / "recorder-os-files", 512 * 1024)  # room for a little
    with pytest.raises(OSError) as e:
        state.save(folder, 2, loaded.model, loaded.tokenizer, loaded.frontend, opt, {}, keep=2)
    assert e.value.errno == errno.ENOSPC
    assert not list(folder.glob(".step-*")) and not list(folder.glob("step-*"))


def test_a_run_killed_writing_final_leaves_none_and_a_rerun_writes_it_whole(
    pretrain_checkpoint, tmp_path, monkeypatch
):
    """final/ was written in place: a run killed mid-write left a final/ with weights
    and config, a finished model to anything that looks (and a rerun wrote over it,
    keeping whatever the new save did not replace)."""
    from pathlib import Path

    from transformers import ClapProcessor

    real = ClapProcessor.save_pretrained

    def killed(self, save_directory, *args, **kwargs):
        if Path(save_directory).name != "model":  # final/'s save, not a checkpoint's
            raise RuntimeError("killed while writing final/")
        return real(self, save_directory, *args, **kwargs)

    run = tmp_path / "run"
    cfg = tiny_run(run, pretrain_checkpoint, max_steps=2)
    monkeypatch.setattr(ClapProcessor, "save_pretrained", killed)
    with pytest.raises(RuntimeError, match="killed while writing final/"):
        pretrain(cfg, progress=False)
    monkeypatch.undo()
    assert not (run / "final").exists()
    assert not list(run.glob(".final*"))
    # what a hard kill leaves (no except clause ran), and a final/ with a file too many
    for left in (".final.deadhost-1.tmp", ".final.deadhost-1.old.tmp"):
        (run / left).mkdir()
        (run / left / "config.json").write_text("{}")
    assert pretrain(cfg, progress=False) == run / "final"  # resumes at step 2, trains none
    assert not list(run.glob(".final*"))
    (run / "final" / "stray.bin").write_bytes(b"from an older save")
    pretrain(cfg, progress=False)
    assert not (run / "final" / "stray.bin").exists()
    assert ClapModel.from_pretrained(run / "final") is not None
    assert ClapProcessor.from_pretrained(run / "final") is not None
    want = _weights(run / "checkpoints" / "step-00000002" / "model")
    got = _weights(run / "final")
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)


def test_a_dead_saves_step_temporary_is_cleared_when_the_run_starts_and_only_if_locked(
    pretrain_checkpoint, tmp_path, monkeypatch
):
    """A .step-N.tmp left by a killed save went only when step N was saved again: a
    run resumed elsewhere in its schedule kept it for good. It is cleared at start
    while the run holds the folder's lock; unlocked, another run may be writing it."""
    import errno
    import fcntl

    run = tmp_path / "run"
    cfg = tiny_run(run, pretrain_checkpoint, max_steps=2)
    pretrain(cfg, progress=False)
    dead = run / "checkpoints" / ".step-00000001.tmp"

    def plant():
        (dead / "model").mkdir(parents=True)
        (dead / "model" / "config.json").write_text("{}")

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    plant()
    with monkeypatch.context() as m:
        m.setattr(fcntl, "flock", refuse)
        pretrain(cfg, progress=False)
    assert dead.is_dir()  # unlocked: not this run's to remove
    pretrain(cfg, progress=False)  # resumes at step 2; step 1 is never saved again
    assert not dead.exists()


def test_save_final_clears_what_killed_writers_on_this_host_left(pretrain_checkpoint, tmp_path):
    """The small trainer's checkpoint/ has no lock: a run killed mid-save left a
    model-sized .checkpoint.<host-pid>.tmp that every later save kept. A save now
    clears those whose writer was on this host and has ended, and no other."""
    import socket
    import subprocess
    import sys

    from training.model import load_clap
    from training.pretrain.state import save_final

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    host = socket.gethostname()
    dead = [f".checkpoint.{host}-{ended.stdout.strip()}.tmp",
            f".checkpoint.{host}-{ended.stdout.strip()}.old.tmp"]  # fmt: skip
    # pid 1 runs; another host's writer cannot be asked; another folder's is not ours
    kept = [f".checkpoint.{host}-1.tmp", ".checkpoint.otherhost-2.tmp", f".final.{host}-3.tmp"]
    for name in dead + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"half")
    loaded = load_clap(str(pretrain_checkpoint))
    save_final(tmp_path / "checkpoint", loaded.model, loaded.tokenizer, loaded.frontend)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["checkpoint", *kept])
