"""Regional retraining: real regional recordings, replay of the tiny benchmark."""

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest
import torch

from training.finetune import finetune, finetune_config
from training.sampling import replay_epoch


def test_replay_takes_its_share_and_regional_species_stay_balanced():
    species = ["r1"] * 3 + ["r2"] * 40 + [f"g{i}" for i in range(50)]
    replay = [False] * 43 + [True] * 50
    plan = replay_epoch(species, replay, clips_per_species=10, replay_fraction=0.2, seed=1, epoch=0)
    counts = Counter(species[i] for i in plan)
    assert counts["r1"] == counts["r2"] == 10
    assert sum(replay[i] for i in plan) == 5  # 20 regional clips -> 5 replayed = 20%
    again = replay_epoch(species, replay, 10, 0.2, seed=1, epoch=0)
    np.testing.assert_array_equal(plan, again)
    other = replay_epoch(species, replay, 10, 0.2, seed=1, epoch=1)
    assert {species[i] for i in plan if replay[i]} != {species[i] for i in other if replay[i]}
    with pytest.raises(ValueError, match="replay_fraction"):
        replay_epoch(species, replay, 10, 1.0, seed=1, epoch=0)


def test_finetune_on_real_recordings_reports_before_and_after(
    pretrain_checkpoint, real_folder, tmp_path
):
    cfg = finetune_config(
        None,
        [
            f"init={pretrain_checkpoint}",
            f"data={real_folder}",
            "replay=tiny",
            f"out={tmp_path / 'ft'}",
            "clips_per_species=2",
            "batch_size=8",
            "max_steps=3",
            "crop_seconds=1",
            "workers=0",
            "precision=fp32",
            "lr=1e-3",
            "tensorboard=false",
        ],
    )
    assert cfg.split == "seen" and cfg.batchnorm == "frozen"  # fine-tuning defaults
    report = finetune(cfg, progress=False)
    before, after = report["before"], report["after"]
    for r in (before, after):
        assert r["regional"]["recordings"] > 0 and 0 <= r["regional"]["com"]["top1"] <= 1
        # tax+com: the template bundles ship, so the figure a recorder meets
        assert set(r["global"]["unseen"]) == {"com", "sci", "tax", "tax+com"}
        assert {"com", "tax+com"} <= set(r["global"]["seen_val"]) <= set(r["regional"])
    log = (tmp_path / "ft" / "train_log.jsonl").read_text()
    note = next(json.loads(x)["note"] for x in log.splitlines() if "replayed" in x)
    replayed, total = (
        int(x) for x in note.split(" clips per epoch")[0].split("; ")[-1].split(" of ")
    )
    assert replayed == round((total - replayed) * 0.25 / 0.75)
    # the recordings are counted apart: regional training side, then the replayed global one
    from training.pretrain.mixed import training_data

    td = training_data(cfg.data, cfg.split, cfg.seed, cfg.val_fraction, cfg.replay)
    regional, replay = int((~td.is_replay).sum()), int(td.is_replay.sum())
    assert regional > 0 and replay > 0
    assert f"{regional} regional + {replay} replay recordings" in note
    md = (tmp_path / "ft" / "finetune_report.md").read_text()
    assert "| regional held-out" in md and "| global, unseen species |" in md
    reg = before["regional"]
    assert 0 < reg["held_out_species"] <= reg["species"]
    assert (
        f"({reg['recordings']} recordings of {reg['held_out_species']} species; "
        f"{reg['species']} in the catalogue: chance {1 / reg['species']:.3f})" in md
    )
    # how long it trained: a report that gained nothing must tell "barely trained" apart
    assert report["training"] == {"steps": 3, "epochs": cfg.epochs, "lr": 1e-3, "max_steps": 3}
    assert f"Trained 3 optimizer steps ({cfg.epochs} epochs) at a peak lr of 0.001." in md
    # the regional species the held-out row says nothing of, counted as a reader would
    from training.labelled_audio import open_labelled
    from training.train import make_split

    data = open_labelled(cfg.data)
    held = {
        data.items[i].species_id for i in make_split(data, "seen", cfg.seed, cfg.val_fraction).val
    }
    recorded = {it.species_id for it in data.items}
    assert reg["not_held_out"] == sorted(recorded - held)
    assert reg["not_recorded"] == sorted(set(data.catalogue.ids) - recorded)
    assert report["checkpoint"].endswith("final")
    # "after" is the trained checkpoint's, which differs from the one "before" came from
    from training.finetune import report_on
    from training.model import load_clap

    again = report_on(report["checkpoint"], cfg, tmp_path / "again", False)
    assert {k: v for k, v in again.items() if k != "_hits"} == after
    # every row's change is paired on the recordings both reports scored
    changes = report["change"]
    assert changes["regional"]["tax+com"]["n"] == reg["recordings"]
    assert changes["unseen"]["com"]["n"] == before["global"]["unseen"]["com"]["n"]
    rows = {"regional": lambda r: r["regional"], "unseen": lambda r: r["global"]["unseen"]}
    rows["seen_val"] = lambda r: r["global"]["seen_val"]
    for row, of in rows.items():
        for q, c in changes[row].items():
            assert c["change"] == pytest.approx(of(after)[q]["top1"] - of(before)[q]["top1"])
            assert c["lo"] <= c["change"] <= c["hi"]
    assert "95% interval" in md and (tmp_path / "ft" / "finetune_report.png").stat().st_size
    assert "_hits" not in (tmp_path / "ft" / "finetune_report.json").read_text()
    per = report["regional_species"]
    assert sum(r["n"] for r in per) == reg["recordings"] and len(per) == reg["held_out_species"]
    assert sum(r["after"] for r in per) == round(
        after["regional"]["tax+com"]["top1"] * reg["recordings"]
    )
    assert "## Regional species" in md
    assert (tmp_path / "ft" / "train_curves.png").read_bytes()[:4] == b"\x89PNG"
    from training.finetune import summary

    said = summary(report, tmp_path / "ft")
    for label in ("regional held-out", "global, unseen species", "global, seen species (val)"):
        assert f"  {label}, tax+com top-1: " in said
    init, final = load_clap(str(pretrain_checkpoint)).model, load_clap(report["checkpoint"]).model
    changed = [
        k
        for k, v in final.state_dict().items()
        if v.dtype.is_floating_point and not torch.equal(v, init.state_dict()[k])
    ]
    assert changed, "fine-tuning changed no weight"


