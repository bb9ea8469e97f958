"""The sweep's aggregation and bar, on synthetic run folders (no training)."""

import dataclasses
import json

import pytest

from training.experiments import SweepConfig, aggregate, plot_ablation, results_page

LEVELS = ("genus", "family", "order", "class")


def _write_run(root, name, seed, top1, genus_share=0.3, probe=None):
    run = root / f"{name}-seed{seed}"
    (run / "eval").mkdir(parents=True)

    def q(acc):
        return {
            "n": 40,
            "candidates": 20,
            "top1": acc,
            "top5": min(1.0, acc * 3),
            "chance_top1": 0.05,
            "errors": {
                "n_wrong": 10,
                "levels": {
                    lvl: {"share": genus_share + 0.1 * i, "chance": 0.05 + 0.1 * i}
                    for i, lvl in enumerate(LEVELS)
                },
            },
        }

    ev = {"unseen": {k: q(v) for k, v in top1.items()}}
    (run / "eval" / "eval.json").write_text(json.dumps(ev))
    (run / "train_summary.json").write_text(json.dumps({"steps": 100}))
    if probe is not None:
        (run / "probe").mkdir()
        traits = {
            f"t{i}": {
                "accuracy": p,
                "baseline_accuracy": b,
                "macro_f1": p,
                "baseline_macro_f1": 0.1,
            }
            for i, (p, b) in enumerate(probe)
        }
        (run / "probe" / "probe.json").write_text(json.dumps({"unseen": {"traits": traits}}))


def _sweep(tmp_path, all_sci, com_sci, shuffled_tax, probe, com_probe=None, spread=0.01):
    cfg = SweepConfig(out=str(tmp_path), seeds=[0, 1, 2], variants=["all", "com", "all-shuffled"])
    for s in cfg.seeds:
        jitter = spread * s
        _write_run(
            tmp_path,
            "all",
            s,
            {"com": 0.3, "sci": all_sci + jitter, "tax": 0.4 + jitter, "tax-shuffled": 0.2},
            probe=probe,
        )
        _write_run(
            tmp_path,
            "com",
            s,
            {"com": 0.3, "sci": com_sci + jitter, "tax": 0.1 + jitter, "tax-shuffled": 0.1},
            probe=probe if com_probe is None else com_probe,
        )
        _write_run(
            tmp_path,
            "all-shuffled",
            s,
            {"com": 0.3, "sci": 0.3, "tax": shuffled_tax + jitter, "tax-shuffled": 0.3},
        )
    return cfg, aggregate(tmp_path, cfg)


def test_bar_passes_when_the_figures_do(tmp_path):
    cfg, summary = _sweep(tmp_path, 0.5, 0.1, 0.2, probe=[(0.6, 0.5)] * 9 + [(0.4, 0.5)])
    bar = summary["bar"]
    assert all(v["pass"] and v["status"] == "PASS" and v["seeds"] == 3 for v in bar.values()), bar
    row = summary["variants"]["all"]
    assert row["sci_top1"][0] == pytest.approx(0.51)
    assert row["sci_top1"][1] < 0.51 < row["sci_top1"][2]
    page = results_page(summary, cfg)
    assert "Every item of the bar passed" in page and "**FAIL**" not in page
    # with no bar item run (a --variants subset), nothing may be said to have passed
    empty = results_page({**summary, "bar": {}}, cfg)
    assert "Every item of the bar passed" not in empty and "No item of the bar was run" in empty
    assert page.startswith("# Results: AnimalCLAP findings on the procedural benchmark")
    real = results_page(summary, dataclasses.replace(cfg, data=str(tmp_path)))
    assert real.startswith(f"# Results: AnimalCLAP findings on `{tmp_path}`")
    assert plot_ablation(summary, tmp_path / "p.png").stat().st_size > 5000


