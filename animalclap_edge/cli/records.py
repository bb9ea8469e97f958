"""`report`: tables and figures from a recorder's database."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import tzinfo
from pathlib import Path


def cmd_report(args: argparse.Namespace) -> int:
    from animalclap_edge.report import ReportError, local_zone, open_out, out_target, write_report

    # hours (2, -5, 5.5) or a time zone (Europe/Berlin); a wrong one is said first
    zone = local_zone(args.utc_offset)
    dbs = [Path(d) for d in args.db] if args.db else [_config_db(args.config)]
    if args.what == "activity":
        return _report_activity(dbs, args, zone)
    if args.what in ("raven", "audacity"):
        return _report_selections(dbs, args, zone)
    if args.out:  # a wrong --out is said before the database is read
        out_target(args.out, (".csv",))
    if args.top is not None:  # a CSV has every label: refused, not ignored
        raise ReportError(
            f"--top chooses the labels `activity` draws; `{args.what}` writes every label: "
            "select with --taxon or --min-probability"
        )
    filters = {
        "min_probability": args.min_probability,
        "taxa": _taxa(args),
        "utc_offset_h": zone,
        "trusted_clock_only": args.trusted_clock,
        "say": _note,
    }
    if not args.out:
        n = write_report(dbs, args.what, sys.stdout, **filters)
    else:
        with open_out(args.out, (".csv",)) as f:
            n = write_report(dbs, args.what, f, **filters)
    print(
        f"{n} {args.what} rows from {_source(dbs)}" + (f" -> {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0


def _taxa(args: argparse.Namespace) -> Sequence[str]:
    """--taxon's names, placed by --catalogue's taxonomy when one is given."""
    from animalclap_edge.report import ReportError
    from animalclap_edge.taxon_selection import TaxonSelection, selection_catalogue

    if not args.catalogue:
        return args.taxon
    if not args.taxon:  # it selects nothing alone: refused, not ignored
        raise ReportError("--catalogue places --taxon's names: give --taxon too")
    try:
        catalogue = selection_catalogue(args.catalogue)
    except ValueError as e:
        raise ReportError(str(e)) from None
    return TaxonSelection(args.taxon, catalogue, f"the catalogue of {args.catalogue}")


def _config_db(config: str | None) -> Path:
    """The database a config names, by `run`'s rule: a relative storage.database is
    taken from the current folder (the service's WorkingDirectory), not the config's
    folder, so that report reads the file run wrote. A miss names the rule and any
    database beside the config."""
    from animalclap_edge.config import load_config
    from animalclap_edge.report import ReportError

    db = Path(load_config(config).storage.database)
    if db.is_absolute() or db.exists():
        return db
    what = f"storage.database of {config}" if config else "the default storage.database"
    beside = Path(config).parent / db if config else None
    raise ReportError(
        f"no database at {db} ({what}; a relative path is taken from the current folder "
        f"{Path.cwd()}, as `run` takes it): "
        + (
            f"there is one beside the config: give --db {beside}"
            if beside is not None and beside.is_file()
            else "run from the folder the recorder ran in, or give --db"
        )
    )


def _source(dbs: list[Path]) -> str:
    return str(dbs[0]) if len(dbs) == 1 else f"{len(dbs)} databases"


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def _report_activity(dbs: list[Path], args: argparse.Namespace, zone: tzinfo | None) -> int:
    from animalclap_edge.activity import FIGURE_SUFFIXES, activity, plot_activity
    from animalclap_edge.report import ReportError, out_target

    if not args.out:
        raise ReportError("activity draws a figure: give --out FILE.png (or .svg, .pdf)")
    out_target(args.out, FIGURE_SUFFIXES)
    a = activity(
        dbs,
        12 if args.top is None else args.top,
        zone,
        args.min_probability,
        _taxa(args),
        say=_note,
        trusted_clock_only=args.trusted_clock,
    )
    plot_activity(a, args.out, title=_source(dbs))
    print(
        f"{len(a.labels)} labels, {a.total} detections from {_source(dbs)} -> {args.out}",
        file=sys.stderr,
    )
    return 0


def _report_selections(dbs: list[Path], args: argparse.Namespace, zone: tzinfo | None) -> int:
    from animalclap_edge.report import ReportError
    from animalclap_edge.selections import write_selections

    if not args.out:
        raise ReportError(f"{args.what} writes a file per recording: give --out FOLDER")
    if args.top is not None:
        raise ReportError(f"--top chooses the labels `activity` draws; `{args.what}` has every one")
    w = write_selections(
        dbs,
        args.out,
        args.what,
        args.min_probability,
        _taxa(args),
        zone,
        say=_note,
        trusted_clock_only=args.trusted_clock,
    )
    # no table: no folder made, and none named (live audio alone has no file to open)
    where = f"-> {args.out}/" if w.files else f"no table written, {args.out}/ not made"
    print(
        f"{w.detections} detections of {len(w.files)} recordings from {_source(dbs)} {where}",
        file=sys.stderr,
    )
    return 0