def test_two_ranks_report_once_what_one_process_reports(pretrain_checkpoint, real_folder, tmp_path):
    """torchrun: the ranks share the reports' recordings out (each used to embed all of
    them) and only rank 0 writes and prints."""
    from .pretrain.conftest import run_two_ranks

    runs = ("one", "two")
    sets = ["clips_per_species=2", "batch_size=8", "max_steps=2", "crop_seconds=1"]
    sets += ["workers=0", "precision=fp32", "lr=1e-3", "tensorboard=false"]
    given = [f"init={pretrain_checkpoint}", f"data={real_folder}", "replay=tiny"]
    finetune(finetune_config(None, [*given, f"out={tmp_path / 'one'}", *sets]), False)
    args = ["-m", "training.cli", "finetune", "--checkpoint", str(pretrain_checkpoint)]
    args += ["--data", str(real_folder), "--replay", "tiny", "--out", str(tmp_path / "two")]
    done = run_two_ranks([*args, "--set", *sets])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("next, a bundle for the recorders") == 1
    # rank 0's bars (the only ones shown) count its share of each report's recordings
    for bar in ("validation (rank 0's ", "test audio (rank 0's "):
        assert bar in done.stderr and bar.replace("0", "1") not in done.stderr
    one, two = (json.loads((tmp_path / r / "finetune_report.json").read_text()) for r in runs)
    # the same checkpoint on the same recordings, embedded half by each rank
    assert two["before"] == one["before"]
    assert two["change"].keys() == one["change"].keys()
    assert (tmp_path / "two" / "before" / "eval.json").is_file()


def test_replay_never_brings_back_the_global_unseen_species(real_folder):
    """Replay draws only from the train side of the global zero-shot split: species held
    out as unseen must stay unseen, or the "global, unseen" figure is a leak."""
    from training.labelled_audio import open_labelled
    from training.pretrain.mixed import GLOBAL, REGIONAL, training_data
    from training.train import make_split

    td = training_data(str(real_folder), "seen", 0, 0.1, replay="tiny")
    held_out = set(make_split(open_labelled("tiny"), "zeroshot", 0, 0.1).test_species)
    replayed = [it for it, r in zip(td.train, td.is_replay, strict=True) if r]
    assert replayed and held_out
    assert not {it.species_id for it in replayed} & held_out
    # nor is one heard calling behind a replayed recording
    assert not {b for it in replayed for b in it.background} & held_out
    # ids say which set an item is loaded from
    assert all(it.id.startswith(GLOBAL) for it in replayed)
    assert all(
        it.id.startswith(REGIONAL) for it, r in zip(td.train, td.is_replay, strict=True) if not r
    )


def test_replayed_crops_read_only_their_frames_from_either_source(real_folder):
    """A merged (regional + replay) set names each item's file, so a crop reads only its
    own frames where the file is at 48 kHz, and a loader worker crops through a
    ClipTable; before, every replayed crop decoded its whole recording. The samples are
    those of a full decode (these real files need resampling: decoded whole)."""
    from training.labelled_audio import ClipTable, crop
    from training.pretrain.mixed import training_data

    td = training_data(str(real_folder), "seen", 0, 0.1, replay=str(real_folder))
    assert td.is_replay.any() and not td.is_replay.all()
    from training.labelled_audio import open_labelled
    from training.pretrain.mixed import merge

    # crops of both sources come out at one rate, or the table's decode would differ
    with pytest.raises(ValueError, match=r"at 16000 Hz and .* at 48000 Hz; open both"):
        merge(open_labelled(str(real_folder), 16_000), open_labelled(str(real_folder)))
    table = ClipTable.of(td.data, td.train)
    assert table is not None
    n = 48_000
    for row, it in enumerate(td.train[::3]):
        assert td.data.file_of(it) == real_folder / it.id[2:]  # "r/" or "g/" dropped
        want = crop(td.data.load(it), n, np.random.default_rng(row))
        got = td.data.crop(it, n, np.random.default_rng(row))
        np.testing.assert_array_equal(got, want, err_msg=it.id)


