"""Recording schedules: the Sun against published tables, windows, duty cycles, and a
source that only holds the input device inside its windows."""

from __future__ import annotations

import io
import random
import sqlite3
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from animalclap_edge.audio.decode import read_blocks
from animalclap_edge.config import ConfigError, config_from_dict, load_config
from animalclap_edge.detector import Detector
from animalclap_edge.schedule import (
    DutyCycle,
    Schedule,
    ScheduledSource,
    ScheduleError,
    parse_window,
    sun_times,
)
from animalclap_edge.sources import Recording, StdinSource, live_recording_id
from animalclap_edge.store import DetectionStore

UTC = timezone.utc
SR = 16000


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


LONDON = (51.5, -0.1167)  # timeanddate.com's London: 51 deg 30' N, 0 deg 07' W
TROMSO = (69.6492, 18.9553)

# (place, lat, lon, local date, sunrise UTC, sunset UTC) as published by timeanddate.com.
# London rows: the test data of the astral package (src/test/test_sun_utc.py, "Test data
# taken from http://www.timeanddate.com/sun/uk/london"). Other rows: the test data of
# Maps.me (omim base/base_tests/sunrise_sunset_test.cpp, "Test site for sunrise and
# sunset is http://www.timeanddate.com/sun/"), with the coordinates that file gives.
# Kiritimati (1.9 N) is the near-equator case: no published Nairobi figure was
# available offline. Several events fall on another UTC date than the local one.
PUBLISHED = [
    ("London", *LONDON, "2015-01-01", "2015-01-01 08:06", "2015-01-01 16:01"),
    ("London", *LONDON, "2015-12-01", "2015-12-01 07:43", "2015-12-01 15:55"),
    ("London", *LONDON, "2015-12-12", "2015-12-12 07:56", "2015-12-12 15:51"),
    ("London", *LONDON, "2015-12-25", "2015-12-25 08:05", "2015-12-25 15:55"),
    ("London", 51.5, -0.12, "2015-07-01", "2015-07-01 03:47", "2015-07-01 20:21"),
    ("Kiritimati", 1.928797, -157.494678, "2015-07-01", "2015-07-01 16:28", "2015-07-02 04:41"),
    ("Honolulu", 21.307431, -157.848568, "2015-12-23", "2015-12-23 17:06", "2015-12-24 03:56"),
    ("Cape Town", -33.929573, 18.428439, "2015-11-11", "2015-11-11 03:38", "2015-11-11 17:24"),
    ("Melbourne", -37.829188, 144.957976, "2015-02-12", "2015-02-11 19:46", "2015-02-12 09:24"),
    ("Reykjavik", 64.120467, -21.809448, "2015-06-22", "2015-06-22 02:56", "2015-06-23 00:04"),
]


@pytest.mark.parametrize(
    "place, lat, lon, day, sunrise, sunset", PUBLISHED, ids=[f"{r[0]}-{r[3]}" for r in PUBLISHED]
)
def test_sunrise_sunset_match_published_values(place, lat, lon, day, sunrise, sunset):
    st = sun_times(lat, lon, date.fromisoformat(day))
    assert st.polar is None
    # Published to the minute: +-2 min covers that rounding and the ~1 min of the NOAA equations.
    assert abs(st.sunrise - at(sunrise)) <= timedelta(minutes=2), st.sunrise
    assert abs(st.sunset - at(sunset)) <= timedelta(minutes=2), st.sunset


