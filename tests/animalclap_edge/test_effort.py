"""Effort per day: each recording's audio on the days it spans."""

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from animalclap_edge.effort import UNDATED, seconds_per_day

UTC = timezone.utc


def test_a_recording_over_midnight_is_split_between_its_days():
    got = seconds_per_day([("2024-05-14T23:59:55+00:00", 10.0)], UTC)
    assert got == {"2024-05-14": (5.0, 1), "2024-05-15": (5.0, 1)}


def test_a_live_recording_of_days_counts_whole_days_between():
    got = seconds_per_day([("2024-05-14T12:00:00+00:00", 3 * 86400.0)], UTC)
    assert got == {
        "2024-05-14": (43200.0, 1),
        "2024-05-15": (86400.0, 1),
        "2024-05-16": (86400.0, 1),
        "2024-05-17": (43200.0, 1),
    }


def test_days_are_local_with_an_offset_and_undated_audio_is_kept_apart():
    recs = [("2024-05-14T22:30:00+00:00", 1800.0), (None, 60.0), (None, 30.0)]
    got = seconds_per_day(recs, timezone(timedelta(hours=2)))
    assert got == {"2024-05-15": (1800.0, 1), UNDATED: (90.0, 2)}
    assert sum(s for s, _ in got.values()) == pytest.approx(1890.0)


def _midnight_utc(zone: ZoneInfo, day: date) -> datetime:
    """The first instant of `day` in `zone`, in UTC, by zoneinfo: of the instants
    00:00 can be (two where the clocks skipped it or it came twice), the first whose
    local date is `day` (a skipped one read with the offset after is still the day before)."""
    t = datetime.combine(day, time(), zone)
    at = [u.astimezone(UTC) for u in (t, t.replace(fold=1))]
    return min(u for u in at if u.astimezone(zone).date() == day)


@pytest.mark.parametrize(
    "zone, start, hours",
    [
        # Berlin leaves summer time at 01:00 UTC on 25 October 2026: a day of 25 hours
        ("Europe/Berlin", "2026-10-24T22:00:00+00:00", [25, 23]),
        # ... and enters it at 01:00 UTC on 29 March 2026: a day of 23
        ("Europe/Berlin", "2026-03-28T23:00:00+00:00", [23, 24, 1]),
        # Sao Paulo changed at midnight: 2018-11-04 began at 01:00 (23 hours), and
        # 2019-02-16 ran to 00:00 of the 17th an hour late (25 hours)
        ("America/Sao_Paulo", "2018-11-03T03:00:00+00:00", [24, 23, 1]),
        ("America/Sao_Paulo", "2019-02-16T02:00:00+00:00", [25, 23]),
    ],
)
def test_a_time_zone_gives_a_day_of_a_clock_change_its_real_length(zone, start, hours):
    """In a time zone a day is not always 24 hours: a recording of 48 hours from local
    midnight fills a day of 23 or 25 and the rest go on the days after, split at the
    zone's own midnights (zoneinfo); a fixed offset's arithmetic made each day 24."""
    z = ZoneInfo(zone)
    t0 = datetime.fromisoformat(start)
    t1 = t0 + timedelta(hours=48)
    first = t0.astimezone(z).date()
    assert _midnight_utc(z, first) == t0  # the recording starts at local midnight
    want = {}
    for k in range(4):
        a, b = (_midnight_utc(z, first + timedelta(days=k + j)) for j in (0, 1))
        if min(b, t1) > a:
            want[(first + timedelta(days=k)).isoformat()] = ((min(b, t1) - a).total_seconds(), 1)
    assert [s / 3600 for s, _ in want.values()] == hours
    assert seconds_per_day([(start, 48 * 3600.0)], z) == want
