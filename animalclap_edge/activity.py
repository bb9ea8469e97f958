"""When each label was heard: detections per hour of day and per day, as a figure.

The question an ecologist asks a card first: which species called, on which days,
and at what time of day (the diel pattern: dawn chorus, dusk, night). Read from the
database read-only (`report.reading`); matplotlib is imported only to draw,
and only its object API (no pyplot, no global backend switch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animalclap_edge.report import (
    ReportError,
    check_utc_offset,
    detection_filters,
    open_out,
    out_error,
    out_target,
    reading,
    taxon_filter,
)

PLOT_INSTALL_HINT = (
    "the activity figure needs matplotlib: pip install 'animalclap-edge[plot]' "
    "(on the computer the card is read on; a recorder does not need it)"
)

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")

# One row per label: the species' scientific name, or "unknown <taxon> (<level>)".
_LABEL = (
    "CASE WHEN level = 'species' THEN scientific_name ELSE common_name || ' (' || level || ')' END"
)


@dataclass(frozen=True)
class Activity:
    """Detections of the `labels` (most detected first) by hour of day and by day."""

    labels: list[str]
    by_hour: np.ndarray  # (labels, 24) detections per hour of day, in local time
    days: list[str]  # YYYY-MM-DD (local), in order
    by_day: np.ndarray  # (labels, days) detections per day
    utc_offset_h: float
    undated: int  # detections without a wall time, left out
    untrusted: int  # detections counted whose clock was not trusted
    total: int  # detections counted (of the drawn labels)
    all_labels: int = 0  # labels with a dated detection, drawn or not
    all_total: int = 0  # their detections


def activity(
    db: str | Path,
    top: int = 12,
    utc_offset_h: float = 0.0,
    min_probability: float | None = None,
    taxa: Sequence[str] = (),
    say: Callable[[str], None] = lambda note: None,
) -> Activity:
    """Count the `top` labels' detections per local hour and day (local = UTC + offset),
    of the `taxa` only if given (as `report.taxon_filter` reads them; `say` gets its
    notes)."""
    if top < 1:
        raise ReportError(f"--top must be at least 1, got {top}")
    check_utc_offset(utc_offset_h)
    clauses, args = detection_filters("probability", min_probability)
    shift = f"{utc_offset_h:+.4f} hours"
    with reading(db) as conn:
        more, more_args, notes = taxon_filter(conn, taxa)
        for note in notes:
            say(note)
        clauses, args = clauses + more, args + more_args
        where = "WHERE " + " AND ".join(["start_time_utc IS NOT NULL", *clauses])
        undated = conn.execute(
            "SELECT count(*) FROM detections WHERE start_time_utc IS NULL"
        ).fetchone()[0]
        counts = conn.execute(
            f"SELECT {_LABEL} AS label, count(*) AS n FROM detections {where} "
            "GROUP BY label ORDER BY n DESC, label",
            args,
        ).fetchall()  # one row per label: at most the catalogue
        labels = [label for label, _ in counts[:top]]
        # only the drawn labels' rows: a season of a large catalogue is otherwise
        # labels x days x 24 tuples in memory
        marks = ", ".join("?" * len(labels))
        rows = conn.execute(
            f"SELECT {_LABEL} AS label, strftime('%Y-%m-%d', start_time_utc, ?) AS day, "
            "CAST(strftime('%H', start_time_utc, ?) AS INTEGER) AS hour, "
            f"count(*), sum(clock_trusted = 0) FROM detections {where} AND {_LABEL} IN ({marks}) "
            "GROUP BY label, day, hour",
            [shift, shift, *args, *labels],
        ).fetchall()
    index = {label: i for i, label in enumerate(labels)}
    rows = [r for r in rows if r[1] is not None]
    days = sorted({r[1] for r in rows})
    day_index = {d: i for i, d in enumerate(days)}
    by_hour = np.zeros((len(labels), 24), np.int64)
    by_day = np.zeros((len(labels), len(days)), np.int64)
    untrusted = 0
    for label, day, hour, n, n_untrusted in rows:
        by_hour[index[label], hour] += n
        by_day[index[label], day_index[day]] += n
        untrusted += n_untrusted
    return Activity(
        labels=labels,
        by_hour=by_hour,
        days=days,
        by_day=by_day,
        utc_offset_h=utc_offset_h,
        undated=undated,
        untrusted=untrusted,
        total=int(by_hour.sum()),
        all_labels=len(counts),
        all_total=sum(n for _, n in counts),
    )


def plot_activity(a: Activity, out: str | Path, title: str = "") -> Path:
    """Write the figure (PNG, SVG or PDF by `out`'s suffix): a heat map of detections
    per hour of day, and one per day, for each label."""
    out = Path(out)
    out_target(out, FIGURE_SUFFIXES)  # a wrong name is said before anything is drawn
    if not a.labels:
        raise ReportError("no dated detections to plot (check --min-probability)")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ReportError(PLOT_INSTALL_HINT) from e

    height = 1.6 + 0.32 * len(a.labels)
    fig = Figure(figsize=(13, height), layout="constrained")
    FigureCanvasAgg(fig)
    hours_ax, days_ax = fig.subplots(1, 2, width_ratios=[1, max(1.0, min(3.0, len(a.days) / 12))])
    # Hours as each label's share, so a rare species' pattern shows beside a common
    # one's; days as counts, so the season's busy days stand out.
    share = a.by_hour / np.maximum(1, a.by_hour.sum(axis=1, keepdims=True))
    for ax, values, ticks, xlabel, what, unit in (
        (hours_ax, share, [f"{h:02d}" for h in range(24)], "hour of day",
         "each label's detections by hour (share)", "share"),
        (days_ax, a.by_day, a.days, "day", "detections per day", "detections"),
    ):  # fmt: skip
        image = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(what, fontsize=8)
        ax.set_yticks(range(len(a.labels)), a.labels, fontsize=8)
        step = max(1, len(ticks) // 12)
        ax.set_xticks(range(0, len(ticks), step), ticks[::step], fontsize=7, rotation=90)
        ax.set_xlabel(xlabel)
        fig.colorbar(image, ax=ax, label=unit, shrink=0.9)
    days_ax.set_yticks([])
    zone = "UTC" if a.utc_offset_h == 0 else f"UTC{a.utc_offset_h:+g} h"
    drawn = f"{a.total} detections of {len(a.labels)} labels"
    if a.all_labels > len(a.labels):
        drawn += f" (the most detected of {a.all_labels} labels, {a.all_total} detections)"
    caveats = [f"{drawn}, times in {zone}"]
    if a.untrusted:
        caveats.append(f"{a.untrusted} of them timed by an untrusted clock")
    if a.undated:
        caveats.append(f"{a.undated} without a time left out")
    fig.suptitle(((title + "\n") if title else "") + "; ".join(caveats), fontsize=9)
    # a pipe or /dev/stdout may have any name: PNG unless it names another format
    fmt = out.suffix.lower()[1:] if out.suffix.lower() in FIGURE_SUFFIXES else "png"
    with open_out(out, FIGURE_SUFFIXES, binary=True) as f:
        try:
            fig.savefig(f, dpi=120, format=fmt)
        except OSError as e:
            raise out_error(out, e) from None
    return out
