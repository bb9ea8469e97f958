"""`animalclap-export` itself: help that shows defaults, one-line errors that name
the option, and nothing loaded before the arguments are checked."""

import argparse

import pytest

import export.pipeline as P
from export.cli import build_parser, main
from export.pipeline import audio_needed


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())  # as one line, whatever the terminal width


def test_the_training_commands_names_are_accepted_too():
    """distill takes the names evaluate and bundle use (--checkpoint, --data) for the
    same things, so a command copied across works. The window keeps one name per
    command: with two, an abbreviation like --win became ambiguous (found in review)."""
    p = build_parser()
    ours = p.parse_args(["distill", "--teacher", "ck", "--audio", "a", "--out", "o"])
    theirs = p.parse_args(["distill", "--checkpoint", "ck", "--data", "a", "--out", "o"])
    assert vars(ours) == vars(theirs)
    assert ours.teacher == "ck" and ours.audio == "a"
    assert p.parse_args(["bundle", "--checkpoint", "ck", "--out", "o", "--win", "5"]).window == 5.0


def test_every_option_has_help_and_help_shows_the_defaults():
    subs = _subcommands()
    assert set(subs) == {"bundle", "distill", "embed"}
    for name, parser in subs.items():
        for action in parser._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings}: no help"
        text = _help(parser)
        assert "(default: None)" not in text and "(default: False)" not in text, name
    bundle = _help(subs["bundle"])
    assert "takes (default: 3.0)" in bundle and "(default: fp32)" in bundle
    assert "(default: 0.002)" in _help(subs["distill"])


def test_the_calibration_help_gives_the_audio_each_precision_needs():
    text = _help(_subcommands()["bundle"])
    n_calib, n_check = audio_needed("int8")
    assert f"int8 needs >= {n_calib + n_check} ({n_calib} calibrate + {n_check} check)" in text
    assert f"fp16 >= {sum(audio_needed('fp16'))}" in text


@pytest.fixture()
def fake_checkpoint(tmp_path, monkeypatch):
    def fail(*a, **kw):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(P, "load_clap", fail)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    return ckpt


def _err(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err.removeprefix("animalclap-export: error: ")


def test_bundle_names_a_bad_parity_audio_as_such(fake_checkpoint, tiny_catalogue, tmp_path, capsys):
    tiny_catalogue.to_csv(tmp_path / "species.csv")
    bad = tmp_path / "no-audio-here"
    err = _err(
        [
            "bundle",
            "--checkpoint",
            str(fake_checkpoint),
            "--catalogue",
            str(tmp_path / "species.csv"),
            "--parity-audio",
            str(bad),
            "--out",
            str(tmp_path / "b"),
        ],
        capsys,
    )
    assert err == f"--parity-audio {bad}: no such folder"


def test_every_command_points_from_a_run_folder_to_its_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "config.json").write_text("{}")
    (run / "train_summary.json").write_text("{}")
    (tmp_path / "audio").mkdir()
    out = ["--out", str(tmp_path / "o")]
    for argv, option in [
        (["bundle", "--checkpoint", str(run), "--data", "tiny", *out], "--checkpoint"),
        (["embed", "--checkpoint", str(run), "--catalogue", "x.csv", *out], "--checkpoint"),
        (["distill", "--teacher", str(run), "--audio", str(tmp_path / "audio"), *out], "--teacher"),
    ]:
        assert _err(argv, capsys) == (
            f"{option} {run} is a training run folder, not a checkpoint: "
            f"give {option} {run / 'checkpoint'}"
        ), argv[0]
    assert not (tmp_path / "o").exists()
