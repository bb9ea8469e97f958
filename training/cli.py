"""`animalclap-train`: benchmark data and taxonomy-aware training."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from animalclap_edge.contracts.prompts import ALL_TEMPLATES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="animalclap-train", description="Train AnimalCLAP models.")
    sub = p.add_subparsers(metavar="COMMAND")

    tr = sub.add_parser(
        "train", help="contrastive training with taxonomy-aware prompts (single process)"
    )
    tr.add_argument(
        "--data",
        default="tiny",
        help="benchmark size[:seed] (tiny, small, full), a benchmark folder, or a folder with recordings.csv + catalogue.csv",
    )
    tr.add_argument(
        "--out",
        required=True,
        help="run directory (checkpoint/, train_log.jsonl, train_summary.json)",
    )
    tr.add_argument(
        "--init",
        help="start from this CLAP checkpoint (local path or hub id); default: small config from scratch",
    )
    tr.add_argument(
        "--templates",
        nargs="+",
        default=[t.value for t in ALL_TEMPLATES],
        help="prompt templates drawn per sample (com sci tax sci+com tax+com)",
    )
    tr.add_argument(
        "--shuffle-tax",
        action="store_true",
        help="shuffle the taxonomic sequence (the paper's ablation)",
    )
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument(
        "--minutes", type=float, help="time budget; the LR schedule is shortened to fit"
    )
    tr.add_argument("--batch-size", type=int, default=16)
    tr.add_argument("--lr", type=float, default=5e-4)
    tr.add_argument("--clips-per-species", type=int, default=30)
    tr.add_argument("--crop-seconds", type=float, default=3.0)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int)
    tr.set_defaults(func=_cmd_train)

    bw = sub.add_parser("benchmark", help="write a procedural benchmark corpus to disk")
    bw.add_argument("--size", default="tiny")
    bw.add_argument("--seed", type=int, default=0)
    bw.add_argument("--out", required=True)
    bw.add_argument("--workers", type=int, default=1)
    bw.set_defaults(func=_cmd_benchmark)

    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileExistsError) as e:
        print(f"animalclap-train: error: {e}", file=sys.stderr)
        return 2


def _cmd_train(args) -> int:
    from training.train import TrainConfig, train

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
    )
    ckpt = train(cfg)
    summary = json.loads((Path(args.out) / "train_summary.json").read_text())
    print(
        json.dumps(
            {
                "checkpoint": str(ckpt),
                "steps": summary["steps"],
                "val_zero_shot": summary["val_zero_shot"],
            },
            indent=2,
        )
    )
    return 0


def _cmd_benchmark(args) -> int:
    from training.benchmark.corpus import Benchmark

    bench = Benchmark.build(args.size, seed=args.seed)
    bench.write(args.out, workers=args.workers, progress=True)
    print(f"{len(bench.catalogue)} species, {len(bench.recordings)} recordings -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