def test_replay_data_too_small_for_its_split_is_named_as_the_replay(real_folder, tmp_path):
    """The error used to advise `--split seen`, an option pretrain does not have, about
    data whose split was not the problem: it must name --replay and why."""
    import csv

    from training.pretrain.mixed import training_data

    small = tmp_path / "two-species"
    small.mkdir()
    (small / "catalogue.csv").write_text((real_folder / "catalogue.csv").read_text())
    rows = list(csv.DictReader((real_folder / "recordings.csv").open()))
    keep = sorted({r["species_id"] for r in rows})[:2]
    with open(small / "recordings.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if r["species_id"] in keep)
    with pytest.raises(ValueError, match=rf"--replay {small} keeps its zero-shot split"):
        training_data(str(real_folder), "seen", 0, 0.1, replay=str(small))
    with pytest.raises(ValueError, match=r"--set split=seen"):
        training_data(str(small), "zeroshot", 0, 0.1)


def test_a_run_that_fails_at_its_start_leaves_no_empty_out(real_folder, tmp_path):
    """A typo'd checkpoint or data folder used to leave an empty --out, which the next
    (corrected) attempt then met as an existing run."""
    from training.model import CheckpointError
    from training.pretrain.loop import pretrain

    out = tmp_path / "region"
    cfg = finetune_config(None, [f"init={tmp_path / 'no-such-checkpoint'}",
                                 f"data={real_folder}", f"out={out}"])  # fmt: skip
    with pytest.raises(CheckpointError, match="no such folder"):
        finetune(cfg, progress=False)
    assert not out.exists()
    bad_data = finetune_config(None, ["init=scratch:fast", f"data={tmp_path / 'nope'}",
                                      f"out={out}"])  # fmt: skip
    with pytest.raises(ValueError):
        pretrain(bad_data, progress=False)
    assert not out.exists()
    out.mkdir()  # a folder the user made keeps existing
    with pytest.raises(ValueError):
        pretrain(bad_data, progress=False)
    assert out.is_dir()


def test_finetune_refuses_another_runs_folder_before_its_before_report(real_folder, tmp_path):
    """It used to evaluate the "before" model first (minutes at full size), then refuse."""
    import dataclasses

    out = tmp_path / "region"
    cfg = finetune_config(None, [f"init={tmp_path / 'not-loaded-first'}",
                                 f"data={real_folder}", f"out={out}"])  # fmt: skip
    out.mkdir()
    saved = {**dataclasses.asdict(cfg), "seed": 5}
    (out / "pretrain_config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"holds another run \(seed 5, not 0\)"):
        finetune(cfg, progress=False)  # not CheckpointError: the init is never opened


def _small_region(real_folder, tmp_path, out, *extra):
    """The fine-tuning defaults (batch 256) on the real folder at 2 clips per species:
    21 species -> 42 clips per epoch."""
    return finetune_config(
        None,
        [f"init={real_folder}", f"data={real_folder}", f"out={out}", "clips_per_species=2",
         "max_steps=1", "crop_seconds=1", "workers=0", "precision=fp32",
         "tensorboard=false", *extra],
    )  # fmt: skip


def test_a_batch_larger_than_the_region_is_capped_to_its_epoch_and_said(real_folder, tmp_path):
    """With the defaults, a small region stopped at its start: batch 256 > one epoch."""
    from training.pretrain.loop import capped_batch, epoch_clips
    from training.pretrain.mixed import training_data

    def batch_for_region(cfg):  # what pretrain(fit_batch=True) does on one rank
        td = training_data(cfg.data, cfg.split, cfg.seed, cfg.val_fraction, cfg.replay)
        return capped_batch(cfg, epoch_clips(cfg, td), 1)

    cfg = _small_region(real_folder, tmp_path, tmp_path / "ft")
    assert cfg.batch_size == 256
    capped, note = batch_for_region(cfg)
    assert capped.batch_size == 42 and cfg.batch_size == 256
    assert note.startswith("batch_size 256 exceeds one epoch of this data (42 clips): capped to 42")
    assert "--set batch_size=N" in note
    fits = _small_region(real_folder, tmp_path, tmp_path / "ft", "batch_size=8")
    assert batch_for_region(fits) == (fits, None)


def test_finetune_with_the_default_batch_trains_a_small_region_and_reruns(
    pretrain_checkpoint, real_folder, tmp_path, capsys
):
    out = tmp_path / "ft"
    cfg = _small_region(real_folder, tmp_path, out)
    cfg = dataclasses.replace(cfg, init=str(pretrain_checkpoint))
    report = finetune(cfg, progress=False)
    said = capsys.readouterr().out
    assert "finetune: batch_size 256 exceeds one epoch" in said
    # no --replay: forgetting goes unseen in a report without global rows, so said first
    assert said.index("no --replay: no global recording is replayed") < said.index("batch_size")
    assert json.loads((out / "pretrain_config.json").read_text())["batch_size"] == 42
    log = (out / "train_log.jsonl").read_text()
    assert "capped to 42" in log  # in the run's record, not only on the terminal
    assert "1 steps/epoch of 42" in log
    # the default warm-up is a tenth of the run: 50 steps outlasted this 5-step run, whose
    # rate then peaked at a tenth of lr; and the log says how short the run is
    assert "warm-up: 1 step (auto: a tenth of the 5-step schedule)" in log
    assert "5 optimizer steps (5 epochs of 1) at lr 2e-05, stopping after 1 (max_steps)" in log
    lrs = [json.loads(x)["lr"] for x in log.splitlines() if '"lr"' in x]
    assert max(lrs) == pytest.approx(2e-5)
    # the same command again: the same cap, so the run resumes instead of refusing
    again = finetune(cfg, progress=False)
    assert again["checkpoint"] == report["checkpoint"]
    assert "resuming at step 1" in (out / "train_log.jsonl").read_text()


def test_finetune_refuses_a_train_runs_folder_before_writing(real_folder, tmp_path):
    """Only a folder with checkpoints/ was checked: a `train` run's split.json was
    replaced by the region's."""
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    (out / "split.json").write_text("the train run's split")
    cfg = finetune_config(None, [f"init={tmp_path / 'not-loaded'}", f"data={real_folder}",
                                 f"out={out}"])  # fmt: skip
    with pytest.raises(FileExistsError, match="holds a run of `animalclap-train train`"):
        finetune(cfg, progress=False)
    assert (out / "split.json").read_text() == "the train run's split"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "split.json"]


def test_a_run_folder_as_checkpoint_is_refused_before_any_work(
    tiny_checkpoint, real_folder, tmp_path, capsys
):
    import shutil

    from training.model import CheckpointError

    run = tmp_path / "demo"
    shutil.copytree(tiny_checkpoint, run / "final")
    cfg = dataclasses.replace(_small_region(real_folder, tmp_path, tmp_path / "ft"), init=str(run))
    with pytest.raises(
        CheckpointError, match=rf"is a run folder, not a checkpoint: give {run}/final$"
    ):
        finetune(cfg, progress=False)
    assert capsys.readouterr().out == ""  # refused before the batch was even sized
    assert not (tmp_path / "ft").exists()


def test_the_run_log_counts_the_recordings_left_out_for_an_unseen_caller():
    from training.pretrain.mixed import training_data

    td = training_data("tiny", "zeroshot", 0, 0.1)
    n = len(td.split.heard_unseen)
    assert n > 0 and td.notes == [
        f"zero-shot split: {n} recordings of seen species left out of train and val: an "
        "unseen test species calls in their background"
    ]


def test_a_split_saved_before_the_background_rule_replays_no_recording_hearing_its_unseen(
    monkeypatch, tmp_path
):
    """A global run's split.json from before 2026-11-27 kept recordings in which its
    unseen species call in training: replayed as saved, fine-tuning would train on them."""
    import json

    import training.lineage
    from training.labelled_audio import open_labelled
    from training.pretrain.mixed import replay_split
    from training.train import make_split

    data = open_labelled("tiny")
    split = make_split(data, "zeroshot", 0, 0.1)
    assert split.heard_unseen
    split.to_json(tmp_path / "split.json")
    old = json.loads((tmp_path / "split.json").read_text())
    old["train"] = sorted(old["train"] + old.pop("heard_unseen"))
    del old["left_out_species"]
    (tmp_path / "split.json").write_text(json.dumps(old))
    monkeypatch.setattr(
        training.lineage, "trained_split", lambda init, data: tmp_path / "split.json"
    )
    replayed, note = replay_split(data, "tiny", "a-run/final", 0, 0.1)
    assert str(tmp_path / "split.json") in note
    assert replayed.train == split.train and replayed.heard_unseen == split.heard_unseen


def test_global_unseen_species_the_region_records_leave_the_unseen_row():
    """A regional species that is also one of the global split's unseen species is
    trained on: it used to stay in the "global, unseen species" row with no word."""
    from training.finetune import report_md, unseen_not_regional
    from training.labelled_audio import open_labelled
    from training.train import make_split

    data = open_labelled("tiny")
    split = make_split(data, "zeroshot", 0, 0.1)
    held = split.test_species[0]
    keep = (held, split.seen_species[0])
    # with nothing calling behind them: the species recorded, alone, are the ones trained
    quiet = [dataclasses.replace(it, background=()) for it in data.items if it.species_id in keep]
    regional = dataclasses.replace(data, items=quiet)
    reduced, trained = unseen_not_regional(split, data, regional)
    assert trained == [held]
    assert reduced.test_species == [s for s in split.test_species if s != held]
    assert set(reduced.test) < set(split.test)
    assert all(data.items[i].species_id != held for i in reduced.test)
    assert unseen_not_regional(split, data, dataclasses.replace(data, items=[])) == (split, [])
    # heard calling behind a regional recording: trained on as well
    other = split.test_species[1]
    behind = dataclasses.replace(regional.items[0], background=(other,))
    heard_regionally = dataclasses.replace(regional, items=[behind, *regional.items[1:]])
    assert unseen_not_regional(split, data, heard_regionally)[1] == sorted([held, other])

    top = {q: {"top1": 0.5} for q in ("com", "sci", "tax")}
    side = {
        "regional": {"recordings": 3, "species": 2, **top},
        "global": {"unseen_trained_regionally": trained, "unseen": top, "seen_val": top},
    }
    md = report_md(
        {"init": "a", "checkpoint": "b", "replay": "g", "replay_fraction": 0.25}
        | {"before": side, "after": side}
    )
    assert "| global, unseen species |" in md
    assert "1 of the global data's unseen species are also regional species" in md
    assert md.rstrip().endswith(f": {held}.")
    alone = {**side, "global": {k: v for k, v in side["global"].items() if k != "unseen"}}
    md = report_md(
        {"init": "a", "checkpoint": "b", "replay": "g", "replay_fraction": 0.25}
        | {"before": alone, "after": alone}
    )
    assert "| global, unseen species |" not in md and "which had no others" in md


def test_replay_keeps_the_split_the_checkpoint_was_trained_with(
    pretrain_checkpoint, real_folder, tmp_path
):
    """A global run trained with seed 1, fine-tuned with seed 0: the replayed species
    and the "global, unseen" rows come from the global run's split.json, through a
    fine-tuned checkpoint too; a seed-0 split would replay the run's unseen species."""
    from training.labelled_audio import open_labelled
    from training.lineage import trained_split
    from training.pretrain.loop import pretrain
    from training.pretrain.mixed import training_data
    from training.splits import ZeroShotSplit
    from training.train import make_split

    from .pretrain.conftest import tiny_run

    glob = tmp_path / "global"
    pretrain(tiny_run(glob, pretrain_checkpoint, seed=1, max_steps=1), progress=False)
    unseen = set(ZeroShotSplit.from_json(glob / "split.json").test_species)
    assert unseen and unseen != set(
        make_split(open_labelled("tiny"), "zeroshot", 0, 0.1).test_species
    )

    def replayed_species(init) -> set[str]:
        td = training_data(str(real_folder), "seen", 0, 0.1, replay="tiny", init=str(init))
        return {it.species_id for it, r in zip(td.train, td.is_replay, strict=True) if r}, td

    species, td = replayed_species(glob / "final")
    assert species and not species & unseen
    assert str(glob / "split.json") in td.notes[0]
    # a region's run from it, then a run from that: the chain leads back to glob
    regional = dataclasses.replace(
        tiny_run(tmp_path / "region", glob / "final", data=str(real_folder), replay="tiny"),
        split="seen",
        max_steps=1,
    )
    pretrain(regional, progress=False, fit_batch=True)
    # the region's run keeps the split it replayed: a chain from a hub id, too, is found
    replayed = trained_split(str(tmp_path / "region" / "final"), "tiny")
    assert replayed == tmp_path / "region" / "replay_split.json"
    assert set(ZeroShotSplit.from_json(replayed).test_species) == unseen
    assert not replayed_species(tmp_path / "region" / "final")[0] & unseen
    # what export reads to mark a bundle as no field model: the run's data was generated
    from training.lineage import trained_on_generated_audio

    assert trained_on_generated_audio(str(glob / "final")) == "tiny"
    assert trained_on_generated_audio(str(pretrain_checkpoint)) is None  # no run folder
    # a region's run on real recordings alone, from that chain: generated audio still
    # shaped it (a bundle of a model fine-tuned from the demo checkpoint shipped as a
    # field model, a docs audit found)
    real_only = dataclasses.replace(
        tiny_run(tmp_path / "real-only", tmp_path / "region" / "final", data=str(real_folder)),
        split="seen",
        max_steps=1,
    )
    pretrain(real_only, progress=False, fit_batch=True)
    assert trained_on_generated_audio(str(tmp_path / "real-only" / "final")) == "tiny"
    # a checkpoint with no run folder: a fresh split, and the log says so
    _, fresh = replayed_species(pretrain_checkpoint)
    assert "drawn from seed 0" in fresh.notes[0]


def test_a_regional_species_under_another_id_than_the_replayed_one_is_refused(
    real_folder, tmp_path
):
    """A region calling Turdus merula 'blackbird' where the global data says another
    id trained one species as two, and kept it in the "global, unseen" row."""
    import csv
    import shutil

    from training.labelled_audio import open_labelled
    from training.pretrain.mixed import merge

    region = tmp_path / "region"
    shutil.copytree(real_folder, region)
    with open(region / "catalogue.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    old = rows[0]["id"]
    rows[0]["id"] = "renamed"
    with open(region / "catalogue.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    recs = (region / "recordings.csv").read_text(encoding="utf-8")
    (region / "recordings.csv").write_text(recs.replace(f",{old},", ",renamed,"))
    name = rows[0]["scientific_name"]
    with pytest.raises(ValueError, match=f"calls {name} 'renamed', .* '{old}': use '{old}' in"):
        merge(open_labelled(str(region)), open_labelled(str(real_folder)))


def test_a_regional_id_that_the_replayed_data_gives_another_species_is_refused(
    real_folder, tmp_path
):
    """A region whose catalogue used an id the global data gives another species (the
    region's leopard as 'pitsan1', tiny's Pterocles alchata) merged the two: the
    global species' recordings were replayed under the leopard's names."""
    import csv
    import shutil

    from training.labelled_audio import open_labelled
    from training.pretrain.mixed import merge

    replayed = open_labelled("tiny")
    taken = next(iter(replayed.catalogue))
    region = tmp_path / "region"
    shutil.copytree(real_folder, region)
    with open(region / "catalogue.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    old, name = rows[0]["id"], rows[0]["scientific_name"]
    rows[0]["id"] = taken.id
    with open(region / "catalogue.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    recs = (region / "recordings.csv").read_text(encoding="utf-8")
    (region / "recordings.csv").write_text(recs.replace(f",{old},", f",{taken.id},"))
    with pytest.raises(ValueError, match=f"'{taken.id}' is {name} in .* {taken.scientific_name}"):
        merge(open_labelled(str(region)), replayed)


def test_a_report_with_nothing_held_out_says_why_and_what_to_change():
    from training.finetune import report_md

    regional = {
        "recordings": 0,
        "held_out_species": 0,
        "species": 12,
        "site_days": 12,
        "val_fraction": 0.1,
    }
    md = report_md(
        {
            "init": "g",
            "checkpoint": "f",
            "replay": None,
            "replay_fraction": 0.25,
            "before": {"regional": regional},
            "after": {"regional": regional},
        }
    )
    assert "val_fraction 0.1 of 12 site-days drew none" in md
    assert "`--set val_fraction=0.3`" in md


def test_a_replayed_split_carried_over_to_changed_data_keeps_its_unseen_species_unseen():
    """The global data grew after the global run: its split.json no longer fits, and
    fine-tuning was refused with advice it could not follow (found in review)."""
    from dataclasses import replace

    from training.labelled_audio import open_labelled
    from training.splits import carried_over, items_digest
    from training.train import make_split

    items = open_labelled("tiny").items
    split = make_split(open_labelled("tiny"), "zeroshot", 1, 0.1)
    grown = [*items[3:], replace(items[5], id="new-rec", species_id="newsp", group="s|d")]
    moved = carried_over(split, grown, 0, 0.1)
    assert set(moved.test_species) == (
        set(split.test_species) & {it.species_id for it in grown}
    ) | {"newsp"}
    assert not {grown[i].species_id for i in moved.train + moved.val} & set(moved.test_species)
    assert sorted(moved.train + moved.val + moved.test + moved.heard_unseen) == list(
        range(len(grown))
    )
    assert not {grown[i].group for i in moved.train} & {grown[i].group for i in moved.val}
    assert moved.items_digest == items_digest(grown) != split.items_digest


def test_a_regional_id_clash_with_the_replay_is_refused_before_the_before_report(
    real_folder, tiny_checkpoint, tmp_path, monkeypatch
):
    """A regional catalogue calling a replayed species by its own id (an East African
    team's 'bfsg' for Pterocles decoratus, tiny's 'blfsan1') was refused only once
    training began: after the "before" report (minutes at full size), leaving
    --out/before behind."""
    from training.labelled_audio import open_labelled

    taken = next(iter(open_labelled("tiny").catalogue))
    region = _region_whose_catalogue(
        real_folder, tmp_path, lambda rows: rows.append({**rows[0], "id": "team_code",
        "scientific_name": taken.scientific_name, "genus": taken.genus}),
    )  # fmt: skip
    _no_before_report(monkeypatch)
    out = tmp_path / "run"
    # a real checkpoint: a folder that is none is refused first, since 2026-11-29
    cfg = finetune_config(None, [f"init={tiny_checkpoint}", f"data={region}", "replay=tiny",
                                 f"out={out}"])  # fmt: skip
    with pytest.raises(ValueError, match=f"calls {taken.scientific_name} 'team_code'"):
        finetune(cfg, progress=False)
    assert not out.exists()


def test_the_report_shows_the_template_bundles_ship():
    """Bundles embed species with tax+com by default; the report showed com/sci/tax
    only, so a run that lowered the shipped figure could read as a gain."""
    from training.finetune import report_md

    row = {q: {"top1": 0.5} for q in ("com", "sci", "tax", "tax+com")}
    regional = {"recordings": 3, "held_out_species": 2, "species": 5, **row}
    better = {**regional, "tax+com": {"top1": 0.75}}
    md = report_md({"init": "g", "checkpoint": "f", "replay": None, "replay_fraction": 0.25,
                    "before": {"regional": regional}, "after": {"regional": better}})  # fmt: skip
    assert "| top-1 | com | sci | tax | tax+com (shipped) |" in md
    assert "| 0.500 -> 0.750 (+0.250) |" in md


def test_each_change_is_paired_by_recording_and_bold_only_where_clear_of_zero():
    """The report's changes compare the two models on the same recordings, matched by
    id (not by position), and mark only those whose interval leaves out 0: with a few
    held-out recordings a +0.1 reads as a gain that chance gives as easily."""
    from training.finetune import paired_changes, report_md

    ids = tuple(f"r{i}" for i in range(20))
    right = (True,) * 10 + (False,) * 10
    before = {"regional": {"ids": ids, "com": right, "tax+com": (False,) * 20}}
    # the after report lists the recordings in another order; com is unchanged on each
    after = {"regional": {"ids": ids[::-1], "com": right[::-1], "tax+com": (True,) * 20}}
    changes = paired_changes(before, after)
    com, shipped = changes["regional"]["com"], changes["regional"]["tax+com"]
    assert (com["n"], com["gained"], com["lost"], com["change"]) == (20, 0, 0, 0.0)
    assert shipped["gained"] == 20 and shipped["lo"] > 0
    assert changes["unseen"] == {} == changes["seen_val"]
    row = lambda com, tc: {"com": {"top1": com}, "tax+com": {"top1": tc}}  # noqa: E731
    md = report_md({"init": "g", "checkpoint": "f", "replay": None, "replay_fraction": 0.25,
                    "before": {"regional": {"recordings": 20, "species": 4, **row(0.5, 0.0)}},
                    "after": {"regional": {"recordings": 20, "species": 4, **row(0.5, 1.0)}},
                    "change": changes})  # fmt: skip
    assert f"| 0.500 -> 0.500 (+0.000; {com['lo']:+.2f} to {com['hi']:+.2f}) |" in md
    assert f"| **0.000 -> 1.000 (+1.000; {shipped['lo']:+.2f} to +1.00)** |" in md
    assert "cannot tell the change from chance" in md
    from pathlib import Path

    from training.finetune import summary

    report = {"checkpoint": "run/final", "data": "my_region", "change": changes,
              "before": {"regional": row(0.5, 0.0)}, "after": {"regional": row(0.5, 1.0)}}  # fmt: skip
    said = summary(report, Path("run")).splitlines()
    assert said == [
        "-> run/final; report: run/finetune_report.md",
        f"  regional held-out, tax+com top-1: 0.000 -> 1.000 (95% interval of the change "
        f"{shipped['lo']:+.2f} to +1.00: gained; 20 recordings)",
        "next, a bundle for the recorders: animalclap-export bundle --checkpoint run/final "
        "--data my_region --out BUNDLE",
    ]
    # a small region held nothing out: the summary printed the global rows alone
    none = {"recordings": 0, "val_fraction": 0.15, "site_days": 8, **row(0, 0)}
    report = {**report, "change": {}, "before": {"regional": none}, "after": {"regional": none}}
    said = summary(report, Path("run")).splitlines()
    assert said[1] == (
        "  regional held-out: not scored, no recording held out (val_fraction 0.15 of 8 "
        "site-days drew none): record more site-days, or --set val_fraction=0.3"
    )


def test_the_report_lists_each_regional_species_worst_first(tiny_catalogue):
    """Which regional species the retraining left wrong (record more of them) and
    which it lost, not only the average over them."""
    from training.finetune import per_species, report_md

    ids = ("a1", "a2", "b1", "c1", "c2", "c3")
    species = ("eurbla", "eurbla", "sonthr1", "eurrob1", "eurrob1", "eurrob1")
    before = {
        "regional": {
            "ids": ids,
            "species": species,
            "tax+com": (False, False, True, True, False, False),
        }
    }
    # listed in another order after, as a report may: matched by recording
    after = {"regional": {"ids": ids[::-1], "tax+com": (True, True, False, True, False, False)}}
    rows = per_species(before, after, tiny_catalogue)  # fmt: skip
    # after, by recording: c3 right, c2 right, c1 wrong, b1 right, a2 wrong, a1 wrong
    assert [(r["species_id"], r["n"], r["before"], r["after"]) for r in rows] == [
        ("eurbla", 2, 0, 0),
        ("eurrob1", 3, 1, 2),
        ("sonthr1", 1, 1, 1),
    ]
    regional = {"recordings": 6, "species": 3, "tax+com": {"top1": 0.5}}
    md = report_md({"init": "g", "checkpoint": "f", "replay": None, "replay_fraction": 0.25,
                    "before": {"regional": regional}, "after": {"regional": regional},
                    "regional_species": rows})  # fmt: skip
    assert "| Eurasian Blackbird (`eurbla`) | 2 | 0 | 0 |" in md
    assert md.index("`eurbla`") < md.index("`eurrob1`") < md.index("`sonthr1`")


def _short_run_report(steps, epochs, change):
    row = {q: {"top1": 0.1} for q in ("com", "sci", "tax", "tax+com")}
    regional = {"recordings": 11, "held_out_species": 8, "species": 12, **row,
                "not_held_out": ["hyla_arborea"], "not_recorded": []}  # fmt: skip
    return {
        "init": "g", "checkpoint": "f", "replay": None, "replay_fraction": 0.25,
        "training": {"steps": steps, "epochs": epochs, "lr": 2e-5, "max_steps": None},
        "before": {"regional": regional}, "after": {"regional": regional},
        "change": {"regional": {"tax+com": change}},
    }  # fmt: skip


def test_a_short_run_that_gained_nothing_is_said_to_be_short_not_a_verdict():
    """A region of 57 files trained 5 optimizer steps (5 epochs of one) at the
    defaults: every change was +0.000, and the report pointed to the zero-shot route,
    where 12 epochs at batch 32 gained 0.09 -> 0.73."""
    from pathlib import Path

    from training.finetune import report_md, summary

    within = {"n": 11, "change": 0.0, "lo": -0.26, "hi": 0.26}
    r = _short_run_report(5, 5, within)
    md = report_md(r)
    assert "Trained 5 optimizer steps (5 epochs) at a peak lr of 2e-05." in md
    assert "**A short run**: This run took 5 optimizer steps" in md
    assert "--set epochs=100: about 100 steps" in md  # one step an epoch
    assert "note: this run took 5 optimizer steps" in summary(r, Path("out"))
    assert "chance 0.083)" in md  # 1 of 12 species
    assert "1 regional species recorded, but no recording held out" in md
    assert "several of one site-day or individual are not" in md
    # long enough, or a change clear of chance: no such note
    assert "short run" not in report_md(_short_run_report(300, 30, within))
    gained = {"n": 11, "change": 0.6, "lo": 0.13, "hi": 0.86}
    assert "short run" not in report_md(_short_run_report(5, 5, gained))
    assert "--set epochs=20" in report_md(_short_run_report(25, 5, within))  # 5 an epoch


def test_a_name_too_long_for_the_text_model_is_refused_before_the_before_report(
    real_folder, tiny_checkpoint, tmp_path, monkeypatch
):
    """'Zwergfledermaus / Common Pipistrelle' passed every check until training began,
    after the "before" report (hours at paper size), and the error named no species."""
    first = {}

    def lengthen(rows):
        rows[0]["common_name"] = " / ".join(["Zwergfledermaus Common Pipistrelle"] * 12)
        first.update(rows[0])

    region = _region_whose_catalogue(real_folder, tmp_path, lengthen)
    _no_before_report(monkeypatch)
    out = tmp_path / "run"
    cfg = finetune_config(None, [f"init={tiny_checkpoint}", f"data={region}", f"out={out}"])
    with pytest.raises(ValueError, match=f"the text model takes at most .*\\({first['id']}, "):
        finetune(cfg, progress=False)
    assert not out.exists()


def test_text_embeddings_say_when_they_cut_a_prompt(tiny_checkpoint):
    """Cut to the text tower's length, a long name's bundle embedding came from part of
    it, with no word said (the zero-shot route's `export bundle`)."""
    import warnings

    from training.model import load_clap, text_embeddings, tokens_taken

    loaded = load_clap(str(tiny_checkpoint))
    limit = tokens_taken(loaded.tokenizer, loaded.model.config)
    words = lambda k: " ".join(["a"] * k)  # noqa: E731
    n = max(k for k in range(1, 4 * limit) if len(loaded.tokenizer(words(k))["input_ids"]) <= limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the longest that fits: not a word said
        fits = text_embeddings(loaded, ["Turdus merula", words(n)])
    with pytest.warns(UserWarning, match=f"1 of 2 prompts cut to the text model's {limit} tokens"):
        cut = text_embeddings(loaded, ["Turdus merula", words(n + 40)])
    assert cut.shape == fits.shape and torch.isfinite(cut).all()


def _region_whose_catalogue(real_folder, tmp_path, change):
    """A copy of the real recordings folder whose catalogue.csv rows `change(rows)` edits."""
    import csv
    import shutil

    region = tmp_path / "region"
    shutil.copytree(real_folder, region)
    with open(region / "catalogue.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    change(rows)
    with open(region / "catalogue.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return region


def _no_before_report(monkeypatch):
    import training.finetune as F

    def no_report(*a, **k):
        raise AssertionError("the before report ran before the refusal")

    monkeypatch.setattr(F, "report_on", no_report)