def test_the_ablation_plot_leaves_the_callers_figures_alone(tmp_path, users_figure):
    _, summary = _sweep(tmp_path, 0.5, 0.1, 0.2, probe=[(0.6, 0.5)] * 10)
    plot_ablation(summary, tmp_path / "p.png")
    users_figure()


def test_bar_fails_and_the_page_says_what_did_not_reproduce(tmp_path):
    # all ~ com on sci (overlapping CIs), shuffled better than ordered, probe 7/10
    cfg, summary = _sweep(tmp_path, 0.11, 0.1, 0.6, probe=[(0.6, 0.5)] * 7 + [(0.4, 0.5)] * 3)
    bar = summary["bar"]
    failed = {k for k, v in bar.items() if not v["pass"]}
    assert "all beats com on sci top-1 (disjoint 95% CIs)" in failed
    assert "all beats com on tax top-1 (disjoint 95% CIs)" not in failed
    assert any("shuffled" in k for k in failed)
    assert any("80%" in k for k in failed)
    page = results_page(summary, cfg)
    assert "## What did not reproduce" in page and "**FAIL**" in page


def test_a_benchmark_size_is_written_once_and_reused(tmp_path):
    from training.experiments import materialise_benchmark

    folder = materialise_benchmark("tiny:2", tmp_path, progress=False)
    assert folder == str(tmp_path / "tiny-seed2")
    meta = json.loads((tmp_path / "tiny-seed2" / "benchmark.json").read_text())
    assert meta["seed"] == 2 and meta["counts"]["recordings"] == 200
    stamp = (tmp_path / "tiny-seed2" / "benchmark.json").stat().st_mtime_ns
    assert materialise_benchmark("tiny:2", tmp_path, progress=False) == folder
    assert (tmp_path / "tiny-seed2" / "benchmark.json").stat().st_mtime_ns == stamp
    assert materialise_benchmark(folder, tmp_path / "other") == folder  # folders pass through


def test_pending_runs_put_every_seed_of_the_bar_first_and_skip_finished(tmp_path):
    from training.experiments import pending_runs

    cfg = SweepConfig(out=str(tmp_path), seeds=[0, 1], variants=["tax", "com", "all"])
    _write_run(tmp_path, "com", 0, {"com": 0.3, "sci": 0.3, "tax": 0.3, "tax-shuffled": 0.3})
    # com is probed: an eval without a probe is not finished
    assert ("com", 0) in pending_runs(cfg, tmp_path)
    (tmp_path / "com-seed0" / "probe").mkdir()
    # a probe from before the permutation baseline is probed again
    (tmp_path / "com-seed0" / "probe" / "probe.json").write_text("{}")
    assert ("com", 0) in pending_runs(cfg, tmp_path)
    (tmp_path / "com-seed0" / "probe" / "probe.json").write_text('{"baselines": {}}')
    assert pending_runs(cfg, tmp_path) == [
        ("all", 0),
        ("all", 1),
        ("com", 1),
        ("tax", 0),
        ("tax", 1),
    ]


def test_a_sweep_rejects_bad_settings_before_training(tmp_path):
    from training.experiments import run_sweep

    with pytest.raises(ValueError, match="unknown variant"):
        run_sweep(SweepConfig(out=str(tmp_path), variants=["all", "bogus"]))
    with pytest.raises(ValueError, match="jobs 0"):
        run_sweep(SweepConfig(out=str(tmp_path), jobs=0))
    # an --out with another sweep's runs: its page would carry the new settings over
    # the old runs' figures (an audit found exactly that)
    old = SweepConfig(out=str(tmp_path / "sweep"), data="tiny", epochs=1)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps(old.__dict__))
    with pytest.raises(ValueError, match=r"holds runs of another sweep \(epochs 1, not 3"):
        run_sweep(SweepConfig(out=old.out, data="tiny", epochs=3, audio_config="small"))


