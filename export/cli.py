"""`animalclap-export`: package a CLAP checkpoint into a verified model bundle."""

from __future__ import annotations

import argparse
import json
import sys

from animalclap_edge.cli_help import CommandParser, DefaultsFormatter, error_line


def build_parser() -> argparse.ArgumentParser:
    """The `animalclap-export` parser: every option has a help string and shows its default."""
    p = argparse.ArgumentParser(
        prog="animalclap-export",
        description="Export AnimalCLAP models for recorders.",
        formatter_class=DefaultsFormatter,
    )
    sub = p.add_subparsers(metavar="COMMAND", parser_class=CommandParser)
    b = sub.add_parser(
        "bundle",
        help="text embeddings + ONNX audio encoder + trait heads -> bundle directory",
        formatter_class=DefaultsFormatter,
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
    b.add_argument("--name", default="animalclap", help="bundle name, shown by the runtime")
    b.add_argument("--window", type=float, default=3.0, help="window seconds the encoder takes")
    b.add_argument(
        "--templates",
        nargs="+",
        default=["tax+com"],
        help="prompt template(s) for species embeddings; several = ensemble",
    )
    b.add_argument(
        "--parity-audio",
        help="folder of real recordings for the torch/ONNX parity gate (sub-folders included; "
        "default: the first recordings of --data)",
    )
    b.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="species probability threshold the runtime uses where the recorder config sets none",
    )
    b.add_argument("--demo", action="store_true", help="mark as a demo bundle (not a field model)")
    b.add_argument("--notice", help="notice shown by the runtime whenever this bundle is used")
    b.add_argument("--run-id", help="training run id for provenance")
    b.add_argument("--overwrite", action="store_true", help="replace a bundle already at --out")
    b.add_argument("--student", help="distilled student folder: ships it instead of the teacher")
    b.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        default="fp32",
        help="audio encoder precision (fp16/int8 keep the front-end and projection fp32)",
    )
    b.add_argument(
        "--calibration-audio",
        help="folder of real recordings for int8 calibration and the fp16/int8 gates, one "
        "window per recording: int8 needs >= 80 (64 calibrate + 16 check), fp16 >= 16 "
        "(default: --parity-audio)",
    )
    b.set_defaults(func=_cmd_bundle)

    d = sub.add_parser(
        "distill",
        help="train a small CNN student to match the teacher's audio embeddings",
        formatter_class=DefaultsFormatter,
    )
    # the other commands' names are accepted too: --checkpoint, --data
    d.add_argument(
        "--teacher",
        "--checkpoint",
        dest="teacher",
        required=True,
        help="CLAP checkpoint (path or hub id)",
    )
    d.add_argument(
        "--audio",
        "--data",
        dest="audio",
        required=True,
        help="unlabelled audio: a folder of files, or any --data spec (labels unused)",
    )
    d.add_argument("--out", required=True, help="student folder (student.pt, student.json)")
    d.add_argument("--width", type=float, default=0.4, help="MobileNetV3 width multiplier")
    d.add_argument("--window", type=float, default=3.0, help="window seconds")
    d.add_argument("--crops", type=int, default=4, help="crops per recording")
    d.add_argument("--epochs", type=int, default=30, help="passes over the training crops")
    d.add_argument("--batch-size", type=int, default=64, help="windows per training step")
    d.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (cosine decay)")
    d.add_argument(
        "--kl-weight",
        type=float,
        default=1.0,
        help="weight of the KL term on species rankings (0: cosine loss only)",
    )
    d.add_argument(
        "--exclude-test-of",
        metavar="SPLIT_JSON",
        help="distil only on this zero-shot split's train/val recordings",
    )
    d.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    d.add_argument(
        "--device", default="auto", help="auto (the GPU when one is visible), cpu, cuda, cuda:N"
    )
    d.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="bf16: autocast forward passes (GPUs); the front-end stays fp32",
    )
    d.add_argument("--teacher-batch", type=int, default=32, help="windows per teacher call")
    d.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a student already in --out (its teacher cache is reused)",
    )
    d.add_argument(
        "--workers", type=int, default=2, help="processes decoding windows (0: the main one)"
    )
    d.set_defaults(func=_cmd_distill)

    e = sub.add_parser(
        "embed",
        help="species and taxon text embeddings (fp16, normalised) from a checkpoint",
        formatter_class=DefaultsFormatter,
    )
    e.add_argument(
        "--checkpoint",
        required=True,
        help="CLAP checkpoint: local path (or hub id on a connected machine)",
    )
    e.add_argument("--catalogue", required=True, help="species.csv")
    e.add_argument("--out", required=True, help="folder for the .npy files and taxa list")
    e.add_argument(
        "--templates",
        nargs="+",
        default=["tax+com"],
        help="prompt template(s) for species embeddings; several = ensemble",
    )
    e.add_argument("--overwrite", action="store_true", help="replace embeddings already in --out")
    e.set_defaults(func=_cmd_embed)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    from export.pipeline import ExportGateError
    from training.model import CheckpointError

    try:
        return args.func(args)
    except Exception as e:
        # ValueError includes CalibrationError
        line = error_line(e, (CheckpointError, ExportGateError, FileExistsError, ValueError))
        if line is None:
            raise
        print(f"animalclap-export: error: {line}", file=sys.stderr)
        return 2


def _cmd_distill(args) -> int:
    from export.distill import DistillConfig, distill

    figures = distill(
        DistillConfig(
            teacher=args.teacher,
            audio=args.audio,
            out=args.out,
            width=args.width,
            window_seconds=args.window,
            crops_per_recording=args.crops,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            kl_weight=args.kl_weight,
            exclude_test_of=args.exclude_test_of,
            threads=args.threads,
            device=args.device,
            precision=args.precision,
            teacher_batch=args.teacher_batch,
            workers=args.workers,
            overwrite=args.overwrite,
        )
    )
    print(json.dumps(figures, indent=2))
    return 0


def _cmd_embed(args) -> int:
    from export.text import write_text_side

    print(
        json.dumps(
            write_text_side(
                args.checkpoint, args.catalogue, args.out, args.templates, args.overwrite
            )
        )
    )
    return 0


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
            student=args.student,
            precision=args.precision,
            calibration_audio=args.calibration_audio,
        )
    )
    print(dump_summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
