"""Zero-shot evaluation and trait probing, on the benchmark and on real recordings."""

import json

import numpy as np
import pytest

from training.evaluate import EvalConfig, evaluate
from training.labelled_audio import open_labelled
from training.model import load_clap
from training.probe import probe_traits
from training.splits import zero_shot_split


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_clap(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def tiny_data():
    return open_labelled("tiny")


def test_evaluate_on_the_benchmark_writes_tables_and_a_map(loaded, tiny_data, tmp_path):
    split = zero_shot_split(tiny_data.items, tiny_data.catalogue, seed=0)
    res = evaluate(loaded, tiny_data, split, tmp_path, EvalConfig(), progress=False)
    n_test = len(split.test)
    for pool, n_cand in (("unseen", len(split.test_species)), ("all", len(tiny_data.catalogue))):
        assert set(res[pool]) == {"com", "sci", "tax", "sci+com", "tax+com", "tax-shuffled"}
        for r in res[pool].values():
            assert r["n"] == n_test and r["candidates"] == n_cand
            assert 0 <= r["top1"] <= r["top5"] <= 1
            lo, hi = r["top1_ci"]
            assert 0 <= lo <= r["top1"] <= hi <= 1 and hi - lo > 0
            # the error profile counts exactly the wrong top-1 predictions
            assert r["errors"]["n_wrong"] == round(n_test * (1 - r["top1"]))
            shares = [v["share"] for v in r["errors"]["levels"].values()]
            assert shares == sorted(shares)  # genus <= family <= order <= class
    assert json.loads((tmp_path / "eval.json").read_text())["unseen"]["sci"]["n"] == n_test
    md = (tmp_path / "eval.md").read_text()
    assert "| unseen (" in md and "| tax-shuffled |" in md and "| tax+com |" in md
    com = res["unseen"]["com"]
    assert f"| com | {com['top1']:.3f} | {com['top1_ci'][0]:.3f}-{com['top1_ci'][1]:.3f} |" in md
    assert "hits" not in json.loads((tmp_path / "eval.json").read_text())["unseen"]["com"]
    assert (tmp_path / "embedding_map.png").stat().st_size > 10_000
    _every_top1_recomputes_from_predictions_csv(res, tmp_path / "predictions.csv", n_test)


def _every_top1_recomputes_from_predictions_csv(res, path, n_test):
    """A researcher checks the table, or picks recordings to listen to, from one row
    per recording and pool; each row's ranked species agree with its rank."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * n_test
    for pool in ("unseen", "all"):
        mine = [r for r in rows if r["pool"] == pool]
        assert len({r["recording_id"] for r in mine}) == n_test
        for q, r in res[pool].items():
            right = sum(int(row[f"top1_{q}"]) for row in mine)
            assert right / n_test == pytest.approx(r["top1"]), (pool, q)
        shipped = res[pool]["tax+com"]
        assert sum(int(r["rank"]) == 1 for r in mine) / n_test == pytest.approx(shipped["top1"])
        assert sum(int(r["rank"]) <= 5 for r in mine) / n_test == pytest.approx(shipped["top5"])
        for r in mine:
            preds = [r[f"pred_{j}"] for j in range(1, 6) if r[f"pred_{j}"]]
            scores = [float(r[f"score_{j}"]) for j in range(1, 6) if r[f"score_{j}"]]
            assert scores == sorted(scores, reverse=True)
            assert len(preds) == min(5, int(r["candidates"]))
            if int(r["rank"]) <= len(preds):  # listed where its rank says, or tied there
                at = float(r[f"score_{r['rank']}"])
                assert r["species_id"] in preds and float(r["score"]) == pytest.approx(at)
            else:
                assert r["species_id"] not in preds


def test_evaluation_measures_the_prompt_a_bundle_ships():
    """Evaluation scored com, sci and tax only, while bundles ship tax+com: the prompt
    a recorder uses was never measured."""
    from export.pipeline import ExportConfig
    from training.evaluate import QUERY_TEMPLATES

    shipped = ExportConfig(checkpoint="c", out="o").templates
    assert set(shipped) <= {t.value for t in QUERY_TEMPLATES}


def test_evaluate_refuses_a_split_of_other_data(loaded, tiny_data, tmp_path):
    split = zero_shot_split(tiny_data.items, tiny_data.catalogue, seed=0)
    other = open_labelled("tiny:1")
    with pytest.raises(ValueError, match="different item list"):
        evaluate(loaded, other, split, tmp_path, progress=False)


def test_probe_scores_unseen_and_seen_species_against_baselines(loaded, tiny_data, tmp_path):
    split = zero_shot_split(tiny_data.items, tiny_data.catalogue, seed=0)
    res = probe_traits(loaded, tiny_data, split, tmp_path, progress=False)
    for name, n in (("unseen", len(split.test)), ("seen", len(split.val))):
        r = res[name]
        assert r["recordings"] == n and r["n_traits"] == 22
        for s in r["traits"].values():
            key = "accuracy" if "accuracy" in s else "mAP"
            assert s["beats_baseline"] == (s[key] > s["baseline_" + key])
            assert 0 <= s[key] <= 1
    md = (tmp_path / "probe.md").read_text()
    assert "probe beats baseline on" in md
    assert "multi-label traits, the probe's own scores against the species' trait rows" in md
    # which split it used: the run's split.json or a fresh one, by its parameters
    assert res["split"]["unseen_species"] == len(split.test_species)
    assert f"split: {len(split.test_species)} unseen and {len(split.seen_species)} seen" in md
    assert "seed 0" in md


def test_evaluation_runs_on_real_recordings_with_a_checkpoint(loaded, real_folder, tmp_path):
    data = open_labelled(str(real_folder))
    assert len(data.items) > 120 and len({it.species_id for it in data.items}) >= 15
    split = zero_shot_split(data.items, data.catalogue, seed=0)
    res = evaluate(loaded, data, split, tmp_path / "eval", EvalConfig(maps=False), progress=False)
    assert res["unseen"]["com"]["n"] == len(split.test) > 0
    assert np.isfinite(res["all"]["tax"]["top1"])
    with pytest.raises(ValueError, match="no trait table"):
        probe_traits(loaded, data, split, tmp_path / "probe", progress=False)


def test_the_cli_takes_a_pretrain_run_folder(tiny_checkpoint, tmp_path, capsys):
    """pretrain and finetune write RUN/final, train RUN/checkpoint: --run takes either
    (pretrain folders were refused with a hub-id error before)."""
    import shutil

    from training.cli import main

    run = tmp_path / "pretrain-run"
    shutil.copytree(tiny_checkpoint, run / "final")
    assert main(["probe", "--run", str(run), "--data", "tiny"]) == 0
    assert json.loads((run / "probe" / "probe.json").read_text())
    capsys.readouterr()
    empty = tmp_path / "unfinished"
    (empty / "checkpoints").mkdir(parents=True)
    assert main(["probe", "--run", str(empty), "--data", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no model in it" in err and "checkpoints/step-" in err


def test_the_cli_reopens_the_data_a_run_folder_was_trained_on(tiny_checkpoint, tmp_path, capsys):
    """A finetune run's split.json indexes its regional data: evaluating the folder
    without --data used to open the benchmark and fail on the split."""
    import shutil

    from training.cli import main

    run = tmp_path / "finetune-run"
    shutil.copytree(tiny_checkpoint, run / "final")
    regional = open_labelled("tiny:3")  # stands for the regional folder
    zero_shot_split(regional.items, regional.catalogue, seed=0).to_json(run / "split.json")
    (run / "pretrain_config.json").write_text(json.dumps({"data": "tiny:3", "replay": "tiny"}))
    assert main(["evaluate", "--run", str(run)]) == 0
    assert json.loads((run / "eval" / "eval.json").read_text())["unseen"]
    capsys.readouterr()
    assert (
        main(["evaluate", "--run", str(run), "--data", "tiny", "--out", str(tmp_path / "e")]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "split was made for a different item list" in err


def test_run_folders_the_cli_cannot_evaluate_say_why_and_what_to_give(
    tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    """A finetune run (split seen) has no unseen species: the error blamed `--split`,
    which the user never set. A train run from before data was recorded absolute,
    evaluated from elsewhere, said 'not a folder' about a path the user never typed.
    An unfinished run's hint named a placeholder step, not the one it holds."""
    import shutil

    from training.cli import main
    from training.train import make_split

    run = tmp_path / "finetune-run"
    shutil.copytree(tiny_checkpoint, run / "final")
    make_split(open_labelled("tiny"), "seen", 0, 0.1).to_json(run / "split.json")
    (run / "pretrain_config.json").write_text(json.dumps({"data": "tiny", "split": "seen"}))
    assert main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on every species of its data (split seen" in err
    assert f"--checkpoint {run / 'final'} --data FOLDER" in err

    old = tmp_path / "old-train-run"
    shutil.copytree(tiny_checkpoint, old / "checkpoint")
    summary = {"config": {"data": "runs/bench-tiny"}}
    (old / "train_summary.json").write_text(json.dumps(summary))
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--run", str(old)]) == 2
    err = capsys.readouterr().err
    assert "its data 'runs/bench-tiny' (from train_summary.json) is not found from" in err

    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints" / "step-00000002" / "model").mkdir(parents=True)
    shutil.copy(tiny_checkpoint / "config.json", unfinished / "checkpoints/step-00000002/model")
    (unfinished / "checkpoints" / "latest").write_text("step-00000002")
    assert main(["probe", "--run", str(unfinished), "--data", "tiny"]) == 2
    assert "give --checkpoint " + str(unfinished / "checkpoints/step-00000002/model") in (
        capsys.readouterr().err
    )


def test_the_cli_uses_the_split_and_seed_of_the_run_a_checkpoint_came_from(
    tiny_checkpoint, tiny_data, tmp_path, capsys
):
    """`--checkpoint RUN/checkpoint --data D` drew a fresh split, so the 'unseen'
    species could be ones the model trained on, and seed 0 whatever the run's: the
    standalone command did not give a sweep run's figures."""
    import shutil

    from training.cli import main

    run = tmp_path / "train-run"
    shutil.copytree(tiny_checkpoint, run / "checkpoint")
    # the split of another seed than the run's, to tell it from a fresh draw of either
    saved = zero_shot_split(tiny_data.items, tiny_data.catalogue, seed=5)
    saved.to_json(run / "split.json")
    summary = {"config": {"data": "tiny", "seed": 3}}
    (run / "train_summary.json").write_text(json.dumps(summary))
    args = ["probe", "--checkpoint", str(run / "checkpoint"), "--data", "tiny"]
    assert main([*args, "--out", str(tmp_path / "p"), "--max-train-items", "30"]) == 0
    assert "warning" not in capsys.readouterr().err
    res = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert res["split"]["source"] == str((run / "split.json").resolve())
    assert res["split"]["params"]["seed"] == 5 and res["train_recordings"] == 30
    # what `experiments` writes for this run: its split, its seed, its training cap
    api = probe_traits(
        load_clap(str(run / "checkpoint")),
        tiny_data,
        saved,
        tmp_path / "api",
        max_train_items=30,
        seed=3,
        progress=False,
    )
    assert res["unseen"] == api["unseen"] and res["seen"] == api["seen"]


def test_the_cli_warns_in_one_line_when_it_draws_a_fresh_split(tiny_checkpoint, tmp_path, capsys):
    from training.cli import main

    out = tmp_path / "ev"
    args = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", "tiny", "--seed", "2"]
    assert main([*args, "--out", str(out)]) == 0
    # stderr holds the progress bar too: the warning is its own line
    (warning,) = [line for line in capsys.readouterr().err.split("\n") if "warning" in line]
    assert warning.startswith("animalclap-train: warning: no run folder shows which split")
    assert warning.endswith(
        "some 'unseen' species may have been trained on (give --split RUN/split.json)"
    )
    res = json.loads((out / "eval.json").read_text())
    assert res["split"]["source"] == "a fresh zero-shot split of seed 2, not the checkpoint's own"
    assert "Split: " in (out / "eval.md").read_text()
    assert (
        main(
            [
                "probe",
                "--checkpoint",
                str(tiny_checkpoint),
                "--max-train-items",
                "0",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 2
    )
    assert "max_train_items 0: must be at least 1" in capsys.readouterr().err


def test_ties_count_against_the_true_label_in_the_error_profile_as_in_top1(tiny_catalogue):
    """The error profile's prediction was argmax (lowest index on a tie): a recording
    whose true species tied for the best score was wrong for top-1 (ties count against
    it) but right for the profile, so n_wrong disagreed with top-1."""
    from training.evaluate import zero_shot_scores

    cands = ["eurbla", "sonthr1", "eurrob1", "tawowl1"]
    true = ["eurbla", "eurbla", "sonthr1", "eurrob1"]
    text = np.eye(4)
    # rows 0, 1: the true species (index 0) ties with sonthr1; row 2: right, alone;
    # row 3: wrong, tawowl1 alone on top
    audio = np.array([[1, 1, 0, 0], [1, 1, 0.5, 0], [0, 1, 0, 0], [0, 0, 0.5, 1.0]])
    r = zero_shot_scores(audio, true, cands, text, tiny_catalogue)
    assert r["top1"] == 0.25 and r["errors"]["n_wrong"] == 3
    # Wilson's interval of 1 right in 4, worked by hand: (1 + z^2/2) / (4 + z^2) -+
    # z sqrt(1 * 3 / 4 + z^2 / 4) / (4 + z^2), z = 1.96
    assert r["top1_ci"] == pytest.approx((0.0456, 0.6994), abs=1e-4)
    # the tied rows' prediction is the other tied species, same genus (Turdus)
    assert r["errors"]["levels"]["genus"]["share"] == pytest.approx(2 / 3)
    collapsed = zero_shot_scores(np.ones((4, 4)), true, cands, text, tiny_catalogue)
    assert collapsed["top1"] == 0.0 and collapsed["errors"]["n_wrong"] == 4
    assert r["chance_top1"] == 0.25 and r["chance_top5"] == 1.0  # 5 of 4 candidates: all


def test_zero_shot_scores_a_chunk_of_recordings_at_a_time_as_the_whole_matrix(tiny_catalogue):
    """The "all" pool of a paper-size split is a 70k x 6,823 matrix (1.9 GB, and as
    much again in its top-1 mask) if scored at once; chunks must give the same figures,
    ties and the error profile's predictions included."""
    from training.evaluate import zero_shot_scores

    cands = list(tiny_catalogue.ids)
    rng = np.random.default_rng(1)
    true = [cands[i] for i in rng.integers(0, len(cands), size=37)]
    audio = rng.integers(-1, 2, size=(37, 6)).astype(np.float32)  # integers: many ties
    text = rng.integers(-1, 2, size=(len(cands), 6)).astype(np.float32)
    whole = zero_shot_scores(audio, true, cands, text, tiny_catalogue, chunk=37)
    assert 0 < whole["errors"]["n_wrong"] < 37  # some right, some wrong: a real check
    for chunk in (1, 5, 36, 1000):
        chunked = zero_shot_scores(audio, true, cands, text, tiny_catalogue, chunk=chunk)
        assert json.dumps(chunked, default=str) == json.dumps(whole, default=str), chunk


def test_data_too_small_for_a_split_is_told_with_the_options_evaluate_has(
    tiny_checkpoint, tmp_path, capsys
):
    """The split's own error named test_fraction, which evaluate does not take."""
    import soundfile as sf

    from training.cli import main

    folder = tmp_path / "two"
    (folder / "audio").mkdir(parents=True)
    rows = ["path,species_id,site,date"]
    for sp in ("eurbla", "sonthr1"):
        for i in range(3):
            sf.write(folder / "audio" / f"{sp}{i}.wav", np.zeros(8000, np.float32), 16000)
            rows.append(f"audio/{sp}{i}.wav,{sp},site{i},2024-04-0{i + 1}")
    (folder / "recordings.csv").write_text("\n".join(rows) + "\n")
    (folder / "catalogue.csv").write_text(
        "id,scientific_name,common_name,class,order,family,genus,regions\n"
        "eurbla,Turdus merula,Eurasian Blackbird,Aves,Passeriformes,Turdidae,Turdus,EU\n"
        "sonthr1,Turdus philomelos,Song Thrush,Aves,Passeriformes,Turdidae,Turdus,EU\n"
    )
    args = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(folder)]
    assert main([*args, "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--data {folder}: no zero-shot split can be drawn" in err
    assert "give --split with a split.json made for this data" in err