def test_tromso_polar_day_and_night():
    # Wikipedia (Tromso, "Light and darkness"): the midnight sun "from about 18 May to
    # 26 July", the polar night "from about 26 November to 15 January".
    june = sun_times(*TROMSO, date(2024, 6, 21))
    assert (june.sunrise, june.sunset, june.polar) == (None, None, "day")
    december = sun_times(*TROMSO, date(2024, 12, 21))
    assert (december.sunrise, december.sunset, december.polar) == (None, None, "night")

    def days(polar: str, start: date, end: date) -> list[date]:
        n = (end - start).days
        ds = [start + timedelta(days=i) for i in range(n)]
        return [d for d in ds if sun_times(*TROMSO, d).polar == polar]

    midnight_sun = days("day", date(2024, 5, 1), date(2024, 8, 15))
    assert abs(midnight_sun[0] - date(2024, 5, 18)) <= timedelta(days=2)
    assert abs(midnight_sun[-1] - date(2024, 7, 26)) <= timedelta(days=2)
    polar_night = days("night", date(2024, 11, 1), date(2025, 2, 1))
    assert abs(polar_night[0] - date(2024, 11, 26)) <= timedelta(days=2)
    assert abs(polar_night[-1] - date(2025, 1, 15)) <= timedelta(days=2)
    # Outside both seasons the Sun rises and sets.
    for d in (date(2024, 4, 20), date(2024, 8, 20), date(2024, 10, 20), date(2025, 2, 10)):
        st = sun_times(*TROMSO, d)
        assert st.sunrise is not None and st.sunset is not None and st.sunrise < st.sunset


# -- window strings --------------------------------------------------------------


@pytest.mark.parametrize(
    "text, shown",
    [
        ("05:00-09:00", "05:00 to 09:00"),
        ("5:00 - 9:30", "05:00 to 09:30"),
        ("22:00-02:00 UTC+02:00", "22:00 to 02:00 UTC+02:00"),
        ("00:00-24:00", "00:00 to 24:00"),
        ("sunrise-30m to sunrise+3h", "sunrise-30m to sunrise+3h"),
        ("sunrise-30m-sunrise+3h", "sunrise-30m to sunrise+3h"),
        ("Sunset - 1h30m to sunrise + 90m", "sunset-1h30m to sunrise+1h30m"),
        ("sunset to 23:00", "sunset to 23:00"),
    ],
)
def test_window_forms(text, shown):
    assert parse_window(text).describe() == shown


@pytest.mark.parametrize(
    "text, why",
    [
        ("05:00", None),
        ("25:00-09:00", "25:00 is not a time of day"),
        ("05:60-09:00", "05:60 is not a time of day"),
        ("sunrise+3x to sunset", None),
        ("sunrise+1.5h to sunset", None),
        ("sunrise+13h to sunset", "limited to 12h"),
        ("dawn to dusk", None),
        ("05:00-09:00 UTC+15:00", "UTC offsets run from -14:00 to +14:00"),
    ],
)
def test_bad_windows_are_one_line_naming_the_string(text, why):
    with pytest.raises(ScheduleError) as ei:
        parse_window(text)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{text!r} is not a window")
    assert "sunrise-30m to sunrise+3h" in msg  # the accepted forms, by example
    if why:
        assert why in msg


# -- activity ----------------------------------------------------------------------


def schedule(*windows: str, duty: tuple[float, float] | None = None, site=LONDON) -> Schedule:
    lat, lon = site
    return Schedule(
        [parse_window(w) for w in windows], DutyCycle(*duty) if duty else None, lat, lon
    )


def test_fixed_window_is_half_open():
    s = schedule("05:00-09:00")
    assert not s.is_active(at("2024-03-01 04:59:59"))
    assert s.is_active(at("2024-03-01 05:00:00"))
    assert s.is_active(at("2024-03-01 08:59:59.999999"))
    assert not s.is_active(at("2024-03-01 09:00:00"))
    assert s.next_change(at("2024-03-01 00:00")) == at("2024-03-01 05:00")
    assert s.next_change(at("2024-03-01 06:00")) == at("2024-03-01 09:00")
    assert s.next_change(at("2024-03-01 10:00")) == at("2024-03-02 05:00")


