"""When each label was heard: detections per hour of day and per day, as a figure.

The question an ecologist asks a card first: which species called, on which days,
and at what time of day (the diel pattern: dawn chorus, dusk, night). Read from the
database read-only (`report.reading`); matplotlib is imported only to draw,
and only its object API (no pyplot, no global backend switch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path

import numpy as np

from animalclap_edge.report import (
    LocalTime,
    ReportError,
    card_notes,
    card_paths,
    detection_selection,
    local_day_and_hour,
    local_zone,
    open_out,
    out_error,
    out_target,
    reading,
    zone_label,
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


# Longer than this, one column a day is no longer readable, and such a span on one
# card is almost always a clock that was unset (1970, 2000, the board's build date).
MAX_DAYS = 731


@dataclass(frozen=True)
class Activity:
    """Detections of the `labels` (most detected first) by hour of day and by day."""

    labels: list[str]
    by_hour: np.ndarray  # (labels, 24) detections per hour of day, in local time
    days: list[str]  # YYYY-MM-DD (local): every day from the first recorded to the last
    by_day: np.ndarray  # (labels, days) detections per day
    utc_offset_h: float | str  # hours added to UTC, or the time zone's name (Europe/Berlin)
    undated: int  # detections without a wall time (of those selected), left out
    untrusted: int  # detections counted whose clock was not trusted
    total: int  # detections counted (of the drawn labels)
    all_labels: int = 0  # labels with a dated detection, drawn or not
    all_total: int = 0  # their detections
    # per day: whether anything was recorded (a recording, or a detection, that day);
    # a day without is drawn apart from a day recorded with nothing heard
    recorded: np.ndarray | None = None
    untrusted_left_out: int = 0  # detections left out by trusted_clock_only
    nothing: str = ""  # why there is nothing to draw, when `labels` is empty


def activity(
    db: str | Path | Sequence[str | Path],
    top: int = 12,
    utc_offset_h: LocalTime = 0.0,
    min_probability: float | None = None,
    taxa: Sequence[str] = (),
    say: Callable[[str], None] = lambda note: None,
    trusted_clock_only: bool = False,
) -> Activity:
    """Count the `top` labels' detections per local hour and day (local = UTC + offset
    hours, or in a time zone by name, each detection at its own instant's offset: the
    hours of a season across a change to or from summer time stay those of the clock),
    of the `taxa` only if given (as `report.taxon_filter` reads them; `say` gets its
    notes), and with `trusted_clock_only` only what a trusted clock timed.

    `db` is one database or several (the cards of several recorders: counted together,
    the top labels chosen over all of them; each card is read twice, one at a time).
    The days are the calendar from the first day recorded to the last (recordings
    that were processed, and detections), each day marked recorded or not."""
    if top < 1:
        raise ReportError(f"--top must be at least 1, got {top}")
    given = local_zone(utc_offset_h)
    zone = timezone.utc if given is None else given
    dbs = card_paths(db)
    cards = [
        _card(d, min_probability, taxa, trusted_clock_only, card_notes(say, d, len(dbs) > 1))
        for d in dbs
    ]
    totals: dict[str, int] = {}
    for c in cards:
        for label, n in c.counts:
            totals[label] = totals.get(label, 0) + n
    counts = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    labels = [label for label, _ in counts[:top]]
    rows = [r for c in cards for r in c.rows(labels, zone) if r[1] is not None]
    recordings = [r for c in cards for r in c.recordings]
    card = sum(c.detections for c in cards)
    undated = sum(c.undated for c in cards)
    untrusted_left_out = sum(c.untrusted_left_out for c in cards)
    untrusted_everywhere = [sum(c.untrusted_everywhere[i] for c in cards) for i in (0, 1)]
    index = {label: i for i, label in enumerate(labels)}
    heard = {date.fromisoformat(r[1]) for r in rows}
    on_days = _recorded_days(recordings, zone) | heard
    nothing = ""
    if not labels:
        nothing = _nothing_to_draw(card, undated, min_probability, taxa, trusted_clock_only)
    days: list[date] = []
    if on_days and labels:
        first, last = min(on_days), max(on_days)
        if (last - first).days + 1 > MAX_DAYS:
            raise ReportError(_too_long(first, last, trusted_clock_only, *untrusted_everywhere))
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    day_index = {d.isoformat(): i for i, d in enumerate(days)}
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
        days=[d.isoformat() for d in days],
        by_day=by_day,
        utc_offset_h=_hours_or_name(zone),
        undated=undated,
        untrusted=untrusted,
        total=int(by_hour.sum()),
        all_labels=len(counts),
        all_total=sum(n for _, n in counts),
        recorded=np.array([d in on_days for d in days], bool),
        untrusted_left_out=untrusted_left_out,
        nothing=nothing,
    )


@dataclass
class _Card:
    """What one database gives `activity`: its selection (the SQL condition and its
    parameters), per-label counts, and what the figure's title and calendar need."""

    db: Path
    where: str
    args: list[object]
    counts: list[tuple[str, int]]  # (label, dated detections) of the selection
    detections: int  # all of the card's
    undated: int  # of the selection
    untrusted_left_out: int
    recordings: list[tuple]  # (start_time_utc, duration_s, clock_trusted), not skipped
    untrusted_everywhere: tuple[int, int]  # dated detections and recordings

    def rows(self, labels: list[str], zone: tzinfo) -> list[tuple]:
        """(label, local day, local hour, detections, untrusted) of the drawn labels: only
        theirs, since a season of a large catalogue is otherwise labels x days x 24. Each
        detection's day and hour are those of its own instant in `zone`."""
        if not labels:
            return []
        marks = ", ".join("?" * len(labels))
        with reading(self.db) as conn:
            day, hour = local_day_and_hour(conn, zone)
            return conn.execute(
                f"SELECT {_LABEL} AS label, {day} AS day, {hour} AS hour, "
                f"count(*), sum(clock_trusted = 0) FROM detections {self.where} "
                f"AND {_LABEL} IN ({marks}) GROUP BY label, day, hour",
                [*self.args, *labels],
            ).fetchall()


