"""`animalclap-train`: benchmark data and taxonomy-aware training."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from animalclap_edge.cli_help import CommandParser, DefaultsFormatter, error_line
from animalclap_edge.contracts.prompts import ALL_TEMPLATES
from training.torchrun import torchrun_rank_world


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-parser per COMMAND."""
    p = argparse.ArgumentParser(
        prog="animalclap-train",
        description="Train AnimalCLAP models.",
        formatter_class=DefaultsFormatter,
    )
    sub = p.add_subparsers(metavar="COMMAND", parser_class=CommandParser)

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=DefaultsFormatter, **kw)

    tr = command("train", help="contrastive training with taxonomy-aware prompts (single process)")
    tr.add_argument(
        "--data",
        default="tiny",
        help="benchmark size[:seed] (tiny, small, wide, full), a benchmark folder, or a folder with recordings.csv + catalogue.csv",
    )
    tr.add_argument(
        "--out",
        required=True,
        help="run directory (checkpoint/, split.json, train_log.jsonl, train_summary.json)",
    )
    tr.add_argument(
        "--overwrite",
        action="store_true",
        help="train again into an --out that already holds a run (replacing its checkpoint)",
    )
    tr.add_argument(
        "--init",
        help="start from this CLAP checkpoint (local path or hub id); default: small config from scratch",
    )
    tr.add_argument(
        "--templates",
        nargs="+",
        default=[t.value for t in ALL_TEMPLATES],
        help="prompt templates, one drawn per sample: any of com sci tax sci+com tax+com",
    )
    tr.add_argument(
        "--shuffle-tax",
        action="store_true",
        help="shuffle the taxonomic sequence (the paper's ablation)",
    )
    tr.add_argument("--epochs", type=int, default=20, help="training epochs")
    tr.add_argument(
        "--minutes", type=float, help="time budget; the LR schedule is shortened to fit"
    )
    tr.add_argument("--batch-size", type=int, default=16, help="clips per step")
    tr.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW)")
    tr.add_argument(
        "--clips-per-species",
        type=int,
        default=30,
        help="clips per species in each balanced epoch",
    )
    tr.add_argument(
        "--crop-seconds", type=float, default=3.0, help="length of each random training crop"
    )
    tr.add_argument("--seed", type=int, default=0, help="seed of the split, init and batches")
    tr.add_argument(
        "--split",
        choices=["zeroshot", "seen"],
        default="zeroshot",
        help="zeroshot: hold out rare species unseen (the paper's split, saved as split.json); seen: train on all",
    )
    tr.add_argument(
        "--audio-config",
        choices=["small", "fast"],
        default="small",
        help="HTS-AT size when training from scratch (fast: patch 16, ~1.6x the steps per minute)",
    )
    tr.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    tr.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: autocast forward passes (faster on CPUs with AVX512-BF16 and on GPUs)",
    )
    tr.set_defaults(func=_cmd_train)

    ev = command(
        "evaluate", help="zero-shot accuracy on unseen species, error profile, embedding map"
    )
    _eval_args(ev, "eval")
    ev.set_defaults(func=_cmd_evaluate)

    pr = command("probe", help="linear trait probes on the frozen encoder, against baselines")
    _eval_args(pr, "probe")
    pr.set_defaults(func=_cmd_probe)

    ex = command(
        "experiments",
        help="the paper's comparisons over seeds -> OUT/results.md (resumes finished runs)",
        description=(
            "Trains, evaluates and probes every (variant, seed) not finished in --out, then "
            "writes the results page (OUT/results.md unless --results) and its plot beside "
            "it. The shipped page is regenerated with --results docs/results.md."
        ),
    )
    ex.add_argument("--data", default="small", help="benchmark size[:seed] or folder")
    ex.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed")
    ex.add_argument(
        "--variants",
        nargs="+",
        help="subset of: all com sci tax all-shuffled (default: all five)",
    )
    ex.add_argument("--epochs", type=int, default=12, help="training epochs per run")
    ex.add_argument("--minutes", type=float, help="optional wall-clock cap per run")
    ex.add_argument(
        "--audio-config",
        choices=["small", "fast"],
        default="fast",
        help="HTS-AT size the runs train from scratch",
    )
    ex.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="bf16",
        help="bf16: autocast forward passes",
    )
    ex.add_argument(
        "--jobs", type=int, default=1, help="runs trained side by side (2 on a 2-core CPU)"
    )
    ex.add_argument(
        "--threads",
        type=int,
        help="torch threads per run (default: CPU count // --jobs); another count trains "
        "another model, so give the one a page's runs recorded to reproduce it",
    )
    ex.add_argument(
        "--out",
        default="runs/experiments",
        help="folder of the runs, the materialised benchmark and results.json",
    )
    ex.add_argument(
        "--results",
        help="the results page to write, its plot beside it (default: OUT/results.md); "
        "an existing file is replaced only if it is a results page",
    )
    ex.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the page from the runs finished so far",
    )
    ex.add_argument(
        "--records",
        help="folder of the finished runs' figures without checkpoints (~100 kB a run): "
        "runs there count as finished, each run is copied there as it finishes, so a "
        "sweep resumes from it on another machine (docs/results_runs: the shipped page's)",
    )
    ex.set_defaults(func=_cmd_experiments)

    pt = command(
        "pretrain",
        help="full-scale CLAP pretraining (torchrun for several GPUs/nodes), resumable",
        description=(
            "Settings come from --config (a YAML file, or a packaged name: paper, cpu_smoke) "
            "and then --set key=value overrides. Several GPUs: torchrun --nproc-per-node=N "
            "-m training.cli pretrain ...; a killed run resumes from its latest checkpoint "
            "when started again with the same --out."
        ),
    )
    pt.add_argument(
        "--config",
        help="YAML file or packaged name (paper, cpu_smoke); default: the built-in "
        "settings (training/pretrain/config.py)",
    )
    _add_set(pt, "overrides of --config")
    pt.add_argument("--data", help="shortcut for --set data=...")
    pt.add_argument(
        "--out",
        help="shortcut for --set out=... (a new folder, or this run's own to resume it)",
    )
    pt.add_argument("--init", help="shortcut for --set init=... (hub id, path, scratch:SIZE)")
    pt.set_defaults(func=_cmd_pretrain)

    bn = command(
        "bench",
        help="training throughput: samples/s, data wait vs compute, MFU, peak GPU memory",
        description=(
            "Times the pretraining step on this machine's GPU (or CPU) with the settings "
            "of --config/--set (default: the full-size model from scratch, bf16). "
            "MFU needs the device's peak: known for H100/H200/A100/L40S/A10, else --peak-tflops."
        ),
    )
    bn.add_argument(
        "--config",
        help="YAML file or packaged name, as for pretrain; default: the full-size model "
        "from scratch, bf16",
    )
    _add_set(bn, "overrides of --config")
    bn.add_argument("--steps", type=int, default=20, help="timed steps")
    bn.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    bn.add_argument("--peak-tflops", type=float, help="device peak bf16 TFLOP/s for MFU")
    bn.add_argument(
        "--bandwidth-tbs",
        type=float,
        help="device memory bandwidth in TB/s, for the step's roofline where the device's "
        "name does not give it (known for H100/H200/A100/L40S/A10)",
    )
    bn.add_argument("--out", help="also write the figures as JSON here")
    bn.add_argument(
        "--profile",
        metavar="DIR",
        help="also profile the step alone: device time by kind of kernel, idle gaps, "
        "top kernels (DIR/profile.md, profile.json, trace.json.gz for Perfetto)",
    )
    bn.set_defaults(func=_cmd_bench)

    ft = command(
        "finetune",
        help="regional retraining with replay of global data, and a before/after report",
        description=(
            "From a global checkpoint, train on a region's recordings (any --data the "
            "other commands take: recordings folder with catalogue.csv, prepared folder) "
            "while replaying the global data (--replay). Defaults: 5 epochs, lr 2e-5, 25% "
            "of each epoch replayed when --replay is given (without it nothing is replayed "
            "and the global species may be forgotten), every regional species seen, a "
            "batch of 256 capped to one epoch of a small region (printed). Writes "
            "finetune_report.{json,md,png}: each change with its 95% interval, and each "
            "regional species before and after. Under torchrun the ranks share the "
            "training and the reports' recordings; rank 0 writes the report. "
            "With no regional recordings, use the zero-shot route instead: "
            "animalclap-export bundle --checkpoint GLOBAL --catalogue regional.csv "
            "--parity-audio RECORDINGS/ --out BUNDLE."
        ),
    )
    ft.add_argument(
        "--checkpoint",
        required=True,
        help="global model (path or hub id; of a run folder, RUN/final or RUN/checkpoint)",
    )
    ft.add_argument("--data", required=True, help="regional recordings")
    ft.add_argument("--replay", help="global data to replay (prepared folder, benchmark)")
    ft.add_argument(
        "--out",
        required=True,
        help="run folder (final/, checkpoints/, finetune_report.md): a new one, or this "
        "run's own to resume it",
    )
    ft.add_argument(
        "--config",
        help="YAML file of settings (as for pretrain); default: the fine-tuning defaults",
    )
    ft.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads per process (default: torch's choice); fix it to repeat a "
        "CPU run's figures, as train --threads does",
    )
    _add_set(ft, "overrides of the fine-tuning defaults and --config (e.g. batch_size=32)")
    ft.set_defaults(func=_cmd_finetune)

    cg = command(
        "catalogue",
        help="a region's species catalogue (taxonomy rows) from a list of species names",
        description=(
            "Each line of --names (a scientific name, a common name, or an eBird code; any "
            "case) is looked up in eBird 2024 (birdnames) and the curated non-bird list, "
            "and written with its order, family and genus: the catalogue a zero-shot "
            "bundle (animalclap-export bundle --catalogue) and fine-tuning take. Species "
            "neither has: write their rows in a CSV of the same columns, given with --also."
        ),
    )
    cg.add_argument("--names", required=True, help="text file, one species name per line")
    cg.add_argument("--out", required=True, help="catalogue CSV to write")
    cg.add_argument("--region", help="region code written in every row's regions column")
    cg.add_argument(
        "--also", help="catalogue CSV of species neither source has (id, scientific_name, ...)"
    )
    cg.add_argument(
        "--skip-unknown",
        action="store_true",
        help="write the names found and list the others, instead of refusing them all",
    )
    cg.set_defaults(func=_cmd_catalogue)

    rc = command(
        "recordings",
        help="write a folder's recordings.csv from its layout (species folders, site "
        "folders, dates in file names), for finetune --data",
        description=(
            "Species: the nearest folder naming a catalogue species (id, scientific or "
            "common name; _ and - as spaces), else a ' - ' part of the file name "
            "(xeno-canto's). Site: the top folder when it is not the species folder "
            "(AUDIO/<site>/<species>/), else --site. Date: YYYYMMDD_HHMMSS, YYYY-MM-DD or "
            "YYYYMMDD in the file name. Writes AUDIO/recordings.csv and AUDIO/catalogue.csv."
        ),
    )
    rc.add_argument("--audio", required=True, help="the folder of recordings")
    rc.add_argument("--catalogue", required=True, help="the region's catalogue CSV")
    rc.add_argument("--site", default="", help="site of recordings not in a site folder")
    rc.add_argument(
        "--skip-unplaced",
        action="store_true",
        help="leave out files no folder or name places with a species, instead of refusing",
    )
    rc.add_argument(
        "--overwrite", action="store_true", help="replace a recordings.csv already there"
    )
    rc.set_defaults(func=_cmd_recordings)

    cv = command(
        "curves",
        help="draw a pretrain or finetune run's loss, learning rate, logit scale and "
        "throughput from its train_log.jsonl (a run draws them when it ends)",
    )
    cv.add_argument("--run", required=True, help="the run folder (holds train_log.jsonl)")
    cv.add_argument("--out", help="PNG to write (default: RUN/train_curves.png)")
    cv.set_defaults(func=_cmd_curves)

    pp = command(
        "prepare",
        help="recordings manifest -> Creative Commons 48 kHz shards, report and split",
        description=(
            "Manifest columns: path or url, species_id, licence (or license), date, site; "
            "optional id, quality, source, background_species. species_id is a catalogue "
            "id, or a scientific or common name. CSV or Parquet. Rows without a Creative Commons "
            "licence or with a species not in the catalogue are left out and counted. "
            "Resumable; split across machines with --shard i/N on a shared --out."
        ),
    )
    pp.add_argument("--manifest", help="recordings manifest (.csv or .parquet)")
    pp.add_argument("--catalogue", help="species catalogue CSV")
    pp.add_argument("--out", required=True, help="output folder (shared by all --shard machines)")
    pp.add_argument("--traits", help="trait table CSV, copied next to the shards")
    pp.add_argument("--per-shard", type=int, default=500, help="recordings per shard")
    pp.add_argument("--shard", default="0/1", help="this machine's share, i/N")
    pp.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: the cores this job may use); 1 too decodes "
        "in a process of its own, so a crash or hang on a recording leaves it out",
    )
    pp.add_argument("--quality", nargs="+", help="accepted quality grades (default: all)")
    pp.add_argument(
        "--min-seconds", type=float, default=1.0, help="shorter recordings are left out"
    )
    pp.add_argument("--seed", type=int, default=0, help="seed of the zero-shot split")
    pp.add_argument(
        "--codec",
        choices=["flac", "wav"],
        default="flac",
        help="shard audio: flac (about half the disk) or wav (no decoding when training)",
    )
    pp.add_argument(
        "--retry-downloads",
        action="store_true",
        help="redo this job's written shards where downloads failed (not for a 4xx "
        "answer): a rerun otherwise keeps them as failed",
    )
    pp.add_argument(
        "--record-timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="a recording a worker spends longer on (a decoder stuck on a bad file, a hung "
        "mount) has its process stopped and is left out, counted; 0: wait for ever",
    )
    pp.add_argument(
        "--finalize",
        action="store_true",
        help="only merge the shards of all machines into the index, report and split",
    )
    pp.set_defaults(func=_cmd_prepare)

    bw = command("benchmark", help="write a procedural benchmark corpus to disk")
    bw.add_argument("--size", default="tiny", help="tiny, small, wide or full")
    bw.add_argument("--seed", type=int, default=0, help="seed of the generated corpus")
    bw.add_argument("--out", required=True, help="folder to write it to")
    bw.add_argument("--workers", type=int, default=1, help="rendering processes")
    bw.add_argument("--overwrite", action="store_true", help="replace a benchmark already in --out")
    bw.set_defaults(func=_cmd_benchmark)
    return p


def _add_set(parser: argparse.ArgumentParser, help: str) -> None:
    """--set KEY=VALUE ..., repeatable: every --set counts, a later value of a key wins
    (argparse's default kept only the last --set, silently)."""
    parser.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help=help
    )


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    if torchrun_rank_world()[1] > 1 and args.func not in (
        _cmd_pretrain,
        _cmd_finetune,
        _cmd_evaluate,
        _cmd_probe,
    ):
        # every rank would do the whole job and write the same files
        name = args.func.__name__.removeprefix("_cmd_")
        print(
            f"animalclap-train: error: {name} runs in one process, not under torchrun "
            "(WORLD_SIZE > 1): run it without torchrun; only pretrain, finetune, "
            "evaluate and probe share their work across ranks",
            file=sys.stderr,
        )
        return 2
    try:
        return args.func(args)
    except Exception as e:
        line = error_line(e, (ValueError, FileExistsError, FileNotFoundError))
        if line is None:
            raise
        print(f"animalclap-train: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # checkpoints and finished shards are kept: say so, briefly
        resumable = args.func in (_cmd_prepare, _cmd_pretrain, _cmd_finetune)
        print(
            "animalclap-train: interrupted; "
            + (
                "run the same command again to resume where it stopped"
                if resumable
                else "this command does not resume: run it again to start over"
            ),
            file=sys.stderr,
        )
        return 130


def _cmd_train(args) -> int:
    from training.identity import PRETRAIN_RUN
    from training.train import TrainConfig, train

    out = Path(args.out)
    if (out / "checkpoint").exists() and not args.overwrite:
        raise FileExistsError(
            f"{args.out} already holds a trained run (checkpoint/): give another --out, or "
            "--overwrite to train it again from the start"
        )
    # --overwrite replaces a `train` run, not a pretrain or finetune run: their final/
    # would stay beside this run's checkpoint/ and split.json, one folder of two runs.
    other = [n for n in (*PRETRAIN_RUN, "pretrain_config.json") if (out / n).exists()]
    if other:
        raise FileExistsError(
            f"{args.out} holds a pretrain or finetune run ({', '.join(other)}): give another --out"
        )
    cfg = TrainConfig(
        out=args.out,
        data=args.data,
        init=args.init,
        seed=args.seed,
        templates=args.templates,
        shuffle_tax=args.shuffle_tax,
        clips_per_species=args.clips_per_species,
        crop_seconds=args.crop_seconds,
        batch_size=args.batch_size,
        lr=args.lr,
        epochs=args.epochs,
        max_minutes=args.minutes,
        threads=args.threads,
        precision=args.precision,
        split=args.split,
        audio_config=args.audio_config,
    )
    ckpt = train(cfg)
    summary = json.loads((Path(args.out) / "train_summary.json").read_text())
    print(
        json.dumps(
            {
                "checkpoint": str(ckpt),
                "steps": summary["steps"],
                "val_seen_species": summary["val_seen_species"],
            },
            indent=2,
        )
    )
    return 0


def _eval_args(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument(
        "--run",
        help="a run folder: its model (checkpoint/ from train, final/ from pretrain or "
        "finetune) and its split.json are used",
    )
    p.add_argument(
        "--checkpoint", help="CLAP checkpoint (path or hub id); default: the --run folder's"
    )
    p.add_argument(
        "--data",
        help="the data the split refers to: benchmark size[:seed], benchmark folder, or real "
        "folder; default: the --run folder's own data, else tiny",
    )
    p.add_argument(
        "--split",
        help="split.json; default: the split the checkpoint's run trained on --data with "
        "(RUN/split.json, or a finetune run's replay_split.json), else a fresh zero-shot "
        "split of --data (with a warning: its 'unseen' species may have been trained on)",
    )
    draws = {
        "eval": "shuffled Tax prompts, map",
        "probe": "training subset, head init, permutation baseline",
    }[kind]
    p.add_argument(
        "--seed",
        type=int,
        help=f"seed of a fresh split and of the draws here ({draws}); default: the "
        "training seed of the checkpoint's run (as `experiments` evaluates), else 0",
    )
    p.add_argument("--out", help=f"output folder; default RUN/{kind}")
    p.add_argument(
        "--window-seconds",
        type=float,
        default=3.0,
        help="each recording is embedded from one centred window this long",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (a GPU where torch sees one, else the CPU), cpu, "
        "cuda or cuda:N; on a GPU, loader workers read the recordings' windows",
    )
    if kind == "eval":
        p.add_argument(
            "--against",
            metavar="CHECKPOINT_OR_RUN",
            help="also score this model (a checkpoint, or a run folder's) on the same "
            "split and write OUT/compare.{md,json,png}: each query's change in top-1 with "
            "its 95%% interval on the same recordings (OUT/against/ has its own eval)",
        )
    if kind == "probe":
        p.add_argument(
            "--max-train-items",
            type=int,
            default=4000,
            help="heads are fitted on at most this many training recordings (a seeded "
            "subset); `experiments` probes with 2000: give 2000 to reproduce a sweep run",
        )


def _run_checkpoint(run: Path) -> Path:
    """The model of a run folder: `train` writes RUN/checkpoint, `pretrain` and
    `finetune` RUN/final."""
    from training.model import models_in_run

    for name in ("checkpoint", "final"):
        if (run / name / "config.json").is_file():
            return run / name
    if not run.is_dir():
        raise ValueError(f"--run {run}: not found")
    raise ValueError(
        f"--run {run}: no model in it (checkpoint/ from train, final/ from pretrain or "
        "finetune; an unfinished pretrain has only checkpoints/: give --checkpoint "
        + (" or ".join(str(m) for m in models_in_run(run)) or f"{run}/checkpoints/step-N/model")
        + " instead)"
    )


def _run_data(run: Path, settings: tuple[str, dict]) -> str | None:
    """The data a run folder was trained on, as `--data` takes it (None: not recorded)."""
    from training.benchmark.corpus import is_procedural

    name, values = settings
    spec = values.get("data")
    if spec and not Path(spec).exists() and not is_procedural(spec):
        # runs before 2026-11-27 saved a relative path as typed
        raise ValueError(
            f"--run {run}: its data {spec!r} (from {name}) is not found from "
            f"{Path.cwd()}: give --data with the folder it was trained on"
        )
    return str(spec) if spec else None


def _open_eval(args, kind: str, d):
    """(model, data, split, out, seed, where the split came from, the data as given) of
    `evaluate` and `probe`, on `d`'s device under torchrun (each rank its own GPU)."""
    from training.devices import resolve_device
    from training.identity import absolute
    from training.labelled_audio import open_labelled
    from training.lineage import run_of, run_settings, trained_split
    from training.model import load_clap
    from training.splits import ZeroShotSplit, zero_shot_split

    run = Path(args.run) if args.run else None
    checkpoint = args.checkpoint or (str(_run_checkpoint(run)) if run else None)
    if not checkpoint:
        raise ValueError("give --run RUN_DIR or --checkpoint PATH_OR_HUB_ID")
    out = args.out or (str(run / kind) if run else None)
    if not out:
        raise ValueError("give --out DIR (or --run, to write under RUN/)")
    # a device that is not there: before any load
    device = d.device if d.world > 1 else resolve_device(args.device)
    loaded = load_clap(checkpoint, device)  # a bad checkpoint is the error to report, first
    # A finetune run's split.json indexes its regional data, not the benchmark.
    settings = run_settings(run) if run else ("", {})
    spec = args.data or (run and _run_data(run, settings)) or "tiny"
    data = open_labelled(spec)
    # The run that trained the checkpoint: its seed is what a sweep evaluates with, so
    # the standalone command gives the sweep's figures.
    trained_by = run_of(checkpoint) or run
    seed = args.seed
    if seed is None:
        seed = int(run_settings(trained_by)[1].get("seed", 0)) if trained_by else 0
    # The split the checkpoint trained on this data with: a fresh one would put some
    # of the species it trained on among the "unseen" ones.
    split_path = (
        args.split
        or trained_split(checkpoint, absolute(spec))
        or (run / "split.json" if run and (run / "split.json").exists() else None)
    )
    if split_path:
        split = ZeroShotSplit.from_json(split_path)
        source = str(split_path)
    else:
        source = f"a fresh zero-shot split of seed {seed}, not the checkpoint's own"
        try:
            split = zero_shot_split(data.items, data.catalogue, seed=seed)
        except ValueError as e:
            # the split's own message names its parameters (test_fraction, ...), which
            # this command does not take: say what it does take
            raise ValueError(
                f"--data {spec}: no zero-shot split can be drawn from it ({e}); give "
                "--split with a split.json made for this data, or --data with more species"
            ) from None
        if d.main:  # once, not once a rank
            print(
                f"animalclap-train: warning: no run folder shows which split {checkpoint} "
                f"trained on {spec} with, so a fresh zero-shot split is drawn (seed {seed}): "
                "if it trained on this data, some 'unseen' species may have been trained on "
                "(give --split RUN/split.json)",
                file=sys.stderr,
            )
    if kind == "eval" and not split.test_species and settings[1].get("split") == "seen":
        raise ValueError(
            f"--run {run} trained on every species of its data (split seen, as fine-tuning "
            "does), so none is unseen to evaluate; its finetune_report.md has the unseen "
            f"species of the replayed data, or evaluate on another folder: --checkpoint "
            f"{checkpoint} --data FOLDER --out DIR"
        )
    return loaded, data, split, out, seed, source, spec


def _on_ranks(command, args) -> int:
    """`command(args, d)` in one process, or on each rank of a torchrun job: the ranks
    share the recordings out, each on its own GPU, and rank 0 alone writes and prints
    (embed_items gathers the embeddings)."""
    from training.pretrain.dist import barrier, close, init_distributed

    d = init_distributed()
    try:
        done = command(args, d)
        barrier(d)  # the other ranks end once rank 0 has written
        return done
    finally:
        close(d)


def _cmd_evaluate(args) -> int:
    return _on_ranks(_evaluate, args)


def _evaluate(args, d) -> int:
    from training.evaluate import EvalConfig, evaluate

    loaded, data, split, out, seed, source, spec = _open_eval(args, "eval", d)
    base = _against(args.against, spec, split) if args.against else None
    cfg = EvalConfig(window_seconds=args.window_seconds, seed=seed)
    # every rank embeds its share (collective); rank 0 alone writes and prints
    shared = {"progress": d.main, "split_source": source, "write": d.main}
    res = evaluate(loaded, data, split, out, cfg, keep_hits=bool(base), **shared)
    if base:
        from training.devices import module_device
        from training.model import load_clap

        checkpoint, note = base
        against = Path(out) / "against"
        other = load_clap(checkpoint, module_device(loaded.model))
        base_res = evaluate(other, data, split, against, cfg, keep_hits=True, **shared)
    if not d.main:
        return 0
    summary = {q: {k: round(r[k], 3) for k in ("top1", "top5")} for q, r in res["unseen"].items()}
    print(json.dumps({"out": out, "unseen": summary}, indent=2))
    if base:
        from training.compare import write_comparison

        changes = write_comparison(Path(out), loaded.source, checkpoint, base_res, res, note)
        print(f"unseen species, top-1 of {checkpoint} (its eval: {against}) -> this model:")
        for q, c in changes["unseen"].items():
            verdict = "better" if c["lo"] > 0 else "worse" if c["hi"] < 0 else "within chance"
            print(
                f"  {q}: {c['right_before'] / c['n']:.3f} -> {c['right_after'] / c['n']:.3f} "
                f"({c['change']:+.3f}, 95% interval {c['lo']:+.2f} to {c['hi']:+.2f}: {verdict})"
            )
        if note:
            print(f"animalclap-train: warning: {note}", file=sys.stderr)
        print(f"-> {Path(out) / 'compare.md'}")
    return 0


def _against(spec: str, data_spec: str, split) -> tuple[str, str]:
    """(checkpoint, note) of `evaluate --against`: a run folder gives its model. The note
    says where the base's figures are not zero-shot: it trained on some of the split's
    unseen species (its own run's split of this data), or no run folder shows what it
    trained on."""
    from training.identity import absolute
    from training.lineage import trained_split
    from training.splits import ZeroShotSplit

    path = Path(spec)
    checkpoint = (
        str(_run_checkpoint(path))
        if path.is_dir() and not (path / "config.json").is_file()
        else spec
    )
    own = trained_split(checkpoint, absolute(data_spec))
    if own is None:
        return checkpoint, (
            f"no run folder shows which species {checkpoint} trained on: if it trained on "
            f"{data_spec}, some of the unseen species may be seen to it"
        )
    seen = set(ZeroShotSplit.from_json(own).seen_species)
    report = own.parent / "finetune_report.json"
    if own.name == "replay_split.json" and report.is_file():
        # a fine-tuning run also trained on its region's species, some perhaps unseen here
        before = json.loads(report.read_text(encoding="utf-8"))["before"]
        seen.update(before.get("global", {}).get("unseen_trained_regionally", []))
    trained = sorted(seen & set(split.test_species))
    if not trained:
        return checkpoint, ""
    return checkpoint, (
        f"{checkpoint} trained on {len(trained)} of the {len(split.test_species)} unseen "
        f"species (its split {own}): on those its figures are not zero-shot, and the "
        f"comparison favours it: {', '.join(trained[:10])}" + (" ..." if len(trained) > 10 else "")
    )


def _cmd_probe(args) -> int:
    return _on_ranks(_probe, args)


def _probe(args, d) -> int:
    from training.probe import probe_traits

    loaded, data, split, out, seed, source, _ = _open_eval(args, "probe", d)
    res = probe_traits(
        loaded,
        data,
        split,
        out,
        window_seconds=args.window_seconds,
        max_train_items=args.max_train_items,
        seed=seed,
        progress=d.main,
        split_source=source,
        write=d.main,
    )
    if not d.main:
        return 0
    print(
        json.dumps(
            {
                "out": out,
                **{
                    k: f"{res[k]['beats_baseline']}/{res[k]['n_traits']} traits beat the baseline"
                    for k in ("unseen", "seen")
                    if k in res
                },
            },
            indent=2,
        )
    )
    return 0


def _cmd_experiments(args) -> int:
    from training.experiments import VARIANTS, SweepConfig, page_path, run_sweep

    cfg = SweepConfig(
        out=args.out,
        data=args.data,
        seeds=args.seeds,
        variants=args.variants or list(VARIANTS),
        epochs=args.epochs,
        minutes=args.minutes,
        audio_config=args.audio_config,
        precision=args.precision,
        jobs=args.jobs,
        threads=args.threads,
        results_md=args.results,
        records=args.records,
    )
    summary = run_sweep(cfg, report_only=args.report_only)
    for item, v in summary["bar"].items():
        print(f"{v['status']:<8} {item} ({v['seeds']} seed(s))")
    print(f"-> {page_path(cfg)}")
    return 0


def _cmd_catalogue(args) -> int:
    from training.atomic import write_whole
    from training.catalogue_builder import (
        build_catalogue,
        load_also,
        read_names,
        reference_catalogue,
        summary,
    )

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise ValueError(f"--out {out}: a catalogue is a CSV file: name it so, e.g. species.csv")
    names = read_names(Path(args.names))
    also = load_also(args.also)
    built = build_catalogue(
        names, reference_catalogue(), args.region, also, args.skip_unknown, str(args.names)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_whole(out, built.catalogue.to_csv)
    own = {sp.id for sp in also or ()}
    looked_up = [sp for sp in built.catalogue if sp.id not in own]
    birds = sum(sp.class_ == "Aves" for sp in looked_up)
    counts = [
        ("birds from eBird 2024", birds),
        ("from the curated non-bird list", len(looked_up) - birds),
        (f"from {args.also}", len(own)),
    ]
    print(summary(built, out, counts))
    return 0


def _cmd_recordings(args) -> int:
    import shutil

    from animalclap_edge.audio.decode import AudioError, probe
    from animalclap_edge.contracts.catalogue import Catalogue
    from training.atomic import write_whole
    from training.recordings_folder import next_command, scan, summary, write_recordings_csv

    root = Path(args.audio)
    if not root.is_dir():
        raise ValueError(f"--audio {root}: not a folder")
    csv_path, cat_path = root / "recordings.csv", root / "catalogue.csv"
    if csv_path.exists() and not args.overwrite:
        raise FileExistsError(
            f"{csv_path} exists: give --overwrite to replace it with the layout's rows"
        )
    catalogue = Catalogue.from_csv(args.catalogue)
    given = Path(args.catalogue).resolve()
    if (
        cat_path.exists()
        and cat_path.resolve() != given
        and not args.overwrite
        and cat_path.read_bytes() != given.read_bytes()
    ):
        raise FileExistsError(
            f"{cat_path} exists and differs from --catalogue {args.catalogue}: give "
            "--overwrite to replace it"
        )
    result = scan(root, catalogue, args.site)
    if result.unplaced and not args.skip_unplaced:
        first = ", ".join(result.unplaced[:5])
        more = f" and {len(result.unplaced) - 5} more" if len(result.unplaced) > 5 else ""
        raise ValueError(
            f"{len(result.unplaced)} audio file(s) under {root} are in no folder and have "
            f"no name part that names a catalogue species: {first}{more}; move them into a "
            "species folder, add their species to the catalogue, or --skip-unplaced"
        )
    if not result.rows:
        raise ValueError(f"--audio {root}: no audio file placed with a catalogue species")
    broken = []
    for row in result.rows:  # as finetune will check each file, before anything is written
        try:
            probe(root / row.path)
        except AudioError as e:
            broken.append(f"{row.path} ({e})")
    if broken:
        raise ValueError(
            f"{len(broken)} file(s) under {root} cannot be read as audio: "
            + "; ".join(broken[:3])
            + (f"; and {len(broken) - 3} more" if len(broken) > 3 else "")
            + ": replace or remove them"
        )
    if cat_path.resolve() != given:
        write_whole(cat_path, lambda tmp: shutil.copyfile(given, tmp))
    write_whole(csv_path, lambda tmp: write_recordings_csv(result.rows, tmp))
    print(summary(result, csv_path, catalogue))
    print(next_command(root))
    return 0


def _cmd_curves(args) -> int:
    from training.atomic import write_whole
    from training.curves import plot_curves

    log = Path(args.run) / "train_log.jsonl"
    if not log.is_file():
        raise ValueError(
            f"--run {args.run}: no train_log.jsonl in it: give a pretrain or finetune run folder"
        )
    out = Path(args.out) if args.out else Path(args.run) / "train_curves.png"
    write_whole(out, lambda path: plot_curves(log, path))
    print(f"-> {out}")
    return 0


def _cmd_pretrain(args) -> int:
    from training.pretrain.config import load_config
    from training.pretrain.loop import pretrain

    overrides = list(args.set)
    # `is not None`: --data '' is an error to report, not the default to fall back on
    given = [(k, getattr(args, k)) for k in ("data", "out", "init") if getattr(args, k) is not None]
    for key, value in given:  # the shortcut went after every --set, and won in silence
        for item in overrides:
            k, _, v = item.partition("=")
            if k.strip() == key and v.strip() != value:
                raise ValueError(f"--{key} {value} and --set {item} disagree: give the {key} once")
    overrides += [f"{k}={v}" for k, v in given]
    cfg = load_config(args.config, overrides)
    final = pretrain(cfg)
    if torchrun_rank_world()[0] == 0:
        run = final.parent
        print(
            f"-> {final} (ClapModel.from_pretrained loads it); curves: {run / 'train_curves.png'}\n"
            f"next: animalclap-train evaluate --run {run}   (zero-shot, its unseen species)\n"
            f"      animalclap-export bundle --checkpoint {final} --data {cfg.data} --out BUNDLE"
        )
    return 0


def _cmd_bench(args) -> int:
    import torch

    from training.pretrain.bench import bench, write
    from training.pretrain.config import load_config

    if args.profile and Path(args.profile).exists() and not Path(args.profile).is_dir():
        # before minutes of benchmarking, not after them
        raise ValueError(f"--profile {args.profile} is a file: give a folder (made if missing)")
    gpu = torch.cuda.is_available()
    defaults = {
        "init": "scratch:full",
        "data": "small",
        "batch_size": 64 if gpu else 4,
        "precision": "bf16",
        "workers": 8 if gpu else 1,
    }
    cfg = load_config(args.config, list(args.set), defaults=defaults)
    print(
        f"bench: {cfg.init} on {cfg.data}, batch {cfg.batch_size}, {cfg.precision}, "
        f"{args.warmup} warm-up + {args.steps} timed steps on "
        + ("the GPU" if gpu else "the CPU")
        + (
            " (minutes at full size on a CPU: `--set init=scratch:fast` is quicker)"
            if not gpu and cfg.init == "scratch:full"
            else ""
        ),
        file=sys.stderr,
        flush=True,
    )
    result = bench(
        cfg,
        args.steps,
        args.warmup,
        args.peak_tflops,
        progress=True,
        profile_dir=args.profile,
        bandwidth_tbs=args.bandwidth_tbs,
    )
    print(write(result, args.out))
    if result.profile and (Path(result.profile) / "profile.md").is_file():
        print((Path(result.profile) / "profile.md").read_text(encoding="utf-8"), end="")
    return 0


def _cmd_finetune(args) -> int:
    from training.finetune import finetune, finetune_config, summary

    overrides = [f"init={args.checkpoint}", f"data={args.data}", f"out={args.out}"]
    if args.replay:
        overrides.append(f"replay={args.replay}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads}: give 1 or more")
        import torch

        torch.set_num_threads(args.threads)
    report = finetune(finetune_config(args.config, overrides + list(args.set)))
    if torchrun_rank_world()[0] == 0:  # once, not once a rank
        print(summary(report, Path(args.out)))
    return 0


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main thread while in the block (the old
    handler back after it), so a stop by a scheduler takes Ctrl-C's way out."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _cmd_prepare(args) -> int:
    from training.prepare.decode import DecodeSettings
    from training.prepare.run import PrepareConfig, finalize, prepare, usable_cpus

    if args.finalize:
        final = finalize(args.out)
        print(f"{final['recordings']} recordings, {final['hours']} h -> {args.out}/report.md")
        return 0
    if not (args.manifest and args.catalogue):
        raise ValueError("prepare needs --manifest and --catalogue (or --finalize)")
    # SLURM's time limit (and a scheduler's stop) sends SIGTERM to every process of the
    # job: taken as Ctrl-C is, it stops the workers, keeps whole shards, drops partial
    # ones and says how to resume, where it killed the run with only "leaked semaphore"
    with sigterm_interrupts():
        summary = prepare(
            PrepareConfig(
                manifest=args.manifest,
                catalogue=args.catalogue,
                out=args.out,
                traits=args.traits,
                per_shard=args.per_shard,
                shard=args.shard,
                workers=args.workers if args.workers is not None else usable_cpus(),
                qualities=args.quality,
                settings=DecodeSettings(min_seconds=args.min_seconds),
                seed=args.seed,
                codec=args.codec,
                retry_downloads=args.retry_downloads,
                record_timeout_s=args.record_timeout,
            )
        )
    report = summary.get("report")
    if report is None:
        print(
            f"{summary['done_here']} shard(s) written here; {summary['present']} of "
            f"{summary['shards']} present. When every --shard i/N has finished, run "
            f"`animalclap-train prepare --out {args.out} --finalize`."
        )
    else:
        print(
            f"{report['recordings']} recordings ({report['hours']} h, {report['species']} species) "
            f"in {report['shards']} shard(s); left out: {report['rejected']} -> {args.out}/report.md"
        )
    return 0


def _cmd_benchmark(args) -> int:
    from training.benchmark.corpus import Benchmark

    bench = Benchmark.build(args.size, seed=args.seed)
    bench.write(args.out, workers=args.workers, progress=True, overwrite=args.overwrite)
    print(f"{len(bench.catalogue)} species, {len(bench.recordings)} recordings -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
