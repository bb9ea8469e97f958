"""The training loop on the tiny benchmark: a few steps, end to end."""

import json

import pytest

from training.labelled_audio import open_labelled
from training.model import load_clap
from training.splits import ZeroShotSplit
from training.train import TrainConfig, train


def _tiny(tmp_path, name, **kw):
    # 20 seen species x 1 clip / batch 16 = 1 step per epoch
    cfg = TrainConfig(
        out=str(tmp_path / name),
        data="tiny",
        clips_per_species=1,
        epochs=2,
        audio_config="fast",
        threads=1,
        **kw,
    )
    train(cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / name / "train_log.jsonl").open()]
    return log, json.loads((tmp_path / name / "train_summary.json").read_text())


def test_training_is_repeatable_from_its_seed(tmp_path, capsys):
    a, summary = _tiny(tmp_path, "a")
    b, _ = _tiny(tmp_path, "b")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert summary["steps"] == 2 and summary["test_species"] > 0
    assert (tmp_path / "a" / "train_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["machine"]["cpu"] and summary["machine"]["torch"]  # figures repeat on it
    # the curve's ends, from the logged losses (2 steps: both ends are both steps)
    both = sum(r["loss"] for r in a) / 2
    assert summary["loss"]["first"] == pytest.approx(both) == summary["loss"]["last"]
    # the recordings left out for an unseen species calling behind them: said and counted
    left_out = len(ZeroShotSplit.from_json(tmp_path / "a" / "split.json").heard_unseen)
    assert summary["heard_unseen_left_out"] == left_out > 0
    assert f"zero-shot split: {left_out} recordings of seen species left out" in (
        capsys.readouterr().out
    )
    # a from-scratch run's tokenizer: fitted on its seen species' prompts alone
    from training.model import build_tokenizer
    from training.train import all_prompts

    seen = ZeroShotSplit.from_json(tmp_path / "a" / "split.json").seen_species
    catalogue = open_labelled("tiny").catalogue
    fitted = build_tokenizer(all_prompts(catalogue, seen)).get_vocab()
    assert load_clap(str(tmp_path / "a" / "checkpoint")).tokenizer.get_vocab() == fitted
    assert load_clap(str(tmp_path / "a" / "checkpoint")).model is not None


def test_bf16_autocast_trains_close_to_fp32(tmp_path):
    fp32, _ = _tiny(tmp_path, "fp32")
    bf16, summary = _tiny(tmp_path, "bf16", precision="bf16")
    assert summary["config"]["precision"] == "bf16"
    # same batches and init: the first loss differs only by bf16 rounding
    assert bf16[0]["loss"] == pytest.approx(fp32[0]["loss"], abs=0.05)
    assert bf16[0]["loss"] != fp32[0]["loss"]  # autocast did take effect


def test_a_run_killed_writing_its_checkpoint_leaves_none(tmp_path, monkeypatch):
    """checkpoint/ was written in place, and `experiments` skips training where one
    exists: a sweep killed mid-write evaluated a half-written model on its rerun."""
    from transformers import ClapProcessor

    def killed(self, *args, **kwargs):
        raise RuntimeError("killed while writing checkpoint/")

    monkeypatch.setattr(ClapProcessor, "save_pretrained", killed)
    with pytest.raises(RuntimeError, match="killed while writing"):
        _tiny(tmp_path, "a")
    assert not (tmp_path / "a" / "checkpoint").exists()
    assert not list((tmp_path / "a").glob(".checkpoint*"))


def test_unknown_precision_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="precision 'fp8'"):
        train(TrainConfig(out=str(tmp_path / "x"), precision="fp8"), progress=False)
    assert not (tmp_path / "x").exists()