@pytest.mark.slow
def test_a_parallel_sweep_trains_evaluates_probes_and_resumes(tmp_path):
    """Two runs side by side in spawned workers, then a re-run that trains nothing."""
    from training.experiments import run_sweep

    cfg = SweepConfig(
        out=str(tmp_path / "sweep"),
        data="tiny",
        seeds=[0],
        variants=["all", "com"],
        epochs=1,
        minutes=0.05,
        jobs=2,
        probe_items=200,
        results_md=str(tmp_path / "results.md"),
        records=str(tmp_path / "records"),
    )
    summary = run_sweep(cfg, progress=False)
    assert set(summary["variants"]) == {"all", "com"}
    for name in ("all", "com"):
        run = tmp_path / "sweep" / f"{name}-seed0"
        assert (run / "eval" / "eval.json").exists() and (run / "probe" / "probe.json").exists()
        assert json.loads((run / "train_summary.json").read_text())["config"]["precision"] == "bf16"
    stamp = (tmp_path / "sweep" / "all-seed0" / "checkpoint").stat().st_mtime_ns
    run_sweep(cfg, progress=False)
    assert (tmp_path / "sweep" / "all-seed0" / "checkpoint").stat().st_mtime_ns == stamp
    assert "## The bar" in (tmp_path / "results.md").read_text()
    # Another machine, a fresh --out: the records alone finish the sweep, nothing trains
    kept = tmp_path / "records" / "all-seed0"
    assert (kept / "probe" / "probe.json").is_file() and not (kept / "checkpoint").exists()
    elsewhere = dataclasses.replace(cfg, out=str(tmp_path / "elsewhere"))
    again = run_sweep(elsewhere, progress=False)
    assert not (tmp_path / "elsewhere" / "all-seed0" / "checkpoint").exists()
    assert not (tmp_path / "elsewhere" / "benchmark").exists()  # nothing to train on
    assert json.dumps(again["variants"]) == json.dumps(summary["variants"])  # NaN-safe


def test_an_item_on_fewer_than_three_seeds_is_pending_not_failed(tmp_path):
    cfg = SweepConfig(out=str(tmp_path), seeds=[0], variants=["all", "com"])
    _write_run(tmp_path, "all", 0, {"com": 0.3, "sci": 0.5, "tax": 0.5, "tax-shuffled": 0.2})
    _write_run(tmp_path, "com", 0, {"com": 0.3, "sci": 0.1, "tax": 0.1, "tax-shuffled": 0.1})
    summary = aggregate(tmp_path, cfg)
    item = summary["bar"]["all beats com on sci top-1 (disjoint 95% CIs)"]
    assert item["status"] == "PENDING" and item["seeds"] == 1
    page = results_page(summary, cfg)
    assert "Not decided yet (fewer than 3 seeds finished)" in page and "**FAIL**" not in page


def test_the_page_lists_passes_that_hold_on_means_only(tmp_path):
    # ordered 0.40 vs shuffled 0.38 with a wide seed spread; Com-only probes win every trait
    cfg, summary = _sweep(
        tmp_path, 0.5, 0.1, 0.38, probe=[(0.6, 0.5)] * 10, com_probe=[(0.7, 0.5)] * 10, spread=0.1
    )
    assert summary["bar"]["ordered beats shuffled taxonomy on tax top-1"]["status"] == "PASS"
    weak = results_page(summary, cfg).split("### Weaker than the paper, beyond the bar")[1]
    assert "Ordered beats shuffled taxonomy on means only" in weak
    assert "beats the Com-only one on 0/10 traits" in weak
    assert "mean 95% half-width" in weak


def test_no_weak_points_are_invented_when_the_figures_are_clear(tmp_path):
    cfg, summary = _sweep(
        tmp_path, 0.5, 0.1, 0.05, probe=[(0.7, 0.5)] * 10, com_probe=[(0.6, 0.5)] * 10
    )
    weak = results_page(summary, cfg).split("### Weaker than the paper, beyond the bar")[1]
    assert "means only" not in weak and "Com-only one" not in weak


