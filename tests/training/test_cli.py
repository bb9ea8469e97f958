"""`animalclap-train` itself: --help, and errors in one line."""

import argparse
import json

import pytest

from training.cli import build_parser, main


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_has_help_and_help_shows_its_default():
    commands = _commands()
    assert {"train", "experiments", "pretrain", "finetune", "evaluate", "bench"} <= set(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = action.option_strings[0]
            assert action.help, f"{name} {flag} has no help"
            default = action.default
            if default in (None, [], argparse.SUPPRESS) or default is False or action.required:
                continue
            shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
            # the text wraps, so compare with whitespace collapsed
            flat = " ".join(text.split())
            assert f"(default: {shown})" in flat or "default" in action.help, (name, flag)
    flat = " ".join(commands["train"].format_help().split())
    assert "--seed SEED seed of the split, init and batches (default: 0)" in flat
    assert "(default: None)" not in flat and "(default: False)" not in flat
    assert "--templates TEMPLATES [TEMPLATES ...]" in flat and "(default: com sci tax" in flat


def test_a_run_folder_as_checkpoint_is_named_in_one_line(tmp_path, tiny_checkpoint, capsys):
    import shutil

    run = tmp_path / "demo"
    shutil.copytree(tiny_checkpoint, run / "checkpoint")
    assert main(["evaluate", "--checkpoint", str(run), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"animalclap-train: error: '{run}' is a run folder, not a checkpoint: give "
        f"{run}/checkpoint\n"
    )
    assert not (tmp_path / "ev").exists()


def test_an_empty_data_option_is_an_error_not_the_default_data(tmp_path, capsys):
    """`pretrain --data ''` trained on the default benchmark (the empty value was
    dropped before it reached the settings)."""
    out = tmp_path / "run"
    assert main(["pretrain", "--data", "", "--out", str(out), "--set", "init=scratch:fast"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("animalclap-train: error: data: empty; give a folder written by")
    assert not out.exists()


def test_a_shortcut_and_a_set_of_the_same_key_that_disagree_are_refused(tmp_path, capsys):
    """`--out a --set out=b` wrote to a: the shortcut went after every --set and won,
    where the help says a later value wins."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["pretrain", "--out", str(a), "--set", f"out={b}", "init=scratch:fast"]) == 2
    err = capsys.readouterr().err
    assert f"--out {a} and --set out={b} disagree: give the out once" in err
    assert not a.exists() and not b.exists()


def test_every_set_counts_and_a_later_value_wins():
    p = build_parser()
    for cmd in ("pretrain", "bench", "finetune"):
        extra = ["--checkpoint", "ck", "--data", "d", "--out", "o"] if cmd == "finetune" else []
        args = p.parse_args(
            [cmd, *extra, "--set", "batch_size=8", "lr=1", "--set", "workers=0", "lr=2"]
        )
        assert args.set == ["batch_size=8", "lr=1", "workers=0", "lr=2"], cmd


def test_a_finished_pretrain_says_where_its_model_and_curves_are_and_what_comes_next(
    pretrain_checkpoint, tmp_path, capsys
):
    out = tmp_path / "run"
    sets = "max_steps=1 batch_size=8 crop_seconds=1 workers=0 precision=fp32 tensorboard=false"
    argv = ["pretrain", "--data", "tiny", "--out", str(out), "--init", str(pretrain_checkpoint)]
    assert main([*argv, "--set", *sets.split(), "clips_per_species=2"]) == 0
    said = capsys.readouterr().out.splitlines()[-3:]
    assert said == [
        f"-> {out / 'final'} (ClapModel.from_pretrained loads it); curves: "
        f"{out / 'train_curves.png'}",
        f"next: animalclap-train evaluate --run {out}   (zero-shot, its unseen species)",
        f"      animalclap-export bundle --checkpoint {out / 'final'} --data tiny --out BUNDLE",
    ]
    assert (out / "train_curves.png").is_file()


def test_a_gpu_that_is_not_there_is_said_before_any_model_loads(
    tmp_path, tiny_checkpoint, capsys, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cmd in ("evaluate", "probe"):
        out = tmp_path / cmd
        argv = [cmd, "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--device", "cuda"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("animalclap-train: error: device 'cuda': torch sees no CUDA GPU")
        assert err.count("\n") == 1 and "--device cpu or auto" in err
        assert not out.exists()


def test_a_single_process_command_under_torchrun_is_refused(monkeypatch, capsys):
    """curves (or bench, prepare...) under torchrun: every rank did the whole job and
    wrote the same files."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["curves", "--run", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert "curves runs in one process, not under torchrun" in err and "\n" not in err.strip()


def test_evaluate_and_probe_on_two_ranks_share_the_recordings_and_write_once(
    tiny_checkpoint, tmp_path
):
    """evaluate under torchrun was refused: one GPU embedded the whole test split while
    the others waited. Each rank now embeds its share; rank 0 writes and prints what
    one process does."""
    from .pretrain.conftest import run_two_ranks

    args = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", "tiny"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    done = run_two_ranks(["-m", "training.cli", *args, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"unseen"') == 1 and done.stderr.count("a fresh zero-shot") == 1
    assert "test audio (rank 0's " in done.stderr and "rank 1's" not in done.stderr
    one, two = (json.loads((tmp_path / r / "eval.json").read_text()) for r in ("one", "two"))
    for pool in ("unseen", "all"):
        for query, figures in one[pool].items():
            assert two[pool][query]["n"] == figures["n"]
            assert two[pool][query]["top1"] == pytest.approx(figures["top1"]), (pool, query)
            assert two[pool][query]["top5"] == pytest.approx(figures["top5"]), (pool, query)
    # probe the same way: the trait heads' figures of one process, written once
    probe = ["probe", "--checkpoint", str(tiny_checkpoint), "--data", "tiny"]
    assert main([*probe, "--out", str(tmp_path / "p1")]) == 0
    done = run_two_ranks(["-m", "training.cli", *probe, "--out", str(tmp_path / "p2")])
    assert done.returncode == 0, done.stderr[-2000:]
    p1, p2 = (json.loads((tmp_path / r / "probe.json").read_text()) for r in ("p1", "p2"))
    said = sum(side in p1 for side in ("unseen", "seen"))  # one line each, printed once
    assert done.stdout.count("traits beat the baseline") == said and "rank 1's" not in done.stderr
    for side in ("unseen", "seen"):
        assert p2[side]["recordings"] == p1[side]["recordings"]
        assert p2[side]["beats_baseline"] == p1[side]["beats_baseline"]


def test_finetune_takes_the_thread_count_that_repeats_a_cpu_run(monkeypatch, tmp_path, capsys):
    """train had --threads, finetune had none: a region's CPU run could not be repeated
    number for number (floats summed in another order on another thread count)."""
    import torch

    import training.finetune as F
    from training.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake(cfg, progress=True):  # the threads torch runs with when the run begins
        seen["threads"] = torch.get_num_threads()
        raise Stop

    before = torch.get_num_threads()
    monkeypatch.setattr(F, "finetune", fake)
    args = ["finetune", "--checkpoint", "c", "--data", "d", "--out", str(tmp_path / "o")]
    try:
        with pytest.raises(Stop):
            main([*args, "--threads", "1"])
        assert seen["threads"] == 1
        assert main([*args, "--threads", "0"]) == 2
        assert "--threads 0: give 1 or more" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
