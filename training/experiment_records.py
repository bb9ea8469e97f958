"""A sweep's records: the figures of its finished runs without their checkpoints.

A 15-run sweep takes about 7 h on 2 cores, longer than one working session or a
pre-emptible job, and its run folders (checkpoints, the rendered benchmark) are too
large to keep in a repository. The records folder keeps what the page is written
from (each run's split, training summary, evaluation and probe reports: ~100 kB a
run), so a sweep resumes on another machine from the records alone, and the shipped
results page can be rewritten from records committed beside it.

Layout: RECORDS/sweep.json (the sweep's settings) and RECORDS/<variant>-seed<s>/ with
the files of RECORD_FILES that the run has, at the same relative paths as in --out.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

from training.atomic import write_whole

# What aggregation and the page read, and what a reader needs to trust it: the split
# (which species were unseen) and the training summary (steps, settings).
RECORD_FILES = (
    "split.json",
    "train_summary.json",
    "eval/eval.json",
    "eval/eval.md",
    "probe/probe.json",
    "probe/probe.md",
)


def _copy_run(src: Path, dst: Path) -> int:
    copied = 0
    for rel in RECORD_FILES:
        if not (src / rel).is_file():
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # a copy cut short never reads as a finished run
        write_whole(target, partial(shutil.copyfile, src / rel))
        copied += 1
    return copied


def keep(out: Path, records: Path, run_name: str) -> None:
    """Copy one finished run's records from the sweep's folder into RECORDS."""
    _copy_run(out / run_name, records / run_name)


def sync(
    out: Path,
    records: Path,
    variant_of: dict[str, str],
    finished: Callable[[Path, str], bool],
) -> tuple[list[str], list[str]]:
    """Make both folders hold every run that either has finished; `variant_of` maps
    each run's folder name to its variant (what `finished` is judged by).

    A run finished in OUT and not in RECORDS is kept (a sweep begun without records);
    one finished only in RECORDS is restored into OUT, so the sweep skips it and the
    page includes it. A run finished in both is left as OUT has it. Returns the names
    (restored, kept)."""
    restored, kept = [], []
    for name, variant in variant_of.items():
        in_out = finished(out / name, variant)
        in_records = finished(records / name, variant)
        if in_records and not in_out:
            _copy_run(records / name, out / name)
            restored.append(name)
        elif in_out and not in_records:
            keep(out, records, name)
            kept.append(name)
    return restored, kept


def write_settings(records: Path, settings: dict) -> None:
    records.mkdir(parents=True, exist_ok=True)
    (records / "sweep.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