def test_the_page_goes_into_out_unless_named_and_never_over_another_file(tmp_path):
    """The default was docs/results.md: any user's sweep replaced the shipped page."""
    from pathlib import Path

    from training.experiments import run_sweep, write_page

    shipped = Path(__file__).resolve().parents[2] / "docs" / "results.md"
    before = shipped.read_bytes()
    cfg, _ = _sweep(tmp_path, 0.5, 0.1, 0.2, probe=[(0.6, 0.5)] * 10)
    write_page(tmp_path, cfg)
    assert (tmp_path / "results.md").read_text().startswith("# Results: AnimalCLAP findings")
    assert (tmp_path / "results_ablation.png").stat().st_size > 5000
    assert shipped.read_bytes() == before
    # a named page takes its plot beside it, under its own name
    named = dataclasses.replace(cfg, results_md=str(tmp_path / "pages" / "mine.md"))
    write_page(tmp_path, named)
    page = (tmp_path / "pages" / "mine.md").read_text()
    assert "![ablation](mine_ablation.png)" in page
    assert (tmp_path / "pages" / "mine_ablation.png").is_file()
    write_page(tmp_path, named)  # its own page: replaced
    # any other file is refused, by the sweep before it trains for hours
    notes = tmp_path / "notes.md"
    notes.write_text("# My notes\n")
    other = dataclasses.replace(cfg, out=str(tmp_path / "new-sweep"), results_md=str(notes))
    with pytest.raises(FileExistsError, match=r"is not a results page written by .*--results"):
        run_sweep(other, progress=False)
    with pytest.raises(FileExistsError, match="is not a results page"):
        run_sweep(other, progress=False, report_only=True)
    assert notes.read_text() == "# My notes\n"
    assert not (tmp_path / "new-sweep").exists()
    nowhere = dataclasses.replace(cfg, out=str(tmp_path / "no-sweep"), results_md=None)
    with pytest.raises(FileNotFoundError, match=r"no-sweep: no such folder; --report-only"):
        run_sweep(nowhere, progress=False, report_only=True)


def test_the_written_by_line_gives_every_option_that_shaped_the_page(tmp_path):
    from training.experiments import written_by

    cfg, summary = _sweep(tmp_path, 0.5, 0.1, 0.2, probe=[(0.6, 0.5)] * 10)
    assert written_by(cfg) == (
        "animalclap-train experiments --data small --seeds 0 1 2 "
        "--variants all com all-shuffled --epochs 12 --audio-config fast --precision bf16 "
        f"--out {tmp_path}"
    )
    shipped = SweepConfig(results_md="docs/results.md", minutes=30.0)
    assert written_by(shipped) == (
        "animalclap-train experiments --data small --seeds 0 1 2 --epochs 12 --minutes 30 "
        "--audio-config fast --precision bf16 --results docs/results.md"
    )
    assert f"`{written_by(cfg)}`." in results_page(summary, cfg)


def test_the_written_by_line_pins_the_threads_the_runs_recorded(tmp_path):
    """The page said `experiments ... --epochs 12 ...` without --jobs 2: run so, each
    model trained on 2 threads instead of the records' 1, and seed 0 of `all` came out
    at 0.177 / 0.080 / 0.239 top-1 against the page's 0.111 / 0.128 / 0.150 (found by a
    researcher; the same command with 1 thread reproduced the record exactly)."""
    from training.experiments import written_by

    two = SweepConfig(results_md="docs/results.md", jobs=2)
    assert written_by(two, [1]) == (
        "animalclap-train experiments --data small --seeds 0 1 2 --epochs 12 "
        "--audio-config fast --precision bf16 --jobs 2 --threads 1 --results docs/results.md"
    )
    assert "--threads" not in written_by(two, [1, 2])  # runs of two counts: none pins both
    cfg, summary = _sweep(tmp_path, 0.5, 0.1, 0.2, probe=[(0.6, 0.5)] * 10)
    assert "--threads" not in results_page(summary, cfg)  # none recorded here