def test_windows_crossing_midnight():
    s = schedule("22:00-02:00")
    assert s.is_active(at("2024-12-31 23:30"))
    assert s.is_active(at("2025-01-01 00:00"))
    assert s.is_active(at("2025-01-01 01:59:59"))
    assert not s.is_active(at("2025-01-01 02:00"))
    assert not s.is_active(at("2025-01-01 21:59"))
    assert s.next_change(at("2024-12-31 23:30")) == at("2025-01-01 02:00")
    # A fixed offset: 22:00-02:00 at UTC+02:00 is 20:00-24:00 UTC.
    s = schedule("22:00-02:00 UTC+02:00")
    assert s.is_active(at("2024-06-01 20:00")) and not s.is_active(at("2024-06-01 19:59"))
    assert s.next_change(at("2024-06-01 21:00")) == at("2024-06-02 00:00")
    # The whole day, both spellings: no change ever.
    for whole in ("00:00-00:00", "00:00-24:00"):
        s = schedule(whole)
        assert s.is_active(at("2024-06-01 12:00")) and s.next_change(at("2024-06-01 12:00")) is None


def test_night_window_from_sunset_to_sunrise():
    s = schedule("sunset-1h to sunrise+1h")
    d1 = sun_times(*LONDON, date(2015, 12, 1))
    d2 = sun_times(*LONDON, date(2015, 12, 2))
    start, end = d1.sunset - timedelta(hours=1), d2.sunrise + timedelta(hours=1)
    assert s.next_change(at("2015-12-01 12:00")) == start
    assert s.is_active(start) and s.is_active(at("2015-12-02 00:00"))
    assert s.next_change(start) == end
    assert not s.is_active(end)


def test_dawn_window_follows_sunrise_over_the_year():
    s = schedule("sunrise-30m to sunrise+3h")
    for day in (date(2015, 1, 1), date(2015, 7, 1), date(2015, 12, 25)):
        rise = sun_times(*LONDON, day).sunrise
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        assert s.next_change(midnight) == rise - timedelta(minutes=30)
        assert s.next_change(rise) == rise + timedelta(hours=3)


def test_polar_day_skips_sunrise_windows_until_the_sun_sets_again():
    s = schedule("sunrise-30m to sunrise+3h", site=TROMSO)
    t = at("2024-06-21 12:00")
    assert not any(s.is_active(t + timedelta(minutes=10 * i)) for i in range(144))
    n = s.next_change(t)
    # The first sunrise after the midnight-sun season (late July).
    assert date(2024, 7, 24) <= n.date() <= date(2024, 7, 28)
    assert s.is_active(n) and not s.is_active(n - timedelta(microseconds=1))
    assert "polar day" in s.describe(date(2024, 6, 21))
    assert "does not occur" in s.describe(date(2024, 6, 21))
    # A fixed window keeps recording through the polar day.
    both = schedule("sunrise-30m to sunrise+3h", "03:00-06:00", site=TROMSO)
    assert both.is_active(at("2024-06-21 04:00"))
    assert "polar night" in both.describe(date(2024, 12, 21))


def test_duty_cycle_within_a_window():
    s = schedule("05:00-06:00", duty=(60, 600))
    assert s.is_active(at("2024-03-01 05:00:30"))
    assert not s.is_active(at("2024-03-01 05:01:00"))
    assert s.is_active(at("2024-03-01 05:50:00"))
    assert not s.is_active(at("2024-03-01 06:00:30"))
    assert s.next_change(at("2024-03-01 05:00:30")) == at("2024-03-01 05:01")
    assert s.next_change(at("2024-03-01 05:01")) == at("2024-03-01 05:10")
    assert s.next_change(at("2024-03-01 05:51")) == at("2024-03-02 05:00")
    on = sum(s.is_active(at("2024-03-01 04:00") + timedelta(seconds=i)) for i in range(0, 10800, 5))
    assert on * 5 == 6 * 60  # six minutes in three hours


