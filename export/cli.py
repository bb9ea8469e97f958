"""`animalclap-export`: package a CLAP checkpoint into a verified model bundle."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="animalclap-export", description="Export AnimalCLAP models for recorders."
    )
    sub = p.add_subparsers(metavar="COMMAND")
    b = sub.add_parser(
        "bundle", help="text embeddings + ONNX audio encoder + trait heads -> bundle directory"
    )
    b.add_argument(
        "--checkpoint",
        required=True,
        help="CLAP checkpoint: local path (or hub id on a connected machine)",
    )
    b.add_argument("--out", required=True, help="bundle directory to write (atomically)")
    b.add_argument(
        "--data",
        help="labelled set for trait heads: benchmark size[:seed], benchmark folder, or recordings folder",
    )
    b.add_argument(
        "--catalogue",
        help="species.csv to embed (default: the --data catalogue); a new catalogue gives a zero-shot bundle",
    )
    b.add_argument("--name", default="animalclap")
    b.add_argument(
        "--window", type=float, default=3.0, help="window seconds the encoder takes (default 3)"
    )
    b.add_argument(
        "--templates",
        nargs="+",
        default=["tax+com"],
        help="prompt template(s) for species embeddings; several = ensemble",
    )
    b.add_argument(
        "--parity-audio", help="folder of real recordings for the torch/ONNX parity gate"
    )
    b.add_argument(
        "--threshold", type=float, default=0.5, help="default species probability threshold"
    )
    b.add_argument("--demo", action="store_true", help="mark as a demo bundle (not a field model)")
    b.add_argument("--notice", help="notice shown by the runtime whenever this bundle is used")
    b.add_argument("--run-id", help="training run id for provenance")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=_cmd_bundle)
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    from export.pipeline import ExportGateError
    from training.model import CheckpointError

    try:
        return args.func(args)
    except (CheckpointError, ExportGateError, FileExistsError, ValueError) as e:
        print(f"animalclap-export: error: {e}", file=sys.stderr)
        return 2


def _cmd_bundle(args) -> int:
    from export.pipeline import ExportConfig, dump_summary, make_bundle

    out = make_bundle(
        ExportConfig(
            checkpoint=args.checkpoint,
            out=args.out,
            data=args.data,
            catalogue=args.catalogue,
            name=args.name,
            window_seconds=args.window,
            templates=args.templates,
            parity_audio=args.parity_audio,
            default_threshold=args.threshold,
            demo=args.demo,
            notice=args.notice,
            overwrite=args.overwrite,
            training_run_id=args.run_id,
        )
    )
    print(dump_summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