def test_the_cli_does_not_train_over_a_finished_run_unless_told(tmp_path, capsys):
    from training.cli import main

    out = tmp_path / "run"
    argv = ["train", "--data", "tiny", "--out", str(out), "--clips-per-species", "1",
            "--epochs", "1", "--audio-config", "fast", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    first = (out / "checkpoint" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2  # it used to replace the checkpoint without a word
    assert "already holds a trained run (checkpoint/)" in capsys.readouterr().err
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == first
    assert main([*argv, "--overwrite"]) == 0


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"data": "no-such-data-folder/"}, ValueError),
        ({"templates": ["com", "bogus"]}, ValueError),
        ({"init": "./no-such-checkpoint"}, ValueError),  # CheckpointError
    ],
)
def test_a_run_that_cannot_start_leaves_no_out_folder(tmp_path, bad, error):
    """Bad data, a template typo or a missing init left an empty --out behind."""
    with pytest.raises(error):
        train(TrainConfig(out=str(tmp_path / "x"), threads=1, **bad), progress=False)
    assert not (tmp_path / "x").exists()


def test_the_cli_does_not_train_into_a_pretrain_or_finetune_run(tmp_path, capsys):
    """--overwrite replaces a `train` run; a pretrain run's final/ would have stayed
    beside the new checkpoint/ and split.json."""
    from training.cli import main

    out = tmp_path / "run"
    (out / "final").mkdir(parents=True)
    (out / "split.json").write_text("the pretrain run's split")
    for extra in ([], ["--overwrite"]):
        assert main(["train", "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert "holds a pretrain or finetune run (final): give another --out" in err
        assert err.count("\n") == 1
    assert (out / "split.json").read_text() == "the pretrain run's split"


def test_train_records_its_data_folder_absolute(tmp_path, monkeypatch):
    """evaluate/probe --run reopen a run's data from its saved settings: a relative
    path (as typed) failed from any other directory."""
    (tmp_path / "emptydata").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"data '{tmp_path / 'emptydata'}': a folder with no"):
        train(TrainConfig(out="x", data="emptydata"), progress=False)


def test_a_scratch_tokenizer_is_a_function_of_the_seen_species_prompts_alone():
    """Fitted on every species, the unseen ones' names got tokens no training prompt
    holds (tiny/small: 23 of 24 unseen species' Sci and Tax prompts had one)."""
    import dataclasses

    from animalclap_edge.contracts.catalogue import Catalogue
    from training.labelled_audio import open_labelled
    from training.model import build_tokenizer
    from training.train import all_prompts, make_split

    data = open_labelled("tiny")
    split = make_split(data, "zeroshot", 0, 0.1)
    unseen = set(split.test_species)

    def vocab(catalogue: Catalogue) -> dict[str, int]:
        return build_tokenizer(all_prompts(catalogue, split.seen_species)).get_vocab()

    def renamed(sid: str) -> Catalogue:
        return Catalogue(
            [
                dataclasses.replace(sp, scientific_name="Zyxqa wvutsr", common_name="Qoph Zayin")
                if sp.id == sid
                else sp
                for sp in data.catalogue
            ]
        )

    base = vocab(data.catalogue)
    assert vocab(renamed(split.test_species[0])) == base
    assert vocab(renamed(split.seen_species[0])) != base  # the seen names do shape it
    prompts = all_prompts(data.catalogue, split.seen_species)
    assert all_prompts(data.catalogue, split.seen_species[::-1]) == prompts  # order-free
    for sp in data.catalogue:
        if sp.id in unseen:
            assert sp.scientific_name not in prompts and sp.common_name not in prompts
    with pytest.raises(ValueError, match=r"^seen species not in the catalogue .*: nosuch$"):
        all_prompts(data.catalogue, ["nosuch"])


def test_training_on_from_a_run_on_the_same_data_keeps_its_split(tmp_path, capsys):
    """--init RUN/checkpoint on RUN's data with another seed drew a new split, which
    held out species the init had trained on and then scored them as unseen."""
    _tiny(tmp_path, "a", seed=0)
    capsys.readouterr()
    _tiny(tmp_path, "b", seed=3, init=str(tmp_path / "a" / "checkpoint"))
    out = capsys.readouterr().out
    a, b = (ZeroShotSplit.from_json(tmp_path / n / "split.json") for n in "ab")
    assert b.test_species == a.test_species and b.train == a.train
    from training.train import make_split

    drawn = make_split(open_labelled("tiny"), "zeroshot", 3, 0.1)
    assert drawn.test_species != a.test_species  # else the test proves nothing
    assert f"split: the zero-shot split {tmp_path / 'a' / 'checkpoint'} was trained with" in out
    assert "a new draw would have held out" in out