def test_the_page_warns_where_probes_used_the_old_multilabel_prior(tmp_path):
    """Probes written before the permutation baseline reported the label-frequency
    prior, which uninformative scores beat: a page of such runs says so."""
    cfg = SweepConfig(out=str(tmp_path), seeds=[0], variants=["all"])
    _write_run(tmp_path, "all", 0, {"com": 0.3, "sci": 0.5, "tax": 0.5, "tax-shuffled": 0.2})
    trait = {"mAP": 0.4, "baseline_mAP": 0.3, "f1": 0.3, "baseline_f1": 0.2}
    probe = tmp_path / "all-seed0" / "probe" / "probe.json"
    probe.parent.mkdir()
    probe.write_text(json.dumps({"unseen": {"traits": {"habitat": trait}}}))
    summary = aggregate(tmp_path, cfg)
    item = summary["bar"]["trait probe beats the baseline on >= 80% of traits (unseen species)"]
    assert item["multilabel_baseline"] == "label-frequency prior (old probes)"
    assert "1 probe(s) on this page scored multi-label traits against the old" in (
        results_page(summary, cfg)
    )
    probe.write_text(json.dumps({"baselines": {}, "unseen": {"traits": {"habitat": trait}}}))
    summary = aggregate(tmp_path, cfg)
    assert "old label-frequency prior" not in results_page(summary, cfg)


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_seed_with_no_wrong_prediction_leaves_the_error_profile_to_the_others(tmp_path):
    """A seed whose every unseen recording is right has NaN error shares: the page
    stopped with 'mean_ci: values contain NaN'."""
    cfg, _ = _sweep(tmp_path, 0.5, 0.1, 0.2, probe=[(0.6, 0.5)] * 10)
    nan = float("nan")

    def perfect(query):
        def change(ev):
            ev["unseen"][query]["top1"] = 1.0
            ev["unseen"][query]["errors"] = {
                "n_wrong": 0,
                "levels": {lvl: {"share": nan, "chance": nan} for lvl in LEVELS},
            }

        return change

    _edit(tmp_path / "all-seed1" / "eval" / "eval.json", perfect("com"))
    for s in cfg.seeds:  # no wrong tax prediction on any seed
        _edit(tmp_path / f"all-seed{s}" / "eval" / "eval.json", perfect("tax"))
    summary = aggregate(tmp_path, cfg)
    row = summary["variants"]["all"]
    assert row["err_com_genus_seeds"] == 2 and row["err_com_genus"][0] == pytest.approx(0.3)
    assert row["err_com_genus_chance"] == pytest.approx(0.05)
    assert row["err_tax_genus_seeds"] == 0
    item = summary["bar"][
        "wrong predictions stay in the right genus or family more than chance (tax)"
    ]
    assert item["status"] == "PENDING" and item["seeds"] == 0
    page = results_page(summary, cfg)
    assert "| all | com | 2/3 | 0.30 (0.05) |" in page
    assert "| all | tax | 0/3 | - | - | - | - |" in page


def test_a_trait_missing_from_one_seeds_probe_is_scored_on_the_others(tmp_path):
    """A trait with no known value among one seed's unseen species is absent from that
    seed's probe.json: the page stopped with a KeyError, or dropped the trait when the
    first seed was the one without it."""
    cfg, _ = _sweep(tmp_path, 0.5, 0.1, 0.2, probe=[(0.6, 0.5)] * 10)

    def drop(trait):
        return lambda probe: probe["unseen"]["traits"].pop(trait)

    _edit(tmp_path / "all-seed0" / "probe" / "probe.json", drop("t3"))
    _edit(tmp_path / "all-seed1" / "probe" / "probe.json", drop("t4"))
    for s in cfg.seeds:  # a trait the com model's probes never scored
        _edit(tmp_path / f"com-seed{s}" / "probe" / "probe.json", drop("t5"))
    summary = aggregate(tmp_path, cfg)
    probe = summary["variants"]["all"]["probe"]
    assert len(probe) == 10 and probe["t3"]["seeds"] == 2 and probe["t0"]["seeds"] == 3
    assert probe["t3"]["probe"][0] == pytest.approx(0.6)
    item = summary["bar"]["trait probe beats the baseline on >= 80% of traits (unseen species)"]
    assert item["traits_beating"] == "10/10" and item["traits_on_fewer_seeds"] == "t3, t4"
    page = results_page(summary, cfg)
    assert "| t3 | accuracy | 0.600 [0.600, 0.600] (2/3 seeds) |" in page
    assert "| t5 | accuracy | 0.600 [0.600, 0.600] | - |" in page


