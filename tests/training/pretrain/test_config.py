"""Pretraining settings: YAML, packaged names, typed overrides, one-line errors."""

import pytest

from training.pretrain.config import load_config


def test_packaged_configs_load():
    paper = load_config("paper")
    assert paper.init == "laion/clap-htsat-unfused" and paper.epochs == 20
    assert paper.clips_per_species == 30 and len(paper.templates) == 5
    assert load_config("cpu_smoke").init == "scratch:fast"


def test_overrides_take_the_field_type(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 1e-4\nbatch_size: 64\n")  # YAML 1.1 reads 1e-4 as a string
    cfg = load_config(
        str(f), ["batch_size=32", "grad-checkpointing=true", "max_steps=5", "templates=com,tax"]
    )
    assert cfg.lr == 1e-4 and cfg.batch_size == 32 and cfg.grad_checkpointing is True
    assert cfg.max_steps == 5 and cfg.templates == ["com", "tax"]
    assert load_config(None, ["max_steps=null"]).max_steps is None
    # int | str: a number stays a number, a word stays a word
    assert load_config(None, ["prompt_length=32"]).prompt_length == 32
    assert load_config(None, ["epochs=3.0"]).epochs == 3  # a whole number written as 3.0
    auto = load_config(None, ["compile_mode=reduce-overhead", "prompt_length=auto"])
    assert auto.prompt_length == "auto"
    packed = load_config(None, ["compile_mode=reduce-overhead", "prompt_packing=64"])
    assert packed.prompt_packing == 64 and packed.prompt_length == 0
    assert load_config(None, ["prompt_packing=auto"]).prompt_packing == "auto"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["lr"], "write it as key=value"),
        (["learning_rate=1"], r"unknown setting\(s\) \['learning_rate'\]"),
        (["batch_size=big"], "batch_size: 'big' is not a whole number"),
        # these were taken quietly: epochs 2, batch_size 1 (loss 0.000)
        (["epochs=2.5"], "epochs: 2.5 is not a whole number"),
        (["batch_size=true"], "batch_size: True is not a whole number"),
        (["lr=true"], "lr: True is not a number"),
        (["max_steps=1.5"], "max_steps: 1.5 is not a whole number"),
        # accepted, then: no checkpoint kept (no resume), torch's line about num_workers
        (["keep_checkpoints=0"], "keep_checkpoints must be at least 1"),
        (["workers=-1"], "workers must be 0 or more, got -1"),
        (["warmup_steps=-5"], "warmup_steps must be 0 or more"),
        (["precision=fp16"], "precision: 'fp16' is not one of"),
        (["epochs=0"], "epochs must be at least 1"),
        (["compile_mode=fast"], "compile_mode: 'fast' is not one of"),
        (["compile_mode=reduce-overhead"], "need fixed shapes: set prompt_packing=auto or"),
        (
            ["prompt_packing=-8"],
            r"prompt_packing must be 0 \(off\), tokens per row or auto, got -8",
        ),
        (["prompt_packing=long"], r"prompt_packing must be 0 \(off\), .* got 'long'"),
        (["prompt_packing=64", "prompt_length=auto"], "set one of them, and the other to 0"),
        (["prompt_length=-1"], "prompt_length must be 0"),
        (["prompt_length=long"], r"prompt_length must be 0 .* got 'long'"),
        (["max_steps=0"], r"max_steps must be at least 1 \(or null"),  # ran everything before
        # these loaded the data and the model first (a hub id: half a minute offline),
        # and an empty list ended in an IndexError traceback from the tokenizer
        (["templates=[]"], "templates: give at least one of com, sci, tax"),
        (["templates=com,bogus"], "templates: unknown prompt template 'bogus'; choose from"),
        (["templates="], "templates: unknown prompt template ''"),
        # both were named whichever was wrong
        (["crop_seconds=-1"], r"^crop_seconds must be positive, got -1.0$"),
        (["lr=0"], r"^lr must be positive, got 0.0$"),
    ],
)
def test_bad_settings_say_what_is_wrong(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_an_unknown_config_name_lists_the_packaged_ones():
    with pytest.raises(ValueError, match=r"not one of \['cpu_smoke', 'paper'\]"):
        load_config("nope")


def test_a_broken_or_wrong_config_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1e-4\nbatch_size: [64\n")
    with pytest.raises(ValueError, match=rf"config {bad} line 3, column 1: not valid YAML") as e:
        load_config(str(bad))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=rf"config {tmp_path}: is a folder; give a YAML file"):
        load_config(str(tmp_path))


def test_warm_up_auto_is_a_tenth_of_the_schedule_and_a_warning_only_when_lr_is_never_reached():
    from training.pretrain.config import warmup_steps
    from training.train import cosine_lr

    cfg = load_config(None, ["warmup_steps=2", "lr=1e-3"])
    warmup, notes = warmup_steps(cfg, total=2, stop_at=2)
    assert warmup == 2 and not notes  # the 2nd step runs at lr: no "stays below"
    assert cosine_lr(1, 2, 1e-3, warmup) == 1e-3
    warmup, notes = warmup_steps(load_config(None, ["warmup_steps=3"]), total=2, stop_at=2)
    assert warmup == 3 and "warmup_steps 3 > the 2 steps of this run" in notes[0]
    auto = load_config(None, ["warmup_steps=auto"])
    assert warmup_steps(auto, total=50, stop_at=50) == (
        5,
        ["warm-up: 5 steps (auto: a tenth of the 50-step schedule)"],
    )
    assert warmup_steps(auto, total=5, stop_at=5)[0] == 1
    with pytest.raises(ValueError, match="warmup_steps must be 0 or more steps, or auto"):
        load_config(None, ["warmup_steps=soon"])


def test_local_paths_are_made_absolute_so_one_folder_named_two_ways_is_one_run(
    tmp_path, monkeypatch
):
    """A run started with data=prep (relative) and resumed with the absolute path was
    refused as "another run"; one started from another directory did not find it."""
    import dataclasses

    from training.identity import with_absolute_paths

    (tmp_path / "prep").mkdir()
    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data=prep", "init=ckpt", "replay=tiny"])
    done = with_absolute_paths(cfg)
    assert done.data == str(tmp_path / "prep") and done.init == str(tmp_path / "ckpt")
    assert done.replay == "tiny"  # a benchmark size, not a path here: as given
    hub = dataclasses.replace(cfg, init="laion/clap-htsat-unfused")
    assert with_absolute_paths(hub).init == "laion/clap-htsat-unfused"
    assert with_absolute_paths(done) == done


def test_a_run_saved_with_relative_paths_resumes_under_the_same_command(tmp_path, monkeypatch):
    """Runs begun before paths were recorded absolute saved data as typed: the same
    command, rerun from the same directory, was refused as another run."""
    import dataclasses
    import json

    from training.identity import with_absolute_paths
    from training.pretrain.loop import _refuse_another_run, resume_notes

    (tmp_path / "prep").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data=prep", "out=run"])
    (tmp_path / "run").mkdir()
    saved = tmp_path / "run" / "pretrain_config.json"
    saved.write_text(json.dumps(dataclasses.asdict(cfg)))  # as typed: "prep"
    now = with_absolute_paths(cfg)
    _refuse_another_run(tmp_path / "run", now)  # the same run: no error
    assert resume_notes(saved, now, step=1, stop_at=5) == []
    with pytest.raises(ValueError, match="holds another run"):
        _refuse_another_run(tmp_path / "run", dataclasses.replace(now, data="tiny"))
