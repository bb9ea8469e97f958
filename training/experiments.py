"""The paper's comparisons, run end to end: prompt ablation, ordered vs shuffled
taxonomy, error profile, trait probes, over several seeds, into a results page
(OUT/results.md; the shipped docs/results.md is written with `--results docs/results.md`).

One run per (variant, seed): train for a fixed number of steps on the zero-shot
split of that seed, evaluate on the unseen species, and probe traits (for the all-templates and
Com-only models: the paper's Table 5 pair). Variants of one seed share the split, so
comparisons are paired. Finished runs are skipped, so an interrupted sweep resumes.
The bar the issue sets is checked from the aggregated figures and written down
whichever way it falls.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from animalclap_edge.contracts.prompts import ALL_TEMPLATES
from training.metrics import intervals_disjoint, mean_ci
from training.probe import score_keys

ALL = [t.value for t in ALL_TEMPLATES]
# name -> (templates drawn in training, shuffled taxonomy)
VARIANTS: dict[str, tuple[list[str], bool]] = {
    "all": (ALL, False),
    "com": (["com"], False),
    "sci": (["sci"], False),
    "tax": (["tax"], False),
    "all-shuffled": (ALL, True),
}
PROBED = ("all", "com")
QUERIES = ("com", "sci", "tax")


# Bar comparisons first, so a sweep stopped part-way has the paired runs the bar needs.
PRIORITY = ("all", "com", "all-shuffled")


@dataclass
class SweepConfig:
    out: str = "runs/experiments"
    data: str = "small"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    # A step budget (epochs of 30 clips per seen species), not a time budget, so a
    # run's result does not depend on how busy the machine was. On `small`, 12
    # epochs = 3060 steps; "fast" audio leaves the ln(batch) plateau after ~800.
    epochs: int = 12
    minutes: float | None = None  # optional wall-clock cap per run, on top of epochs
    audio_config: str = "fast"
    precision: str = "bf16"
    # Runs trained side by side, each on cpu_count/jobs threads: two 1-thread runs
    # do 1.6x the steps per second of one 2-thread run on a 2-core machine.
    jobs: int = 1
    threads: int | None = None  # per run; default cpu_count // jobs
    probe_items: int = 2000
    # None: OUT/results.md. The shipped page is written only when named (--results
    # docs/results.md): a user's sweep used to replace it by default.
    results_md: str | None = None
    # Folder of the finished runs' figures without checkpoints (experiment_records):
    # runs there count as finished, and each run is copied there as it finishes.
    records: str | None = None


# The first line of every page results_page writes: a file without it is not replaced.
PAGE_TITLE = "# Results: AnimalCLAP findings on "
DEFAULT_OUT = SweepConfig.out


def page_path(cfg: SweepConfig) -> Path:
    """Where the results page goes: --results, else OUT/results.md."""
    return Path(cfg.results_md) if cfg.results_md else Path(cfg.out) / "results.md"


def plot_path(page: Path) -> Path:
    """The ablation plot beside the page, named after it (results.md ->
    results_ablation.png), so that pages in one folder do not share a plot."""
    return page.with_name(f"{page.stem}_ablation.png")


def _refuse_foreign_page(page: Path) -> None:
    """The page may replace a results page, never another file (checked before a sweep
    trains for hours, not when it writes)."""
    if page.is_dir():
        raise FileExistsError(f"--results {page} is a folder: give the path of a .md file")
    if not page.exists():
        return
    with page.open(encoding="utf-8", errors="replace") as f:
        first = f.readline()
    if not first.startswith(PAGE_TITLE):
        raise FileExistsError(
            f"--results {page} exists and is not a results page written by "
            "`animalclap-train experiments`: give another --results (default: OUT/results.md)"
        )


def pending_runs(cfg: SweepConfig, root: Path) -> list[tuple[str, int]]:
    """(variant, seed) pairs not finished yet, bar comparisons of every seed first."""
    order = [v for v in PRIORITY if v in cfg.variants]
    order += [v for v in cfg.variants if v not in order]
    head = [(v, s) for s in cfg.seeds for v in order if v in PRIORITY]
    tail = [(v, s) for s in cfg.seeds for v in order if v not in PRIORITY]
    return [(v, s) for v, s in head + tail if not _finished(root / run_name(v, s), v)]


def _finished(run: Path, name: str) -> bool:
    if not (run / "eval" / "eval.json").exists():
        return False
    if name not in PROBED:
        return True
    # A probe from before the permutation baseline reported the label-frequency prior
    # as its multi-label baseline: probed again (the checkpoint is kept, not retrained).
    probe = _load(run / "probe" / "probe.json")
    return probe is not None and "baselines" in probe


# What the finished runs in --out were trained with: a sweep that resumes them under
# other values would write its values on a page of the old runs' figures.
SWEEP_IDENTITY = ("data", "epochs", "minutes", "audio_config", "precision", "probe_items")


def _refuse_another_sweep(root: Path, cfg: SweepConfig, option: str = "--out") -> None:
    from training.identity import refuse_other_settings

    refuse_other_settings(
        root / "sweep.json",
        cfg.__dict__,
        SWEEP_IDENTITY,
        "runs of another sweep",
        f"give a new {option}, or the same settings to add seeds or variants to it",
    )


def run_name(variant: str, seed: int) -> str:
    """The folder of one (variant, seed) run, in --out and in --records."""
    return f"{variant}-seed{seed}"


def _variant_of_runs(cfg: SweepConfig) -> dict[str, str]:
    return {run_name(v, s): v for v in cfg.variants for s in cfg.seeds}


def _sync_records(root: Path, cfg: SweepConfig) -> None:
    """Restore the runs --records holds into --out, and keep there those only --out has."""
    if cfg.records is None:
        return
    from training import experiment_records as rec

    restored, kept = rec.sync(root, Path(cfg.records), _variant_of_runs(cfg), _finished)
    if restored or kept:
        print(
            f"records {cfg.records}: {len(restored)} finished run(s) restored into {root}, "
            f"{len(kept)} run(s) of {root} kept there"
        )


def run_sweep(cfg: SweepConfig, progress: bool = True, report_only: bool = False) -> dict:
    """Train, evaluate and probe every (variant, seed) not done yet; write the page.

    report_only: train nothing; aggregate the runs already finished (e.g. while a
    sweep is still running elsewhere) and write the page from them."""
    unknown = [v for v in cfg.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if cfg.jobs < 1:
        raise ValueError(f"jobs {cfg.jobs}: must be at least 1")
    _refuse_foreign_page(page_path(cfg))
    root = Path(cfg.out)
    if cfg.records is not None:
        _refuse_another_sweep(Path(cfg.records), cfg, "--records")
    if report_only:
        if cfg.records is not None:  # the page of the records alone, or with --out's runs
            root.mkdir(parents=True, exist_ok=True)
            _sync_records(root, cfg)
        if not root.is_dir():
            raise FileNotFoundError(
                f"--out {root}: no such folder; --report-only writes the page of the runs "
                "a sweep has finished there (give that sweep's --out)"
            )
        return write_page(root, cfg)
    root.mkdir(parents=True, exist_ok=True)
    _refuse_another_sweep(root, cfg)
    (root / "sweep.json").write_text(json.dumps(cfg.__dict__, indent=2), encoding="utf-8")
    if cfg.records is not None:
        from training.experiment_records import write_settings

        write_settings(Path(cfg.records), cfg.__dict__)
        _sync_records(root, cfg)
    todo = pending_runs(cfg, root)
    # the benchmark only for runs to train: with every record present (another
    # machine finishing the page) writing it cost minutes for nothing
    data_spec = materialise_benchmark(cfg.data, root / "benchmark", progress) if todo else ""
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // cfg.jobs)
    print(f"{len(todo)} run(s) to do, {cfg.jobs} at a time on {threads} thread(s) each")
    if cfg.jobs == 1:
        for name, seed in todo:
            run_one(cfg, data_spec, name, seed, threads, progress)
            _keep_record(root, cfg, name, seed)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: a fresh interpreter per worker (fork after torch has threads is unsafe).
        with ProcessPoolExecutor(cfg.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {
                pool.submit(run_one, cfg, data_spec, n, s, threads, False): (n, s) for n, s in todo
            }
            for fut in as_completed(futures):
                n, s = futures[fut]
                fut.result()  # a failed run stops the sweep with its own error
                _keep_record(root, cfg, n, s)
                print(f"== {run_name(n, s)}: done", flush=True)
    return write_page(root, cfg)


def _keep_record(root: Path, cfg: SweepConfig, name: str, seed: int) -> None:
    if cfg.records is not None:
        from training.experiment_records import keep

        keep(root, Path(cfg.records), run_name(name, seed))


def write_page(root: Path, cfg: SweepConfig) -> dict:
    """Aggregate the finished runs under root into results.json and the results page."""
    summary = aggregate(root, cfg)
    (root / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    page = page_path(cfg)
    _refuse_foreign_page(page)
    page.parent.mkdir(parents=True, exist_ok=True)
    plot_ablation(summary, plot_path(page))
    preface = kept_preface(page.read_text(encoding="utf-8")) if page.is_file() else []
    page.write_text(with_preface(results_page(summary, cfg), preface), encoding="utf-8")
    return summary


def kept_preface(page: str) -> list[str]:
    """The hand-written quote (`> ` lines) right under the title of a page written
    before: kept when the page is written again. The README's command rewrote the
    shipped page from its records and dropped its 44-line note on how it was made."""
    lines = page.splitlines()
    if not lines or not lines[0].startswith(PAGE_TITLE):
        return []
    i = 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    quote = []
    while i < len(lines) and lines[i].startswith(">"):
        quote.append(lines[i])
        i += 1
    return quote


def with_preface(page: str, preface: list[str]) -> str:
    """`page` with `preface` (kept_preface's lines) under its title."""
    if not preface:
        return page
    title, _, rest = page.partition("\n")
    return "\n".join([title, "", *preface, ""]) + "\n" + rest.lstrip("\n")


def run_one(
    cfg: SweepConfig, data_spec: str, name: str, seed: int, threads: int, progress: bool
) -> Path:
    """Train (unless a checkpoint exists), evaluate and probe one (variant, seed)."""
    import torch

    from training.evaluate import EvalConfig, evaluate
    from training.labelled_audio import open_labelled
    from training.model import load_clap
    from training.probe import probe_traits
    from training.splits import ZeroShotSplit
    from training.train import TrainConfig, train

    torch.set_num_threads(threads)
    run = Path(cfg.out) / run_name(name, seed)
    templates, shuffle = VARIANTS[name]
    if not (run / "checkpoint").exists():
        print(f"== {run.name}: train {cfg.epochs} epochs", flush=True)
        train(
            TrainConfig(
                out=str(run),
                data=data_spec,
                seed=seed,
                templates=templates,
                shuffle_tax=shuffle,
                epochs=cfg.epochs,
                max_minutes=cfg.minutes,
                split="zeroshot",
                audio_config=cfg.audio_config,
                precision=cfg.precision,
                threads=threads,
            ),
            progress=progress,
        )
    data = open_labelled(data_spec)
    loaded = load_clap(str(run / "checkpoint"))
    split = ZeroShotSplit.from_json(run / "split.json")
    source = str((run / "split.json").resolve())
    evaluate(
        loaded,
        data,
        split,
        run / "eval",
        EvalConfig(seed=seed),
        progress=progress,
        split_source=source,
    )
    if name in PROBED:
        probe_traits(
            loaded,
            data,
            split,
            run / "probe",
            max_train_items=cfg.probe_items,
            seed=seed,
            progress=progress,
            split_source=source,
        )
    return run


def materialise_benchmark(spec: str, folder: Path, progress: bool = True) -> str:
    """A benchmark size ("small", "small:3") is written to disk once and reused.

    Every run of a sweep reads the same audio, and decoding FLAC is ~10x cheaper
    than rendering the calls again in each run. Folders pass through unchanged.
    """
    from training.benchmark.corpus import SIZES, Benchmark

    size, _, seed = spec.partition(":")
    if Path(spec).is_dir() or size not in SIZES:
        return spec
    target = folder / f"{size}-seed{int(seed or 0)}"
    if not (target / "benchmark.json").exists():
        bench = Benchmark.build(size, seed=int(seed or 0))
        bench.write(
            target, workers=max(1, (os.cpu_count() or 1)), progress=progress, overwrite=True
        )
    return str(target)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def aggregate(root: Path, cfg: SweepConfig) -> dict:
    """Means and 95% t intervals over seeds for every figure the page reports."""
    runs: dict[str, list[dict]] = {v: [] for v in cfg.variants}
    for name in cfg.variants:
        for seed in cfg.seeds:
            run = root / run_name(name, seed)
            ev = _load(run / "eval" / "eval.json")
            if ev is None:
                continue
            runs[name].append(
                {
                    "seed": seed,
                    "eval": ev,
                    "probe": _load(run / "probe" / "probe.json"),
                    "train": _load(run / "train_summary.json"),
                }
            )
    table: dict = {}
    for name, rs in runs.items():
        if not rs:
            continue
        row: dict = {"seeds": [r["seed"] for r in rs]}
        queries = [*QUERIES, "tax-shuffled"]
        for q in queries:
            for k in ("top1", "top5"):
                row[f"{q}_{k}"] = mean_ci([r["eval"]["unseen"][q][k] for r in rs])
        row["chance_top1"] = float(np.mean([r["eval"]["unseen"]["com"]["chance_top1"] for r in rs]))
        # k/N, from the candidate count (eval.json files before chance_top5 lack it)
        cands = [r["eval"]["unseen"]["com"]["candidates"] for r in rs]
        row["chance_top5"] = float(np.mean([min(5, c) / c for c in cands]))
        levels = ("genus", "family", "order", "class")
        for q in QUERIES:
            for lvl in levels:
                # A seed with no wrong top-1 prediction has no error profile (NaN
                # shares): the figure is over the seeds that have one, and says how many.
                prof = [r["eval"]["unseen"][q]["errors"]["levels"][lvl] for r in rs]
                share, n = _finite_ci([p["share"] for p in prof])
                row[f"err_{q}_{lvl}"] = share
                row[f"err_{q}_{lvl}_seeds"] = n
                chance = [p["chance"] for p in prof if math.isfinite(p["chance"])]
                row[f"err_{q}_{lvl}_chance"] = float(np.mean(chance)) if chance else math.nan
        probes = [r["probe"] for r in rs if r["probe"]]
        if probes:
            row["probe"] = _probe_summary(probes)
            row["probe_prior_baseline"] = _prior_baselines(probes)
        row["train_steps"] = [r["train"]["steps"] if r["train"] else None for r in rs]
        row["train_loss"] = [(r["train"] or {}).get("loss") for r in rs]  # None: not recorded
        table[name] = row
    threads = {
        (r["train"] or {}).get("config", {}).get("threads") for rs in runs.values() for r in rs
    }
    return {
        "variants": table,
        "bar": check_bar(table),
        "machines": _machines(runs),
        # torch threads per run, as recorded: they change the model (float sums in
        # another order from the first step), so the page's command pins them
        "threads": sorted(t for t in threads if t),
    }


NOT_RECORDED = "not recorded"


def _machines(runs: dict[str, list[dict]]) -> dict[str, int]:
    """Runs per processor and torch they trained on (bf16 training repeats only on one)."""
    found: Counter = Counter()
    for rs in runs.values():
        for r in rs:
            m = (r["train"] or {}).get("machine")
            t = (r["train"] or {}).get("config", {}).get("threads")
            on = f", {t} thread(s)" if t else ""
            found[f"{m['cpu']}, torch {m['torch']}{on}" if m else NOT_RECORDED] += 1
    return dict(found.most_common())


def _prior_baselines(probes: list[dict]) -> int:
    """How many of these probes scored multi-label traits against the label-frequency
    prior (probes written before the permutation baseline; no "baselines" entry)."""
    return sum(
        "baselines" not in p
        and any(score_keys(v)[0] == "mAP" for v in p["unseen"]["traits"].values())
        for p in probes
    )


def _finite_ci(values: list[float]) -> tuple[tuple[float, float, float], int]:
    """mean_ci over the finite values, and how many there were; (NaN, NaN, NaN), 0
    where none is."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return (math.nan, math.nan, math.nan), 0
    return mean_ci(finite), len(finite)


def _probe_summary(probes: list[dict]) -> dict:
    """Per trait of any seed's probe, means over the seeds that scored it: a trait no
    unseen species of a seed has a known value for is missing from that seed's probe."""
    # The schema's order: a trait first met in a later seed goes after the trait that
    # precedes it there, not to the end of the table.
    order: list[str] = []
    for p in probes:
        prev = None
        for trait in p["unseen"]["traits"]:
            if trait not in order:
                order.insert(order.index(prev) + 1 if prev else 0, trait)
            prev = trait
    out: dict = {}
    for trait in order:
        vals = [p["unseen"]["traits"][trait] for p in probes if trait in p["unseen"]["traits"]]
        key, f1 = score_keys(vals[0])
        figures = {
            "probe": key,
            "baseline": "baseline_" + key,
            "f1": f1,
            "baseline_f1": "baseline_" + f1,
        }
        out[trait] = {"metric": key, "seeds": len(vals), "of_seeds": len(probes)}
        for name, k in figures.items():
            out[trait][name] = _finite_ci([v[k] for v in vals])[0]
    return out


MIN_SEEDS = 3  # the issue asks for 95% intervals over at least 3 seeds


def check_bar(table: dict) -> dict:
    """The issue's bar, each item with the figures it was decided on and the number of
    seeds behind it; an item on fewer than MIN_SEEDS seeds is pending, not decided."""
    bar = _bar_items(table)
    for v in bar.values():
        n = min(len(table[name]["seeds"]) for name in v.pop("_variants"))
        n = min(n, v.pop("_seeds", n))  # seeds that have the figures the item compares
        v["seeds"] = n
        v["status"] = ("PASS" if v["pass"] else "FAIL") if n >= MIN_SEEDS else "PENDING"
    return bar


def _bar_items(table: dict) -> dict:
    bar: dict = {}
    if "all" in table and "com" in table:
        for q in ("sci", "tax"):
            a, c = table["all"][f"{q}_top1"], table["com"][f"{q}_top1"]
            bar[f"all beats com on {q} top-1 (disjoint 95% CIs)"] = {
                "pass": bool(a[0] > c[0] and intervals_disjoint(a, c)),
                "all": a,
                "com": c,
                "_variants": ("all", "com"),
            }
    if "all" in table and "all-shuffled" in table:
        a, s = table["all"]["tax_top1"], table["all-shuffled"]["tax_top1"]
        bar["ordered beats shuffled taxonomy on tax top-1"] = {
            "pass": bool(a[0] > s[0]),
            "ordered": a,
            "shuffled": s,
            "_variants": ("all", "all-shuffled"),
        }
    if "all" in table:
        row = table["all"]
        ok = {
            lvl: bool(row[f"err_tax_{lvl}"][0] > row[f"err_tax_{lvl}_chance"])
            for lvl in ("genus", "family")
        }
        bar["wrong predictions stay in the right genus or family more than chance (tax)"] = {
            "pass": any(ok.values()),
            "_variants": ("all",),
            "_seeds": row["err_tax_genus_seeds"],
            **{
                lvl: [round(row[f"err_tax_{lvl}"][0], 3), round(row[f"err_tax_{lvl}_chance"], 3)]
                for lvl in ok
            },
        }
        if "probe" in row:
            beats = [t for t, v in row["probe"].items() if v["probe"][0] > v["baseline"][0]]
            n = len(row["probe"])
            partial = [t for t, v in row["probe"].items() if v["seeds"] < v["of_seeds"]]
            bar["trait probe beats the baseline on >= 80% of traits (unseen species)"] = {
                "pass": len(beats) >= math.ceil(0.8 * n),
                "traits_beating": f"{len(beats)}/{n}",
                **({"traits_on_fewer_seeds": ", ".join(partial)} if partial else {}),
                **(
                    {"multilabel_baseline": "label-frequency prior (old probes)"}
                    if row["probe_prior_baseline"]
                    else {}
                ),
                "_variants": ("all",),
            }
    return bar


def _fmt(ci) -> str:
    """mean [lo, hi]; the bounds clipped to [0, 1], where every figure on the page
    lies (a t interval over three seeds near 0 or 1 reaches past it)."""
    m, lo, hi = ci
    if math.isnan(m):
        return "-"
    if math.isnan(lo):
        return f"{m:.3f}"
    return f"{m:.3f} [{max(lo, 0.0):.3f}, {min(hi, 1.0):.3f}]"


def results_page(summary: dict, cfg: SweepConfig) -> str:
    t = summary["variants"]
    names = [v for v in VARIANTS if v in t]
    seeds = sorted({s for v in t.values() for s in v["seeds"]})
    from training.benchmark.corpus import is_procedural

    on = "the procedural benchmark" if is_procedural(cfg.data) else f"`{cfg.data}`"
    lines = [
        f"{PAGE_TITLE}{on}",
        "",
        "Regenerate with the command this page was written by:",
        f"`{written_by(cfg, summary.get('threads', []))}`.",
        f"Benchmark `{cfg.data}`; seeds {seeds}; each model trained for {cfg.epochs} epochs on",
        f"the CPU from the small config with its `{cfg.audio_config}` audio variant, from",
        "scratch (no pretrained weights). Figures are means with",
        "95% Student-t intervals over the seeds that finished (the `seeds` column), shown",
        "clipped to [0, 1] (results.json keeps them unclipped); each",
        "seed has its own zero-shot split, shared by every variant of that seed. Accuracy is on recordings of unseen species,",
        "ranked among the unseen species only.",
        "",
        *_machines_lines(summary.get("machines", {})),
        "## The bar",
        "",
    ]
    for item, v in summary["bar"].items():
        figures = {
            k: (_fmt(x) if isinstance(x, list | tuple) and len(x) == 3 else x)
            for k, x in v.items()
            if k not in ("pass", "status")
        }
        lines.append(f"- **{v['status']}**: {item}: {figures}")
    lines += [
        "",
        "## Unseen-species accuracy by training prompts (Table 3)",
        "",
        "| trained on | seeds | steps | final train loss | com top-1 | sci top-1 | tax top-1 | com top-5 | sci top-5 | tax top-5 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        r = t[n]
        cells = [_fmt(r[f"{q}_{k}"]) for k in ("top1", "top5") for q in QUERIES]
        steps = "/".join(str(s) for s in r["train_steps"])
        seeds_n = ",".join(str(x) for x in r["seeds"])
        loss = "/".join("-" if not x else f"{x['last']:.2f}" for x in r["train_loss"])
        lines.append(f"| {n} | {seeds_n} | {steps} | {loss} | " + " | ".join(cells) + " |")
    if names:
        r = t[names[0]]
        lines.append(f"\nChance top-1: {r['chance_top1']:.3f}; top-5: {r['chance_top5']:.3f}.")
        lines += _loss_lines(t)
    lines += [
        "",
        f"![ablation]({plot_path(page_path(cfg)).name})",
        "",
        "## Ordered against shuffled taxonomy (Table 4)",
        "",
        "| trained on | tax query, ordered | tax query, shuffled |",
        "|---|---|---|",
    ]
    for n in ("all", "all-shuffled"):
        if n in t:
            lines.append(f"| {n} | {_fmt(t[n]['tax_top1'])} | {_fmt(t[n]['tax-shuffled_top1'])} |")
    lines += [
        "",
        "## Where wrong predictions land (Fig. 3)",
        "",
        "Share of wrong top-1 predictions that are still right at each rank (chance share",
        "in brackets: the wrong species drawn at random from the other unseen species),",
        "averaged over the seeds with at least one wrong prediction (`seeds`).",
        "",
        "| model | query | seeds | genus | family | order | class |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        for q in QUERIES:
            r = t[n]
            cells = [
                "-"
                if math.isnan(r[f"err_{q}_{lvl}"][0])
                else f"{r[f'err_{q}_{lvl}'][0]:.2f} ({r[f'err_{q}_{lvl}_chance']:.2f})"
                for lvl in ("genus", "family", "order", "class")
            ]
            seeds_n = f"{r[f'err_{q}_genus_seeds']}/{len(r['seeds'])}"
            lines.append(f"| {n} | {q} | {seeds_n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Embedding maps (Fig. 2) for each run: `<run>/eval/embedding_map.png`.",
        "",
        "## Trait probes on unseen species (Table 5)",
        "",
        "Linear heads on the frozen encoder, 5 epochs, fitted on training-species",
        "recordings and scored on the unseen species. Categorical traits: accuracy",
        "against the training majority; multi-label: mAP against a permutation baseline",
        "(the probe's own scores with the species' trait rows shuffled across species,",
        "the mean of 100 seeded permutations: what scores with no trait information reach).",
        "The training majority is below chance where the unseen species' classes differ",
        "from the training ones; each probe.json since 2026-11-29 also holds a guess at the",
        "training frequencies and 1/K per categorical trait (`beats_chance`).",
        "",
        *_prior_baseline_note(t),
        "| trait | metric | all templates | com only | baseline |",
        "|---|---|---|---|---|",
    ]
    if "all" in t and "probe" in t["all"]:
        for trait, v in t["all"]["probe"].items():
            com = t.get("com", {}).get("probe", {}).get(trait)
            lines.append(
                f"| {trait} | {v['metric']} | {_fmt(v['probe'])}{_on_fewer(v)} | "
                f"{_fmt(com['probe']) + _on_fewer(com) if com else '-'} | "
                f"{_fmt(v['baseline'])} |"
            )
        lines += [
            "",
            "A trait that no unseen species of a seed has a known value for is scored on",
            "the other seeds only; the count is given where that happened.",
        ]
    lines += [
        "",
        "## What did not reproduce",
        "",
    ]
    failed = [k for k, v in summary["bar"].items() if v["status"] == "FAIL"]
    pending = [k for k, v in summary["bar"].items() if v["status"] == "PENDING"]
    if pending:
        lines += [
            f"Not decided yet (fewer than {MIN_SEEDS} seeds finished): " + "; ".join(pending),
            "",
        ]
    if failed:
        lines += [f"- {k}" for k in failed]
        lines += [
            "",
            "See the figures above; the generator was not tuned to change these results.",
        ]
    elif not summary["bar"]:
        lines.append(
            "No item of the bar was run: it compares the `all` variant with `com` and "
            "`all-shuffled` (`--variants` left them out)."
        )
    elif not pending:
        lines.append("Every item of the bar passed in this run.")
    lines += _weak_points(summary)
    return "\n".join(lines) + "\n"


def _on_fewer(v: dict) -> str:
    """' (k/n seeds)' for a probe figure over fewer seeds than the variant has."""
    return f" ({v['seeds']}/{v['of_seeds']} seeds)" if v["seeds"] < v["of_seeds"] else ""


def _prior_baseline_note(t: dict) -> list[str]:
    """A warning where probes of the old kind are on the page: their multi-label
    baseline is the label-frequency prior, which uninformative scores beat."""
    old = sum(r.get("probe_prior_baseline", 0) for r in t.values())
    if not old:
        return []
    return [
        f"**{old} probe(s) on this page scored multi-label traits against the old "
        "label-frequency prior (mAP = positive rate)**, which scores with no trait "
        "information beat in most draws: their multi-label baselines, and the bar's "
        "count of traits beating them, overstate the probe. Run the sweep again (it "
        "probes those runs again, without retraining) to replace them.",
        "",
    ]


def _machines_lines(machines: dict[str, int]) -> list[str]:
    if not machines:
        return []
    listed = "; ".join(f"{m} ({n} run(s))" for m, n in machines.items())
    lines = [f"Trained on: {listed}."]
    # runs trained before 2026-11-27 did not record it: not a second machine
    if len([m for m in machines if m != NOT_RECORDED]) > 1:
        lines.append(
            "**These runs trained on more than one machine.** bf16 training on the CPU does "
            "not repeat across processors (seed 0 of `all` moved by up to 0.035 top-1 "
            "between an Intel Xeon and an AMD EPYC), so differences between runs mix "
            "machine with seed."
        )
    return [*lines, ""]


def written_by(cfg: SweepConfig, threads: Sequence[int] = ()) -> str:
    """The command line that writes this page again: every option that changes its
    figures or where it goes, left out only where it has its default. `threads`: the
    torch threads the runs recorded; one count is pinned with --threads (without it a
    run takes cpu_count // --jobs, and another count trains another model: seed 0 of
    `all` moved by up to 0.09 top-1 between 1 and 2 threads)."""
    args = [
        f"--data {cfg.data}",
        f"--seeds {' '.join(map(str, cfg.seeds))}",
    ]
    if set(cfg.variants) != set(VARIANTS):
        args.append(f"--variants {' '.join(cfg.variants)}")
    args.append(f"--epochs {cfg.epochs}")
    if cfg.minutes is not None:
        args.append(f"--minutes {cfg.minutes:g}")
    args += [f"--audio-config {cfg.audio_config}", f"--precision {cfg.precision}"]
    if cfg.jobs != 1:
        args.append(f"--jobs {cfg.jobs}")
    if len(threads) == 1:
        args.append(f"--threads {threads[0]}")
    if cfg.out != DEFAULT_OUT:
        args.append(f"--out {cfg.out}")
    if cfg.results_md:
        args.append(f"--results {cfg.results_md}")
    if cfg.records:
        args.append(f"--records {cfg.records}")
    return "animalclap-train experiments " + " ".join(args)


# a run whose final loss is above this share of ln(batch) barely left the plateau
NEAR_PLATEAU = 0.9


def _loss_lines(t: dict) -> list[str]:
    """What the final-loss column means, and which runs barely trained."""
    runs = [
        (n, seed, x)
        for n, r in t.items()
        for seed, x in zip(r["seeds"], r["train_loss"], strict=True)
        if x and x.get("last") is not None
    ]
    if not runs:
        return []
    plateau = runs[0][2]["plateau"]
    out = [
        f"Final train loss: the mean over a run's last {runs[0][2]['window']} steps, per seed; a "
        f"model that tells no pair of its batch apart scores ln(batch) = {plateau:.2f}."
    ]
    near = [
        f"`{n}` seed {seed} ({x['last']:.2f})"
        for n, seed, x in runs
        if x["last"] > NEAR_PLATEAU * x["plateau"]
    ]
    if near:
        out.append(
            f"Ended within {1 - NEAR_PLATEAU:.0%} of it, so barely trained: "
            + ", ".join(near)
            + ". Their figures say how fast a variant leaves the plateau in this many "
            "steps, not what it learns."
        )
    return ["", *out]


def _weak_points(summary: dict) -> list[str]:
    """Findings of the paper that the bar does not test or tests only on means: listed
    so that a PASS on means is not read as more than it is."""
    t, out = summary["variants"], []
    if "all" in t and "all-shuffled" in t:
        a, s = t["all"]["tax_top1"], t["all-shuffled"]["tax_top1"]
        if a[0] > s[0] and not intervals_disjoint(a, s):
            out.append(
                "- Ordered beats shuffled taxonomy on means only: the 95% intervals overlap "
                f"({_fmt(a)} against {_fmt(s)})."
            )
    if "all" in t:
        for q in QUERIES:
            best = max(t, key=lambda n: t[n][f"{q}_top1"][0])
            if best != "all":
                out.append(
                    f"- On {q} queries the best model is `{best}` "
                    f"({t[best][f'{q}_top1'][0]:.3f}), not the all-templates model "
                    f"({t['all'][f'{q}_top1'][0]:.3f}); in the paper all templates lead on "
                    "every query."
                )
    probe_all, probe_com = t.get("all", {}).get("probe"), t.get("com", {}).get("probe")
    if probe_all and probe_com:
        both = [k for k in probe_all if k in probe_com]
        ahead = sum(probe_all[k]["probe"][0] > probe_com[k]["probe"][0] for k in both)
        if both and ahead * 2 <= len(both):
            out.append(
                f"- Trait probes: the all-templates encoder beats the Com-only one on "
                f"{ahead}/{len(both)} traits; in the paper (Table 5) the "
                "taxonomy-aware model leads on most traits."
            )
    widths = [
        (r[f"{q}_top1"][2] - r[f"{q}_top1"][1]) / 2
        for r in t.values()
        for q in QUERIES
        if not math.isnan(r[f"{q}_top1"][1])
    ]
    if widths:
        out.append(
            "- Seed spread: the mean 95% half-width of an unseen top-1 figure is "
            f"{float(np.mean(widths)):.3f}, so smaller differences cannot be resolved "
            "with these seeds."
        )
    if out:
        out = ["", "### Weaker than the paper, beyond the bar", "", *out]
    return out


def plot_ablation(summary: dict, out_png: Path) -> Path:
    """Grouped bars: unseen top-1 per query, one bar per training variant, with CIs."""
    from matplotlib.figure import Figure  # not pyplot: no backend switch, no global figures

    t = summary["variants"]
    names = [v for v in VARIANTS if v in t]
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        means = [t[n][f"{q}_top1"][0] for q in QUERIES]
        # bars clipped to [0, 1], as the page's intervals are
        err = [
            [m - max(t[n][f"{q}_top1"][1], 0.0) for m, q in zip(means, QUERIES, strict=True)],
            [min(t[n][f"{q}_top1"][2], 1.0) - m for m, q in zip(means, QUERIES, strict=True)],
        ]
        yerr = np.nan_to_num(np.array(err))
        ax.bar(np.arange(len(QUERIES)) + i * width, means, width, yerr=yerr, label=n, capsize=3)
    if names:
        ax.axhline(t[names[0]]["chance_top1"], color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(np.arange(len(QUERIES)) + width * (len(names) - 1) / 2, QUERIES)
    ax.set_xlabel("query prompt")
    ax.set_ylabel("unseen-species top-1")
    ax.legend(title="trained on", fontsize=8)
    ax.set_title("Prompt ablation (95% CI over seeds)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    return out_png