def test_the_page_gives_top5_chance_and_clips_intervals_to_0_1(tmp_path):
    """Three seeds' t interval around a small accuracy reached below 0 on the page,
    and only top-1 had a chance level beside it."""
    cfg, summary = _sweep(tmp_path, 0.01, 0.1, 0.2, probe=[(0.6, 0.5)] * 10, spread=0.2)
    m, lo, hi = summary["variants"]["all"]["sci_top1"]
    assert lo < 0 < m  # results.json keeps the interval as computed
    page = results_page(summary, cfg)
    assert f" {m:.3f} [0.000, {hi:.3f}] |" in page
    assert "clipped to [0, 1]" in page
    assert "Chance top-1: 0.050; top-5: 0.250." in page  # 20 candidates


def _with_probe_baselines(root):
    """Synthetic probes as the permutation-baseline probe writes them (finished runs)."""
    for path in root.glob("*/probe/probe.json"):
        probe = json.loads(path.read_text())
        path.write_text(json.dumps({**probe, "baselines": {}}))


def test_a_page_is_written_from_records_alone_and_records_refuse_another_sweep(tmp_path):
    from training.experiments import run_sweep

    records = tmp_path / "records"
    cfg, expected = _sweep(records, 0.3, 0.1, 0.2, probe=[(0.6, 0.2)] * 4)
    _with_probe_baselines(records)
    cfg = dataclasses.replace(
        cfg, out=str(tmp_path / "out"), records=str(records), results_md=str(tmp_path / "r.md")
    )
    summary = run_sweep(cfg, progress=False, report_only=True)
    assert summary["variants"] == expected["variants"]
    assert (tmp_path / "out" / "com-seed2" / "eval" / "eval.json").is_file()
    assert "--records " in (tmp_path / "r.md").read_text()  # the command that rewrites it
    (records / "sweep.json").write_text(json.dumps({**cfg.__dict__, "epochs": 3}))
    with pytest.raises(ValueError, match=r"records holds runs of another sweep \(epochs 3"):
        run_sweep(cfg, progress=False, report_only=True)


def test_a_copy_of_a_record_cut_short_does_not_count_as_finished(tmp_path, monkeypatch):
    """The copy goes through a temporary name: a crash mid-copy leaves no eval.json."""
    import shutil

    from training import experiment_records as rec

    _sweep(tmp_path / "out", 0.3, 0.1, 0.2, probe=None)

    copy = shutil.copyfile

    def dies_on_eval(src, dst):
        if not str(src).endswith("eval.json"):
            return copy(src, dst)
        with open(dst, "w") as f:
            f.write("{")  # the first byte, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", dies_on_eval)
    with pytest.raises(OSError, match="No space"):
        rec.keep(tmp_path / "out", tmp_path / "records", "all-shuffled-seed0")
    assert not (tmp_path / "records" / "all-shuffled-seed0" / "eval" / "eval.json").exists()
    assert not list((tmp_path / "records").rglob("*.tmp"))


