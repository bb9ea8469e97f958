"""Recording effort per day beside the detections of that day (`report effort`).

A count of detections means little without the audio behind it: a day with one hour
recorded and a day with twenty are not comparable, and a day with none is no day of
silence. Each recording's audio (`recordings.duration_s`) is spread over the days it
spans from its start time (a live recording can run for months); recordings without a
start time, and the detections in them, count under "undated". Local days are those of
a fixed offset or of a time zone: a day of a change to or from summer time is 23 or 25
hours long, and each detection counts on its own local day.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from animalclap_edge.report import LocalTime, local_day_and_hour, local_zone

UNDATED = "undated"


def seconds_per_day(
    recordings: Iterable[tuple[str | None, float]], zone: tzinfo
) -> dict[str, tuple[float, int]]:
    """(start_time_utc ISO or None, duration_s) per recording -> day (YYYY-MM-DD in
    `zone`, or UNDATED) -> (seconds of audio on that day, recordings on that day).

    Counted in UTC, so that a day of a daylight saving change in a time zone gets the
    seconds that really passed on it (Python's arithmetic within one zone is that of
    its wall clock: 00:00 to 00:00 would be 24 hours on a day of 23)."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for start, duration in recordings:
        if start is None:
            out[UNDATED][0] += duration
            out[UNDATED][1] += 1
            continue
        t = datetime.fromisoformat(start).astimezone(timezone.utc)
        end = t + timedelta(seconds=duration)
        while True:  # one step per day the recording touches
            today = t.astimezone(zone).date()
            cut = min(end, next_midnight(t, today, zone))
            day = out[today.isoformat()]
            day[0] += (cut - t).total_seconds()
            day[1] += 1
            if cut >= end:
                break
            t = cut
    return {d: (s, int(n)) for d, (s, n) in out.items()}


def next_midnight(t: datetime, today: date, zone: tzinfo) -> datetime:
    """The UTC instant after `t` (UTC) at which the local day after `today` begins in
    `zone`. Where the clocks change at midnight (Sao Paulo until 2019: 00:00 became
    01:00) the day begins at the instant of the change; where 00:00 comes twice, at
    the first (fold=0), or the second when `t` is past that."""
    for fold in (0, 1):
        local = datetime.combine(today + timedelta(days=1), time(), zone).replace(fold=fold)
        midnight = local.astimezone(timezone.utc)
        if midnight > t:
            return midnight
    return t + timedelta(days=1)  # not reached with a real zone: a step all the same


def calendar(days: set[str]) -> list[str]:
    """Every day from the first to the last of `days` (YYYY-MM-DD), UNDATED last where
    it is one: a day the recorder did not record is a row of no audio (and no rate),
    not a gap that a season's mean per day would skip."""
    dated = sorted(d for d in days if d != UNDATED)
    out = []
    if dated:
        day, last = (
            datetime.fromisoformat(dated[0]).date(),
            datetime.fromisoformat(dated[-1]).date(),
        )
        while day <= last:
            out.append(day.isoformat())
            day += timedelta(days=1)
    return out + ([UNDATED] if UNDATED in days else [])


def effort_table(
    conn: sqlite3.Connection,
    where: str,
    args: Sequence[object],
    utc_offset_h: LocalTime,
    trusted_only: bool,
) -> tuple[list[str], Iterator[list[object]]]:
    """Header and rows: per day, the recordings and hours of audio, the detections that
    pass `where` (the report's filters) and detections per hour of audio. Days are UTC,
    or local with `utc_offset_h` (hours or a time zone: `report.local_zone`)."""
    given = local_zone(utc_offset_h)
    zone = timezone.utc if given is None else given
    day, _ = local_day_and_hour(conn, zone)
    recs = conn.execute(  # a skipped file held no audio the model heard
        "SELECT start_time_utc, duration_s FROM recordings WHERE status != 'skipped'"
        + (" AND clock_trusted = 1" if trusted_only else "")
    )
    audio = seconds_per_day(recs, zone)
    dets = dict(
        conn.execute(
            f"SELECT coalesce({day}, '{UNDATED}') AS day, count(*) "
            f"FROM detections {where} GROUP BY day",
            args,
        ).fetchall()
    )
    days = calendar(set(audio) | set(dets))
    column = "day_utc" if given is None else "day_local"
    header = [column, "recordings", "audio_h", "detections", "detections_per_hour"]

    def rows() -> Iterator[list[object]]:
        for d in days:
            seconds, n = audio.get(d, (0.0, 0))
            hours, found = seconds / 3600, dets.get(d, 0)
            rate = round(found / hours, 3) if hours > 0 else None  # no audio: no rate
            # 6 places (3.6 ms): at 4, a day of 1.3 s read 0.0004 h, and its own rate
            # (8,365 an hour) could not be had back from the table (7,500)
            yield [d, n, round(hours, 6), found, rate]

    return header, rows()
