"""One day written many ways is one site-day; a date that reads two ways is not guessed."""

import pytest

from training.dates import day_of
from training.labelled_audio import site_day


@pytest.mark.parametrize(
    "written",
    [
        "2024-05-14",
        "2024-5-14",
        "2024/05/14",
        "2024.05.14",
        "20240514",
        "5/14/2024",  # month first: 14 is no month
        "14/5/2024",  # day first
        "14.05.2024",
        "14 May 2024",
        "14-May-2024",
        "May 14, 2024",
        "may 14 2024",
        "2024-05-14T06:30:00Z",
        "2024-05-14 06:30",
        "2024-05-14 06:30:12.5 +02:00",
        "14 May 2024 06:30",
        "  2024-05-14  ",
    ],
)
def test_one_day_written_many_ways_is_one_day(written):
    assert day_of(written) == "2024-05-14"


def test_month_names_and_unknown_days():
    assert day_of("3 September 2023") == "2023-09-03"
    assert day_of("Sept 3, 2023") == "2023-09-03"
    assert day_of("August 3 2023 18:00") == "2023-08-03"
    assert day_of("2024-05-00") == "2024-05-00"  # xeno-canto: day not known


@pytest.mark.parametrize(
    "written",
    [
        "5/6/2024",  # 5 June or 6 May
        "2024-13-01",  # no 13th month: kept, not turned into another day
        "14 Mai 2024",  # not an English month name
        "spring 2024",
        "",
        "?",
    ],
)
def test_what_does_not_read_one_way_is_kept_as_written(written):
    assert day_of(written) == " ".join(written.split())


def test_site_days_join_across_formats_and_sites_stay_apart():
    assert site_day("A", "5/14/2024") == site_day("A", "2024-05-14T07:00:00") == "A|2024-05-14"
    assert site_day("A", "2024-05-14") != site_day("B", "2024-05-14")
    assert site_day("A", "5/6/2024") != site_day("A", "2024-05-06")  # not guessed
