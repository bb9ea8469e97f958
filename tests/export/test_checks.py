"""Path arguments refused before any model loads, in one line naming the option."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from export.checks import check_audio_folder, check_checkpoint, check_student, run_folder_models


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def _one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(ValueError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_a_pretrain_run_folder_names_its_final_and_newest_step_checkpoint(tmp_path):
    run = tmp_path / "runs" / "demo"
    _model(run / "final")
    _model(run / "checkpoints" / "step-00000100" / "model")
    _model(run / "checkpoints" / "step-00000200" / "model")
    _model(run / "checkpoints" / "step-00000300" / "model")  # being written: not in latest
    (run / "checkpoints" / "latest").write_text("step-00000200\n")
    msg = _one_line_error(check_checkpoint, str(run))
    assert "is a training run folder, not a checkpoint" in msg
    assert f"--checkpoint {run / 'final'} or {run / 'checkpoints/step-00000200/model'}" in msg
    assert "step-00000100" not in msg and "step-00000300" not in msg


def test_a_step_folder_names_the_model_inside_it(tmp_path):
    """`--checkpoint RUN/checkpoints/step-N` said only "no config.json in it"."""
    step = tmp_path / "run" / "checkpoints" / "step-00000400"
    _model(step / "model")
    msg = _one_line_error(check_checkpoint, str(step))
    assert msg == (
        f"--checkpoint {step} is a training checkpoint's folder: give --checkpoint {step / 'model'}"
    )


def test_a_bundle_given_as_checkpoint_names_the_checkpoint_it_was_made_of(tmp_path):
    """`bundle --checkpoint BUNDLE` said only "no config.json in it"."""
    import json

    bundle = tmp_path / "bundles" / "eu"
    bundle.mkdir(parents=True)
    made_of = tmp_path / "runs" / "demo" / "checkpoint"
    manifest = {"producer": {"teacher_checkpoint": str(made_of)}}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    msg = _one_line_error(check_checkpoint, str(bundle))
    assert msg == (
        f"--checkpoint {bundle} is a model bundle, not a checkpoint: give the CLAP "
        f"checkpoint it was made of, --checkpoint {made_of}"
    )
    (bundle / "manifest.json").write_text("{")  # torn: said without the name
    assert _one_line_error(check_checkpoint, str(bundle)).endswith("checkpoint it was made of")


def test_a_train_run_folder_names_only_the_subfolder_that_exists(tmp_path):
    run = tmp_path / "run"
    _model(run / "checkpoint")
    (run / "train_summary.json").write_text("{}")
    msg = _one_line_error(check_checkpoint, str(run), option="--teacher")
    assert msg.startswith(f"--teacher {run} is a training run folder")
    assert msg.endswith(f"give --teacher {run / 'checkpoint'}") and "final" not in msg
    check_checkpoint(str(run / "checkpoint"), option="--teacher")  # the suggestion works


def test_a_run_folder_without_a_saved_model_says_so(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert run_folder_models(run) == []
    assert "no saved model yet" in _one_line_error(check_checkpoint, str(run))


def test_other_local_paths_are_refused_and_hub_ids_pass(tmp_path):
    (tmp_path / "empty").mkdir()
    assert run_folder_models(tmp_path / "empty") is None
    assert "no config.json" in _one_line_error(check_checkpoint, str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"")
    assert "a file" in _one_line_error(check_checkpoint, str(tmp_path / "weights.bin"))
    assert "no such folder" in _one_line_error(check_checkpoint, str(tmp_path / "nope"))
    check_checkpoint("laion/clap-htsat-unfused")  # only loading can judge a hub id


def test_audio_folders_are_checked_for_recordings_in_them_or_their_sub_folders(tmp_path):
    opt = "--parity-audio"
    assert _one_line_error(check_audio_folder, str(tmp_path / "nope"), opt).startswith(
        f"{opt} {tmp_path / 'nope'}: no such folder"
    )
    (tmp_path / "a.wav").write_bytes(b"")
    assert "a file" in _one_line_error(check_audio_folder, str(tmp_path / "a.wav"), opt)
    nested = tmp_path / "nested"
    (nested / "sub" / ".Trash-1000").mkdir(parents=True)
    sf.write(nested / "sub" / ".Trash-1000" / "x.wav", np.zeros(4800, np.float32), 48_000)
    msg = _one_line_error(check_audio_folder, str(nested), opt)
    assert (
        "no recordings" in msg
        and "in it or its 1 sub-folder(s) (1 hidden, which are not read" in msg
    )
    sf.write(nested / "sub" / "x.wav", np.zeros(4800, np.float32), 48_000)
    sf.write(nested / "y.flac", np.zeros(4800, np.float32), 48_000)
    assert check_audio_folder(str(nested), opt) == 2


def test_a_student_folder_needs_both_files(tmp_path):
    assert "no such folder" in _one_line_error(check_student, str(tmp_path / "s"))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "student.json").write_text("{}")
    assert "no student.pt" in _one_line_error(check_student, str(tmp_path / "s"))
