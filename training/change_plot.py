"""A figure of changes in top-1 accuracy, each with its interval, one line per row and
query (finetune_report.png, evaluate --against's compare.png): a reader sees at a
glance which changes the recordings can tell from chance (an interval clear of 0) and
which they cannot."""

from __future__ import annotations

from pathlib import Path

GAIN, LOSS, UNCLEAR = "#1b7837", "#b2182b", "#777777"


def plot_changes(
    changes: dict, labels: dict[str, str], out_png: Path, title: str, xlabel: str
) -> Path:
    """changes {row: {query: paired_change}} (compare.paired_changes); labels {row: the
    row's name}. Rows and queries without recordings are left out."""
    # Figure, not pyplot: no global backend or figure registry touched
    from matplotlib.figure import Figure

    lines = [
        (f"{labels.get(row, row)}, {q} (n={c['n']})", c)
        for row, by_query in changes.items()
        for q, c in by_query.items()
        if c["n"]
    ]
    fig = Figure(figsize=(7.5, 0.9 + 0.32 * max(len(lines), 1)), layout="constrained")
    ax = fig.subplots()
    ax.axvline(0, color="black", lw=0.8)
    for y, (_, c) in enumerate(reversed(lines)):
        colour = GAIN if c["lo"] > 0 else LOSS if c["hi"] < 0 else UNCLEAR
        ax.plot([c["lo"], c["hi"]], [y, y], color=colour, lw=2)
        ax.plot([c["change"]], [y], "o", color=colour)
    ax.set_yticks(range(len(lines)), [name for name, _ in reversed(lines)], fontsize=8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel(xlabel)
    ax.set_title(f"{title}: green gained, red lost, grey cannot be told from chance", fontsize=9)
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110, format="png")
    return out_png
