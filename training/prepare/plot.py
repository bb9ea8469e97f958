"""report.png of a prepared folder: how recordings spread over species (the long tail
that balanced epochs even out) and what was left out, and why."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# the paper's balanced epoch: species with fewer recordings are drawn with replacement
CLIPS_PER_SPECIES = 30


def plot_prepared(report: dict, per_species: Sequence[int], out_png: Path) -> Path:
    """Two panels: recordings per species, most recorded first (log-log), against the
    clips a balanced epoch takes of each; and prepared vs left-out rows per reason."""
    # Figure, not pyplot: no global backend or figure registry touched
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(11, 4), layout="constrained")
    tail, reasons = fig.subplots(1, 2, width_ratios=(3, 2))
    counts = np.sort(np.asarray(per_species, dtype=float))[::-1]
    if len(counts):
        rank = np.arange(1, len(counts) + 1)
        tail.plot(rank, counts, lw=1.5)
        tail.set_xscale("log")
        tail.set_yscale("log")
        under = int((counts < CLIPS_PER_SPECIES).sum())
        tail.axhline(
            CLIPS_PER_SPECIES,
            color="grey",
            ls="--",
            lw=1,
            label=f"{CLIPS_PER_SPECIES} clips per species in a balanced epoch",
        )
        tail.legend(
            loc="lower left",
            fontsize=8,
            title=f"{under} species below: drawn with replacement",
            title_fontsize=8,
        )
    tail.set_xlabel("species, most recorded first")
    tail.set_ylabel("recordings")
    tail.set_title(f"{report['recordings']} recordings, {report['hours']} h, {len(counts)} species")

    rows = [("prepared", report["recordings"]), *report["rejected"].items()]
    names = [name for name, _ in rows][::-1]
    values = [n for _, n in rows][::-1]
    colours = ["tab:red"] * (len(rows) - 1) + ["tab:green"]
    reasons.barh(names, values, color=colours)
    for y, v in enumerate(values):
        reasons.annotate(f" {v}", (v, y), va="center", fontsize=8)
    if max(values) > 50 * min(values):  # a few hundred rejections beside 700k prepared
        reasons.set_xscale("log")
        # decades only: labelled minor ticks (2x10^1, 3x10^1, ...) ran into each other
        reasons.xaxis.set_minor_formatter(NullFormatter())
    reasons.set_xlabel("manifest rows" + (" (log)" if reasons.get_xscale() == "log" else ""))
    reasons.set_title(f"{report['manifest_rows']} manifest rows")
    reasons.margins(x=0.25)
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110, format="png")  # not from the suffix: a temporary's is .tmp
    return out_png