def test_the_page_names_the_machines_and_warns_when_runs_mix_them(tmp_path):
    """bf16 CPU training does not repeat across processors: seed 0 of `all` moved by
    0.035 top-1 between two machines, so a page mixing them must say so."""
    cfg, summary = _sweep(tmp_path, 0.3, 0.1, 0.2, probe=[(0.6, 0.2)] * 4)
    assert summary["machines"] == {"not recorded": 9}
    assert "more than one machine" not in results_page(summary, cfg)
    for k, path in enumerate(sorted(tmp_path.glob("*-seed*/train_summary.json"))):
        cpu = "Intel Xeon" if k < 6 else "AMD EPYC"
        if k != 8:  # one run from before the field: listed, not a third machine
            path.write_text(json.dumps({"steps": 100, "machine": {"cpu": cpu, "torch": "2.13"}}))
    summary = aggregate(tmp_path, cfg)
    page = results_page(summary, cfg)
    assert summary["machines"] == {
        "Intel Xeon, torch 2.13": 6,
        "AMD EPYC, torch 2.13": 2,
        "not recorded": 1,
    }
    assert "Intel Xeon, torch 2.13 (6 run(s))" in page and "more than one machine" in page


def test_the_page_gives_each_runs_final_loss_and_names_those_that_barely_trained(tmp_path):
    """`all` seed 1 ended at loss 2.62 against a plateau of ln(16) = 2.77 and scored at
    chance on its own training recordings: a run's figures mean little without it."""
    from training.train import loss_summary

    cfg, _ = _sweep(tmp_path, 0.3, 0.1, 0.2, probe=[(0.6, 0.2)] * 4)
    for path in sorted(tmp_path.glob("*-seed*/train_summary.json")):
        stuck = path.parent.name == "all-seed1"
        curve = [2.8] * 60 + [2.62 if stuck else 1.5] * 60
        path.write_text(json.dumps({"steps": 120, "loss": loss_summary(curve, 16)}))
    (tmp_path / "com-seed2" / "train_summary.json").write_text(json.dumps({"steps": 120}))
    page = results_page(aggregate(tmp_path, cfg), cfg)
    assert "| all | 0,1,2 | 120/120/120 | 1.50/2.62/1.50 |" in page
    assert "| com | 0,1,2 | 120/120/120 | 1.50/1.50/- |" in page  # not recorded: "-"
    assert "ln(batch) = 2.77" in page and "last 50 steps" in page
    assert "so barely trained: `all` seed 1 (2.62)." in page
    assert "`com`" not in page.split("so barely trained:")[1].split("\n")[0]


def test_loss_summary_is_the_ends_of_the_curve_beside_the_plateau():
    import math

    from training.train import loss_summary

    s = loss_summary([3.0] * 50 + [2.0] * 100 + [1.0] * 50, 16)
    assert s == {"first": 3.0, "last": 1.0, "plateau": math.log(16), "window": 50}
    assert loss_summary([], 16)["last"] is None  # a run that stopped before its first step


def test_a_page_written_again_keeps_its_hand_written_preface(tmp_path):
    """README's command, run from the committed records, rewrote docs/results.md with the
    same figures and without its 44-line note on how the page was made."""
    from training.experiments import write_page

    cfg, _ = _sweep(tmp_path, 0.5, 0.1, 0.2, probe=[(0.6, 0.5)] * 10)
    cfg = dataclasses.replace(cfg, results_md=str(tmp_path / "page.md"))
    write_page(tmp_path, cfg)
    fresh = (tmp_path / "page.md").read_text()
    title, _, rest = fresh.partition("\n")
    note = ["> **How this page was made.** By hand,", "> over two lines."]
    (tmp_path / "page.md").write_text("\n".join([title, "", *note, "", rest.lstrip("\n")]))
    write_page(tmp_path, cfg)
    again = (tmp_path / "page.md").read_text()
    # the generated page as before, the note under its title
    assert again == "\n".join([title, "", *note, ""]) + "\n" + rest.lstrip("\n")
    write_page(tmp_path, cfg)  # and kept once, not twice, on every rewrite
    assert (tmp_path / "page.md").read_text() == again
