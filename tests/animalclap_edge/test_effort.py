"""Effort per day: each recording's audio on the days it spans."""

from datetime import timedelta, timezone

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
