"""Two models on the same recordings: each query's change in top-1 accuracy with its
paired interval (`metrics.paired_change`). Used by finetune's before/after report and
by `evaluate --against`, which scores a second model on the first one's split."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from training.metrics import paired_change

POOLS = {"unseen": "unseen species", "all": "all species"}


def paired_changes(before: dict, after: dict, rows: Iterable[str], queries: Iterable[str]) -> dict:
    """{row: {query: paired_change}}: each row's top-1 under each model on the same
    recordings, matched by id. before/after: {row: {"ids": ids, query: hits}}; a row
    missing from either gives {}. Recordings only one side holds are left out, so n
    says what was compared."""
    queries = tuple(queries)
    changes: dict = {}
    for row in rows:
        b, a = before.get(row), after.get(row)
        if not b or not a:
            changes[row] = {}
            continue
        at = {item: i for i, item in enumerate(a["ids"])}
        pairs = [(i, at[item]) for i, item in enumerate(b["ids"]) if item in at]
        changes[row] = {
            q: paired_change([b[q][i] for i, _ in pairs], [a[q][j] for _, j in pairs])
            for q in queries
            if q in b and q in a
        }
    return changes


def eval_changes(base: dict, model: dict) -> dict:
    """{pool: {query: paired_change}} of `model` against `base`, both `evaluate(...,
    keep_hits=True)` results on one split: change = model - base."""

    def rows(res: dict) -> dict:
        return {pool: {"ids": res["hits"]["ids"], **res["hits"][pool]} for pool in POOLS}

    queries = [q for q in model["unseen"] if q in base["unseen"]]
    return paired_changes(rows(base), rows(model), POOLS, queries)


def compare_md(model: str, base: str, changes: dict, base_note: str = "") -> str:
    lines = [
        f"# `{model}` against `{base}`",
        "",
        "Top-1 of each on the same recordings (the first model's split), the change, and "
        "its 95% interval (Newcombe's for paired proportions). Where the interval spans 0 "
        "these recordings cannot tell the two apart; **bold**: a change they can. "
        "`compare.png` shows the same.",
        *(["", base_note] if base_note else []),
        "",
        "| candidates | query | base | model | change (95% interval) | right only with the model / only with the base | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for pool, label in POOLS.items():
        for q, c in changes.get(pool, {}).items():
            if not c["n"]:
                continue
            cell = f"{c['change']:+.3f} ({c['lo']:+.2f} to {c['hi']:+.2f})"
            if c["lo"] > 0 or c["hi"] < 0:
                cell = f"**{cell}**"
            lines.append(
                f"| {label} | {q} | {c['right_before'] / c['n']:.3f} | {c['right_after'] / c['n']:.3f} | {cell} "
                f"| {c['gained']} / {c['lost']} | {c['n']} |"
            )
    return "\n".join(lines) + "\n"


def write_comparison(
    out: Path, model: str, base: str, base_res: dict, res: dict, note: str
) -> dict:
    """compare.json, compare.md and compare.png under out; returns the changes."""
    from training.change_plot import plot_changes

    changes = eval_changes(base_res, res)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"model": model, "base": base, "note": note, "change": changes}
    (out / "compare.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    (out / "compare.md").write_text(compare_md(model, base, changes, note), encoding="utf-8")
    plot_changes(
        changes,
        POOLS,
        out / "compare.png",
        f"{_short(model)} against {_short(base)}",
        "change in top-1 accuracy, model - base (95% interval, same recordings)",
    )
    return changes


def _short(checkpoint: str) -> str:
    """A checkpoint's name for a title: its run folder's for RUN/final or RUN/checkpoint."""
    path = Path(checkpoint)
    return path.parent.name if path.name in ("final", "checkpoint") else path.name