def test_duty_cycle_without_windows_is_anchored_to_utc():
    s = Schedule([], DutyCycle(10, 60))
    assert s.is_active(at("2024-03-01 12:34:05"))
    assert not s.is_active(at("2024-03-01 12:34:10"))
    assert s.next_change(at("2024-03-01 12:34:10")) == at("2024-03-01 12:35:00")
    assert s.next_change(at("2024-03-01 12:35:00")) == at("2024-03-01 12:35:10")


def test_always_on_and_aware_times_only():
    s = Schedule()
    assert s.is_active(at("2024-03-01 12:00")) and s.next_change(at("2024-03-01 12:00")) is None
    with pytest.raises(ScheduleError, match="no time zone"):
        s.is_active(datetime(2024, 3, 1, 12, 0))
    with pytest.raises(ScheduleError, match="latitude"):
        Schedule([parse_window("sunrise to sunset")])
    with pytest.raises(ScheduleError, match="0 < on_s < period_s"):
        DutyCycle(60, 60)


@pytest.mark.parametrize(
    "sched",
    [
        schedule("05:00-09:00", "08:00-10:00"),  # overlapping windows merge: no flip at 08:00
        schedule("22:00-02:00 UTC-05:00", "sunrise-30m to sunrise+3h"),
        schedule("sunset-1h to sunrise+1h", duty=(60, 600)),
        schedule("sunrise-30m to sunrise+3h", "sunset-1h to sunset+2h", site=TROMSO),
        schedule("sunset to 23:00", site=(1.928797, -157.494678)),  # sunset after 00:00 UTC
        Schedule([], DutyCycle(7, 45)),
    ],
    ids=["overlap", "offset+sun", "night+duty", "tromso", "kiritimati", "duty-only"],
)
def test_next_change_is_exactly_where_is_active_flips(sched):
    rng = random.Random(4)
    start = at("2024-01-01 00:00")
    tiny = timedelta(microseconds=1)
    for _ in range(60):
        t = start + timedelta(seconds=rng.uniform(0, 366 * 86400))
        state = sched.is_active(t)
        n = sched.next_change(t)
        assert n is not None and n > t
        assert sched.is_active(n) is not state  # flips at n ...
        assert sched.is_active(n - tiny) is state  # ... and not before
        for f in (0.25, 0.5, 0.75):  # nor anywhere in between
            assert sched.is_active(t + (n - t) * f) is state


def test_describe_lists_the_days_windows_in_utc():
    s = schedule("sunrise-30m to sunrise+3h", "22:00-02:00", duty=(60, 600))
    text = s.describe(date(2015, 12, 1))
    assert "sunrise 07:43 UTC, sunset 15:55 UTC" in text
    assert "sunrise-30m to sunrise+3h: 2015-12-01 07:13 to 10:43 UTC (3.5 h)" in text
    assert "22:00 to 02:00: 2015-12-01 22:00 to 2015-12-02 02:00 UTC (4.0 h)" in text
    assert "duty cycle: 60 s on every 600 s, from each window's start" in text
    assert "(over)" not in text


def test_describe_without_a_place_heads_the_windows_with_the_day_and_marks_those_over():
    """The run prints it at start: it read 'schedule:   06:00 to 09:00 ...' and listed a
    window that had already ended as if it were to come."""
    s = schedule("06:00-09:00", "18:00-20:00", site=(None, None))
    lines = s.describe(date(2026, 11, 27), datetime(2026, 11, 27, 12, tzinfo=timezone.utc))
    assert lines.splitlines() == [
        "2026-11-27:",
        "  06:00 to 09:00: 2026-11-27 06:00 to 09:00 UTC (3.0 h) (over)",
        "  18:00 to 20:00: 2026-11-27 18:00 to 20:00 UTC (2.0 h)",
    ]
    all_day = schedule(site=(None, None)).describe(date(2026, 11, 27))
    assert all_day == "2026-11-27: no windows: recording all day"


# -- config -----------------------------------------------------------------------