def _card(
    db: Path,
    min_probability: float | None,
    taxa: Sequence[str],
    trusted_clock_only: bool,
    say: Callable[[str], None],
) -> _Card:
    with reading(db) as conn:
        clauses, args = detection_selection(conn, db, min_probability, taxa, say)
        selected = " AND ".join(clauses) or "1"  # the user's selection, before the clock's
        untrusted_left_out = 0
        if trusted_clock_only:
            untrusted_left_out = conn.execute(
                f"SELECT count(*) FROM detections WHERE {selected} AND clock_trusted = 0", args
            ).fetchone()[0]
            clauses = [*clauses, "clock_trusted = 1"]
        where = "WHERE " + " AND ".join(["start_time_utc IS NOT NULL", *clauses])
        undated = conn.execute(
            "SELECT count(*) FROM detections WHERE "
            + " AND ".join(["start_time_utc IS NULL", *clauses]),
            args,
        ).fetchone()[0]  # of the selection: the title speaks of what was asked for
        return _Card(
            db=db,
            where=where,
            args=args,
            counts=conn.execute(
                f"SELECT {_LABEL} AS label, count(*) AS n FROM detections {where} GROUP BY label",
                args,
            ).fetchall(),  # one row per label: at most the catalogue
            detections=conn.execute("SELECT count(*) FROM detections").fetchone()[0],
            undated=undated,
            untrusted_left_out=untrusted_left_out,
            # one row per recording; a skipped one was not listened to
            recordings=conn.execute(
                "SELECT start_time_utc, duration_s, clock_trusted FROM recordings "
                "WHERE status != 'skipped' AND start_time_utc IS NOT NULL"
                + (" AND clock_trusted = 1" if trusted_clock_only else "")
            ).fetchall(),
            untrusted_everywhere=conn.execute(
                "SELECT (SELECT count(*) FROM detections WHERE clock_trusted = 0 "
                "AND start_time_utc IS NOT NULL), "
                "(SELECT count(*) FROM recordings WHERE clock_trusted = 0 "
                "AND start_time_utc IS NOT NULL)"
            ).fetchone(),
        )


def _hours_or_name(zone: tzinfo) -> float | str:
    """`Activity.utc_offset_h`: a fixed offset's hours, or a time zone's name."""
    if isinstance(zone, timezone):
        offset = zone.utcoffset(None)
        return offset.total_seconds() / 3600
    return zone_label(zone)


