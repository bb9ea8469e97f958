"""The day a recording's date names, written one way: recordings are grouped by site and
day, and a manifest merged from two sources writes one day two ways (xeno-canto's
`2024-05-14`, a spreadsheet's `5/14/2024` or `14 May 2024`). Written as given, those were
two site-days, and one site's day could fall on both sides of the train/val split.

Only what reads one way is rewritten: `5/6/2024` may be the 5th of June or the 6th of
May, so it is left as written (its own group), never guessed.
"""

from __future__ import annotations

import functools
import re

# The time of day after a date ("2024-06-01T06:30:00Z", "2024-06-01 06:30", a Parquet
# timestamp as prepare writes it, "14 May 2024 06:30"): cut, since the day groups.
_TIME_OF_DAY = re.compile(
    r"(?:T|\s+)\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d*)?)?\s*(?:Z|UTC|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)
_YEAR_FIRST = re.compile(r"^(\d{4})([-/.])(\d{1,2})\2(\d{1,2})$")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_YEAR_LAST = re.compile(r"^(\d{1,2})([-/.])(\d{1,2})\2(\d{4})$")
_MONTH_NAMES = (
    "jan january", "feb february", "mar march", "apr april", "may", "jun june", "jul july",
    "aug august", "sep sept september", "oct october", "nov november", "dec december",
)  # fmt: skip
_MONTHS = {m: i + 1 for i, names in enumerate(_MONTH_NAMES) for m in names.split()}
_DAY_MONTH_NAME = re.compile(r"^(\d{1,2})[\s-]+([a-z]+)\.?,?[\s-]+(\d{4})$", re.IGNORECASE)
_MONTH_NAME_DAY = re.compile(r"^([a-z]+)\.?[\s-]+(\d{1,2}),?[\s-]+(\d{4})$", re.IGNORECASE)


def _iso(year: str | int, month: int, day: int) -> str | None:
    # day 0: xeno-canto's "day not known" (2024-05-00), a day of its own as written
    if 1 <= month <= 12 and 0 <= day <= 31:
        return f"{int(year):04d}-{month:02d}-{day:02d}"
    return None


def _parse(date: str) -> str | None:
    if m := _YEAR_FIRST.match(date):
        return _iso(m[1], int(m[3]), int(m[4]))
    if m := _COMPACT.match(date):
        return _iso(m[1], int(m[2]), int(m[3]))
    if m := _YEAR_LAST.match(date):
        a, b = int(m[1]), int(m[3])
        if a == b or (a > 12 >= b):  # day first (14/5/2024), or either way the same
            return _iso(m[4], b, a)
        if b > 12 >= a:  # month first (5/14/2024)
            return _iso(m[4], a, b)
        return None  # 5/6/2024: either; not guessed
    if m := _DAY_MONTH_NAME.match(date):
        month = _MONTHS.get(m[2].lower())
        return _iso(m[3], month, int(m[1])) if month else None
    if m := _MONTH_NAME_DAY.match(date):
        month = _MONTHS.get(m[1].lower())
        return _iso(m[3], month, int(m[2])) if month else None
    return None


# Called once per recording when a prepared set of millions opens, on a few thousand
# distinct dates: the regexes run once per date.
@functools.lru_cache(maxsize=65536)
def day_of(date: str) -> str:
    """The day `date` names, as YYYY-MM-DD where it reads one way; else the date as
    written (its time of day cut off), which groups only with dates written alike."""
    date = " ".join((date or "").split())
    m = _TIME_OF_DAY.search(date)
    day = date[: m.start()] if m and m.start() > 0 else date
    return _parse(day) or day