def _problems(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "edge.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert all("\n" not in line and line.startswith(f"{p}: ") for line in ei.value.problems)
    return [line[len(f"{p}: ") :] for line in ei.value.problems]


def test_config_refuses_a_bad_window_naming_it(tmp_path):
    (line,) = _problems(tmp_path, "schedule:\n  windows: ['05:00-09:00', 'sunrize to 09:00']\n")
    assert line.startswith("schedule.windows[1]: 'sunrize to 09:00' is not a window; use ")
    assert "sunrise-30m to sunrise+3h" in line


def test_config_sun_windows_need_the_site(tmp_path):
    (line,) = _problems(tmp_path, "schedule:\n  windows: ['sunrise-30m to sunrise+3h']\n")
    assert line == (
        "schedule.windows: 'sunrise-30m to sunrise+3h' uses sunrise/sunset: set "
        "schedule.latitude and schedule.longitude (decimal degrees, north and east positive)"
    )
    problems = _problems(
        tmp_path,
        "schedule:\n  latitude: 91\n  longitude: -200\n  windows: [sunset to sunrise]\n",
    )
    assert problems == [
        "schedule.latitude: must be <= 90 (got 91)",
        "schedule.longitude: must be >= -180 (got -200)",
    ]


def test_config_duty_cycle_errors(tmp_path):
    (line,) = _problems(tmp_path, "schedule:\n  duty_cycle: {on_s: 600, period_s: 60}\n")
    assert line.startswith("schedule.duty_cycle.period_s: must be > schedule.duty_cycle.on_s")
    problems = _problems(tmp_path, "schedule:\n  duty_cycle: {on_sec: 60, period_s: 600}\n")
    assert (
        "schedule.duty_cycle.on_sec: unknown key (did you mean 'on_s'? allowed: on_s, period_s)"
        in problems
    )


def test_config_builds_the_schedule():
    cfg = config_from_dict(
        {
            "schedule": {
                "latitude": 51.5,
                "longitude": -0.1167,
                "windows": ["sunrise-30m to sunrise+3h", "22:00-02:00"],
                "duty_cycle": {"on_s": 60, "period_s": 600},
            }
        }
    )
    s = Schedule.from_config(cfg.schedule)
    assert [w.text for w in s.windows] == ["sunrise-30m to sunrise+3h", "22:00-02:00"]
    assert s.duty_cycle == DutyCycle(60.0, 600.0)
    assert Schedule.from_config(config_from_dict({}).schedule).always_on


# -- ScheduledSource --------------------------------------------------------------


class FakeClock:
    """Time that moves only when slept through or when audio is captured; `set` steps
    the wall clock alone, as NTP does, and `monotonic` does not follow it."""

    def __init__(self, t: datetime):
        self.t = t
        self.mono = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return self.mono

    def advance(self, s: float) -> None:
        self.t += timedelta(seconds=s)
        self.mono += s

    def set(self, t: datetime) -> None:
        self.t = t

    def sleep(self, s: float) -> None:
        assert s > 0
        self.sleeps.append(s)
        self.advance(s)


class LoopedFileInput:
    """A live-like source over a real recording: endless, one block per `block_s` of clock.

    Logs the clock at open and close, so the test sees when the device was held.
    """

    def __init__(self, audio: list[np.ndarray], clock: FakeClock, log: list, sr: int = SR):
        self.audio, self.clock, self.log, self.sr = audio, clock, log, sr
        self.name = "mic:looped"
        self.closed = False
        log.append(("open", clock.now()))

    def _blocks(self):
        while not self.closed:
            for b in self.audio:
                began = self.clock.now()
                self.clock.advance(len(b) / self.sr)  # capture takes real time
                self.log.append(("block", began))
                yield b

    def recordings(self):
        now = self.clock.now()
        yield Recording(
            live_recording_id(self.name, now), self.sr, now, True, "fake", self._blocks()
        )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.log.append(("close", self.clock.now()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(scope="module")
def cicada(realaudio) -> list[np.ndarray]:
    return list(read_blocks(realaudio / "antum_mod_sounds__sounds_cicada_08.ogg", SR, 1.0))


def _drain(src: ScheduledSource, n_recordings: int) -> list[tuple[str, int]]:
    got = []
    for rec in src.recordings():
        got.append((rec.id, sum(len(b) for b in rec.blocks)))
        if len(got) == n_recordings:
            break
    src.close()
    return got


def test_scheduled_source_holds_the_input_only_inside_windows(cicada):
    clock = FakeClock(at("2024-05-01 04:58:30"))
    log: list = []
    made: list[LoopedFileInput] = []

    def factory():
        made.append(LoopedFileInput(cicada, clock, log))
        return made[-1]

    s = schedule("05:00-05:02", "05:05-05:06")
    src = ScheduledSource(factory, s, now=clock.now, sleep=clock.sleep, max_sleep_s=60)
    got = _drain(src, 2)

    assert [i.split("#")[0] for i, _ in got] == [
        "mic:looped@20240501T050000.000000Z",
        "mic:looped@20240501T050500.000000Z",
    ]
    opens = [t for e, t in log if e == "open"]
    closes = [t for e, t in log if e == "close"]
    assert opens == [at("2024-05-01 05:00"), at("2024-05-01 05:05")]
    # Closed at the end of the block in progress when the window ended (blocks <= 1 s).
    for end, closed in zip([at("2024-05-01 05:02"), at("2024-05-01 05:06")], closes, strict=True):
        assert end <= closed < end + timedelta(seconds=1)
    assert all(m.closed for m in made)
    # Every block began while a window was open; about 120 s and 60 s of audio.
    assert all(s.is_active(t) for e, t in log if e == "block")
    assert [n / SR for _, n in got] == [pytest.approx(120, abs=1), pytest.approx(60, abs=1)]
    # Idle time was slept in pieces of at most max_sleep_s, re-reading the clock.
    assert clock.sleeps and max(clock.sleeps) <= 60
    assert sum(clock.sleeps) == pytest.approx(
        (at("2024-05-01 05:00") - at("2024-05-01 04:58:30")).total_seconds() + 180, abs=1
    )


def test_scheduled_source_duty_cycle_makes_one_recording_per_on_period(cicada):
    clock = FakeClock(at("2024-05-01 05:00"))
    log: list = []
    s = schedule("05:00-05:10", duty=(30, 120))
    src = ScheduledSource(
        lambda: LoopedFileInput(cicada, clock, log), s, now=clock.now, sleep=clock.sleep
    )
    got = _drain(src, 5)
    assert [n / SR for _, n in got] == [pytest.approx(30, abs=1.1)] * 5  # + the block in progress
    assert [t for e, t in log if e == "open"] == [
        at("2024-05-01 05:00") + timedelta(minutes=2 * k) for k in range(5)
    ]
    assert len({i for i, _ in got}) == 5  # one store row per on-period, not one overwritten


def test_scheduled_source_reopens_an_input_that_ends_inside_the_window(cicada):
    # A real StdinSource over a finite stream: it ends after 10 s of audio, inside the window.
    pcm = (np.clip(np.concatenate(cicada), -1, 1) * 32767).astype("<i2").tobytes()
    clock = FakeClock(at("2024-05-01 05:00"))
    opened: list[datetime] = []

    def factory():
        opened.append(clock.now())
        return StdinSource(io.BytesIO(pcm), SR, 1, "s16le", SR, start_time=clock.now())

    src = ScheduledSource(
        factory, schedule("05:00-05:01"), now=clock.now, sleep=clock.sleep, retry_s=20
    )
    recs = []
    for rec in src.recordings():
        recs.append((rec.id, sum(len(b) for b in rec.blocks)))
        if clock.now() >= at("2024-05-01 05:01"):
            break
    src.close()
    # Opened at 0 s, 20 s, 40 s: waits retry_s between, never spins; then not until the
    # next day's window.
    assert opened == [at("2024-05-01 05:00") + timedelta(seconds=20 * k) for k in range(3)] + [
        at("2024-05-02 05:00")
    ]
    assert all(n == len(pcm) // 2 for _, n in recs)
    assert len({i for i, _ in recs}) == len(recs)  # each opening is its own store row


def test_scheduled_source_sleeps_through_polar_day_without_holding_the_input(cicada):
    clock = FakeClock(at("2024-06-21 12:00"))
    log: list = []
    s = schedule("sunrise-30m to sunrise+3h", site=TROMSO)
    src = ScheduledSource(
        lambda: LoopedFileInput(cicada, clock, log),
        s,
        now=clock.now,
        sleep=clock.sleep,
        max_sleep_s=3600,
    )
    ((_, n),) = _drain(src, 1)
    (opened,) = [t for e, t in log if e == "open"]
    assert opened == s.next_change(at("2024-06-21 12:00"))  # late July, after polar day
    assert n / SR == pytest.approx(3.5 * 3600, abs=1)


def _drain_stepping(
    src: ScheduledSource, clock: FakeClock, n_recordings: int, steps: dict[int, timedelta]
) -> list[tuple[datetime, int]]:
    """(opened at, blocks) of the first recordings, reading at most 200 blocks of each;
    after block k of the run (counted from 1) the wall clock is set by steps[k]."""
    got, k = [], 0
    for rec in src.recordings():
        n = 0
        for _ in rec.blocks:
            n += 1
            k += 1
            if k in steps:
                clock.set(clock.now() + steps[k])
            if n == 200:
                rec.blocks.close()
                break
        got.append((rec.start_time, n))
        if len(got) == n_recordings:
            break
    src.close()
    return got


def _stepping_source(cicada, s: Schedule, t0: str):
    clock = FakeClock(at(t0))
    log: list = []
    said: list[str] = []
    a = np.concatenate(cicada)  # in 1 s blocks: block k ends k s after the opening
    whole = [a[i : i + SR] for i in range(0, len(a) - SR + 1, SR)]
    src = ScheduledSource(
        lambda: LoopedFileInput(whole, clock, log),
        s,
        now=clock.now,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        log=said.append,
    )
    return src, clock, log, said


def test_a_clock_set_back_out_of_the_window_closes_the_input_at_the_next_block(cicada):
    """Field report: a recorder without an RTC battery booted at its last shutdown time,
    23:00, inside "22:00-02:00", and opened the microphone; NTP then set the clock back
    to the true 10:00. The end (02:00 the next day) was worked out once and only
    `now >= end` was tested: the microphone stayed open 16 hours outside any window."""
    s = schedule("22:00-02:00")
    src, clock, log, said = _stepping_source(cicada, s, "2026-06-01 23:00")
    got = _drain_stepping(src, clock, 2, {10: -timedelta(hours=13)})

    # Cut at the block after the step, then idle (device closed) until 22:00 that day.
    assert got[0] == (at("2026-06-01 23:00"), 10)
    assert got[1][0] == at("2026-06-01 22:00")
    assert [t for e, t in log if e == "open"] == [at("2026-06-01 23:00"), at("2026-06-01 22:00")]
    assert next(t for e, t in log if e == "close") == at("2026-06-01 10:00:10")
    assert all(s.is_active(t) for e, t in log if e == "block")
    (note,) = [m for m in said if "clock step" in m]
    assert "set back by 46800 s (13.0 h), to 2026-06-01 10:00:10 UTC" in note
    assert "before this period's start (2026-06-01 22:00:00 UTC)" in note
    assert said[said.index(note) + 1] == "schedule: idle until 2026-06-01 22:00:00 UTC"
    assert not any("input ended" in m for m in said)


def test_a_clock_set_back_into_an_earlier_duty_on_period_starts_that_period(cicada):
    # On 05:02:00-05:02:30; set back 2 min to 05:00:10, inside the earlier on-period
    # 05:00:00-05:00:30: active, but not the period whose end was worked out.
    s = schedule("05:00-05:10", duty=(30, 120))
    src, clock, log, said = _stepping_source(cicada, s, "2024-05-01 05:02")
    got = _drain_stepping(src, clock, 3, {10: -timedelta(minutes=2)})

    assert got[0] == (at("2024-05-01 05:02"), 10)
    assert [t for t, _ in got[1:]] == [at("2024-05-01 05:00:10"), at("2024-05-01 05:02")]
    assert 20 <= got[1][1] <= 21  # to 05:00:30, + the block in progress
    closes = [t for e, t in log if e == "close"]
    assert closes[0] == at("2024-05-01 05:00:10")
    assert at("2024-05-01 05:00:30") <= closes[1] < at("2024-05-01 05:00:31")
    assert all(s.is_active(t) for e, t in log if e == "block")
    (note,) = [m for m in said if "clock step" in m]
    assert "set back by 120 s (2 min), to 2024-05-01 05:00:10 UTC" in note
    assert "before this period's start (2024-05-01 05:02:00 UTC)" in note


@pytest.mark.parametrize(
    "step, reopened",
    [
        (timedelta(minutes=7), "2024-05-01 05:08:00"),  # into the off part: wait for 05:08
        (timedelta(minutes=6, seconds=5), "2024-05-01 05:06:15"),  # into a later on-period
    ],
)
def test_a_clock_set_forward_past_several_duty_periods_cuts_and_says_so(cicada, step, reopened):
    # On 05:00:00-05:00:30; set forward past the on-periods of 05:02, 05:04 (and 05:06).
    s = schedule("05:00-05:10", duty=(30, 120))
    src, clock, log, said = _stepping_source(cicada, s, "2024-05-01 05:00")
    got = _drain_stepping(src, clock, 2, {10: step})

    assert got[0] == (at("2024-05-01 05:00"), 10)
    assert got[1][0] == at(reopened)
    assert next(t for e, t in log if e == "close") == at("2024-05-01 05:00:10") + step
    assert all(s.is_active(t) for e, t in log if e == "block")
    assert not any("input ended" in m for m in said)
    (note,) = [m for m in said if "clock step" in m]
    assert f"set forward by {step.total_seconds():.0f} s" in note
    assert "past this period's end (2024-05-01 05:00:30 UTC)" in note
    # A period that runs to its end is not taken for a step.
    assert said.count(note) == 1


def test_each_window_is_its_own_row_in_the_store(realaudio, tmp_path):
    det = Detector.load()  # the packaged demo bundle
    audio = list(
        read_blocks(realaudio / "antum_mod_sounds__sounds_cicada_08.ogg", det.sample_rate, 1.0)
    )
    clock = FakeClock(at("2024-05-01 04:59:30"))
    log: list = []
    s = schedule("05:00-05:01", "05:03-05:04", duty=(10, 60))  # 10 s of each window
    stop_at = at("2024-05-01 05:04")

    def sleep(sec: float) -> None:
        # Stop the run (as systemctl stop would) once the second window has closed.
        if clock.now() >= stop_at:
            src.close()
        clock.sleep(sec)

    src = ScheduledSource(
        lambda: LoopedFileInput(audio, clock, log, det.sample_rate),
        s,
        now=clock.now,
        sleep=sleep,
    )
    db = tmp_path / "det.db"
    try:
        with DetectionStore(db) as store:
            summary = det.run(src, store)
    finally:
        det.close()
    assert summary.recordings == 2 and summary.skipped == 0 and summary.partial == 0
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select start_time_utc, duration_s, status from recordings order by start_time_utc"
        ).fetchall()
    assert [(r[0], r[2]) for r in rows] == [
        ("2024-05-01T05:00:00.000+00:00", "ok"),
        ("2024-05-01T05:03:00.000+00:00", "ok"),
    ]
    assert all(abs(r[1] - 10) <= 1.1 for r in rows)