def _recorded_days(recordings: list[tuple], zone: tzinfo) -> set[date]:
    """The local days in `zone` the recordings cover, from their start to their end."""
    days: set[date] = set()
    for start_utc, duration_s, _ in recordings:
        try:
            start = datetime.fromisoformat(start_utc).astimezone(timezone.utc)
        except ValueError:
            raise ReportError(
                f"recordings: start_time_utc {start_utc!r} is not an ISO 8601 time with its "
                "UTC offset; the database may be damaged"
            ) from None
        # the last instant recorded, so a recording ending at midnight adds no day; in
        # UTC, as a zone's own arithmetic is its wall clock's, blind to a DST change
        end = start + timedelta(seconds=max(0.0, float(duration_s) - 1e-3))
        day, last = start.astimezone(zone).date(), end.astimezone(zone).date()
        while day <= last:
            days.add(day)
            day += timedelta(days=1)
    return days


def _nothing_to_draw(
    card: int,
    undated: int,
    min_probability: float | None,
    taxa: Sequence[str],
    trusted_clock_only: bool,
) -> str:
    """Why no label has a dated detection, naming the filter that left none."""
    if card == 0:
        return "nothing to draw: the database has no detections"
    asked = [f"--min-probability {min_probability:g}"] if min_probability is not None else []
    asked += [f"--taxon {t.strip()}" for t in taxa]
    asked += ["--trusted-clock"] if trusted_clock_only else []
    if asked:
        return (
            f"nothing to draw: no detection with a time passes {' '.join(asked)} "
            f"(the database has {card} detections)"
        )
    return (
        f"nothing to draw: none of the database's {card} detections has a time "
        f"({undated} without one: no clock, e.g. raw PCM from stdin)"
    )


def _too_long(
    first: date, last: date, trusted_clock_only: bool, untrusted_dets: int, untrusted_recs: int
) -> str:
    n = (last - first).days + 1
    why = f"the days run from {first} to {last} ({n:,} days, more than {MAX_DAYS} to draw)"
    if not trusted_clock_only and (untrusted_dets or untrusted_recs):
        return (
            f"{why}: {untrusted_dets} detections and {untrusted_recs} recordings were timed by "
            "an untrusted clock (`report recordings` gives each one's clock_note); leave them "
            "out with --trusted-clock"
        )
    return (
        f"{why}: a clock that was set wrong spreads a card over years; `report recordings` "
        "gives each recording's time and clock_note"
    )


def plot_activity(a: Activity, out: str | Path, title: str = "") -> Path:
    """Write the figure (PNG, SVG or PDF by `out`'s suffix): a heat map of detections
    per hour of day, and one per day, for each label."""
    out = Path(out)
    out_target(out, FIGURE_SUFFIXES)  # a wrong name is said before anything is drawn
    if not a.labels:
        raise ReportError(a.nothing or "nothing to draw")
    try:
        import matplotlib
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
    # A day nothing was recorded is grey, apart from a day recorded with nothing heard
    # (0, the colour map's darkest): a gap in the deployment is not an absence.
    recorded = a.recorded if a.recorded is not None else np.ones(len(a.days), bool)
    per_day = np.ma.masked_array(a.by_day, np.broadcast_to(~recorded, a.by_day.shape))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0")
    gaps = int((~recorded).sum())
    days_title = "detections per day" + (
        f" (grey: {gaps} days with nothing recorded)" if gaps else ""
    )
    for ax, values, ticks, xlabel, what, unit in (
        (hours_ax, share, [f"{h:02d}" for h in range(24)], "hour of day",
         "each label's detections by hour (share)", "share"),
        (days_ax, per_day, a.days, "day", days_title, "detections"),
    ):  # fmt: skip
        image = ax.imshow(values, aspect="auto", cmap=cmap, interpolation="nearest")
        ax.set_title(what, fontsize=8)
        ax.set_yticks(range(len(a.labels)), a.labels, fontsize=8)
        step = max(1, len(ticks) // 12)
        ax.set_xticks(range(0, len(ticks), step), ticks[::step], fontsize=7, rotation=90)
        ax.set_xlabel(xlabel)
        fig.colorbar(image, ax=ax, label=unit, shrink=0.9)
    days_ax.set_yticks([])
    zone = (
        a.utc_offset_h
        if isinstance(a.utc_offset_h, str)
        else zone_label(timezone(timedelta(hours=a.utc_offset_h)))
    )
    drawn = f"{a.total} detections of {len(a.labels)} labels"
    if a.all_labels > len(a.labels):
        drawn += f" (the most detected of {a.all_labels} labels, {a.all_total} detections)"
    caveats = [f"{drawn}, times in {zone}"]
    if a.untrusted:
        caveats.append(f"{a.untrusted} of them timed by an untrusted clock")
    if a.untrusted_left_out:
        caveats.append(f"{a.untrusted_left_out} timed by an untrusted clock left out")
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
