"""Recording schedules: when a recorder listens, and a source that only listens then.

A schedule is a list of daily windows plus an optional duty cycle:

    windows:
      - "05:00-09:00"                    # fixed, in UTC
      - "05:00-09:00 UTC+03:00"          # fixed, at a fixed offset from UTC
      - "sunrise-30m to sunrise+3h"      # relative to the sun at the site
      - "sunset-1h to sunrise+1h"        # crosses midnight: ends the next morning
    duty_cycle: {on_s: 60, period_s: 600}  # within windows, 1 min of every 10

No windows means always on. A window's end is the first time its end point occurs
after its start, so "22:00-02:00" and "sunset to sunrise" cross midnight without
special syntax, and "00:00-00:00" is the whole day.

Sunrise and sunset are computed offline from latitude and longitude with NOAA's
solar position equations (Meeus, *Astronomical Algorithms*), for the standard
apparent altitude of -0.833 deg (34' of refraction plus the Sun's 16' radius), at
sea level over a flat horizon. Against timeanddate.com they agree to within a
minute at mid and low latitudes; near the polar circles, where the Sun grazes the
horizon, a few minutes are possible. Everything is in UTC: a recorder's clock
should be UTC, and a fixed offset ("UTC+03:00") does not follow daylight saving.

Polar day and night: on a date when the Sun does not rise (or set) at the site, a
window that needs that event does not occur that day. A dawn-chorus window
"sunrise-30m to sunrise+3h" therefore records nothing in Tromso in June; add a
fixed-time window for that season. `describe()` says so for the day asked.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from animalclap_edge.clock_step import ClockWatch
from animalclap_edge.sources import Recording, Skipped, Source

SUN_ALTITUDE_DEG = -0.833
MAX_OFFSET = timedelta(hours=12)  # "sunrise+13h" is a different event, not an offset
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DAY = timedelta(days=1)
# Sun events of local date D fall within about a day of D 00:00 UTC; with offsets of
# up to 12 h and ends up to a day after starts, instances of D touch [D-2, D+3].
_LOOKBACK_DAYS = 3
_HORIZON_DAYS = 400  # next_change looks this far ahead, so a polar winter is crossed

WINDOW_FORMS = (
    "HH:MM-HH:MM (UTC), HH:MM-HH:MM UTC+HH:MM (fixed offset), "
    "sunrise|sunset[+-Nh][Nm] to sunrise|sunset[+-Nh][Nm], or a mix "
    "(e.g. 05:00-09:00, 22:00-02:00 UTC-05:00, sunrise-30m to sunrise+3h, sunset-1h to 23:00)"
)


class ScheduleError(ValueError):
    """A window string or schedule setting that cannot be used; `str(e)` is one line."""


# -- the Sun ---------------------------------------------------------------------


@dataclass(frozen=True)
class SunTimes:
    """Sunrise and sunset (UTC) of one local date; None where the event does not occur."""

    day: date
    sunrise: datetime | None
    sunset: datetime | None
    polar: Literal["day", "night"] | None  # the Sun stays up / down all of that day

    def event(self, name: str) -> datetime | None:
        return self.sunrise if name == "sunrise" else self.sunset


def _julian_day(t: datetime) -> float:
    return (t - _EPOCH).total_seconds() / 86400.0 + 2440587.5


def _sun_declination_eqtime(jd: float) -> tuple[float, float]:
    """(declination in degrees, equation of time in minutes) at Julian day `jd`."""
    c = (jd - 2451545.0) / 36525.0  # Julian centuries since J2000.0
    l0 = (280.46646 + c * (36000.76983 + c * 0.0003032)) % 360.0  # mean longitude
    m = 357.52911 + c * (35999.05029 - 0.0001537 * c)  # mean anomaly
    e = 0.016708634 - c * (0.000042037 + 0.0000001267 * c)  # orbit eccentricity
    mr = math.radians(m)
    centre = (
        math.sin(mr) * (1.914602 - c * (0.004817 + 0.000014 * c))
        + math.sin(2 * mr) * (0.019993 - 0.000101 * c)
        + math.sin(3 * mr) * 0.000289
    )
    omega = math.radians(125.04 - 1934.136 * c)
    apparent = math.radians(l0 + centre - 0.00569 - 0.00478 * math.sin(omega))
    eps0 = 23.0 + (26.0 + (21.448 - c * (46.815 + c * (0.00059 - c * 0.001813))) / 60.0) / 60.0
    eps = math.radians(eps0 + 0.00256 * math.cos(omega))
    decl = math.degrees(math.asin(math.sin(eps) * math.sin(apparent)))
    y = math.tan(eps / 2) ** 2
    l0r = math.radians(l0)
    eqtime = 4.0 * math.degrees(
        y * math.sin(2 * l0r)
        - 2 * e * math.sin(mr)
        + 4 * e * y * math.sin(mr) * math.cos(2 * l0r)
        - 0.5 * y * y * math.sin(4 * l0r)
        - 1.25 * e * e * math.sin(2 * mr)
    )
    return decl, eqtime


def _cos_hour_angle(lat: float, decl: float) -> float:
    la, de = math.radians(lat), math.radians(decl)
    return (math.sin(math.radians(SUN_ALTITUDE_DEG)) - math.sin(la) * math.sin(de)) / (
        math.cos(la) * math.cos(de)
    )


def sun_times(latitude: float, longitude: float, day: date) -> SunTimes:
    """Sunrise and sunset at a site (degrees, north and east positive) on local date `day`.

    "Local date" is the site's mean solar day: far from Greenwich the events can
    fall on the previous or next UTC date (Honolulu's sunset is after 00:00 UTC).
    Each event is refined by evaluating the Sun's position at that event rather
    than at noon, which matters by up to a minute at high latitudes.
    """
    if not -90.0 <= latitude <= 90.0 or not -180.0 <= longitude <= 180.0:
        raise ScheduleError(f"latitude {latitude} / longitude {longitude} out of range")
    # At the poles the formula divides by cos(90 deg); 89.999 is the same sky.
    lat = max(-89.999, min(89.999, latitude))
    midnight = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    noon_min = 720.0 - 4.0 * longitude  # local mean noon, minutes after 00:00 UTC
    decl, _ = _sun_declination_eqtime(_julian_day(midnight + timedelta(minutes=noon_min)))
    cos_h = _cos_hour_angle(lat, decl)
    polar: Literal["day", "night"] | None = (
        "night" if cos_h > 1.0 else "day" if cos_h < -1.0 else None
    )

    def event(sign: float) -> datetime | None:
        # sign -1: sunrise (before noon), +1: sunset
        t_min = noon_min
        for _ in range(4):
            d, eq = _sun_declination_eqtime(_julian_day(midnight + timedelta(minutes=t_min)))
            ch = _cos_hour_angle(lat, d)
            if not -1.0 <= ch <= 1.0:
                return None
            t_min = noon_min - eq + sign * 4.0 * math.degrees(math.acos(ch))
        return midnight + timedelta(minutes=t_min)

    if polar is not None:
        return SunTimes(day, None, None, polar)
    return SunTimes(day, event(-1.0), event(+1.0), None)


# -- windows ---------------------------------------------------------------------

_CLOCK = r"(?P<{n}h>\d{{1,2}}):(?P<{n}m>\d{{2}})"
_SUN = r"(?P<{n}ev>sunrise|sunset)(?:\s*(?P<{n}sg>[+-])\s*(?:(?P<{n}oh>\d+)h)?\s*(?:(?P<{n}om>\d+)m)?)?"


def _point(n: str) -> str:
    return f"(?:{_CLOCK.format(n=n)}|{_SUN.format(n=n)})"


_WINDOW = re.compile(
    rf"^\s*{_point('a')}\s*(?:-|\s+to\s+)\s*{_point('b')}"
    r"(?:\s+UTC(?:\s*(?P<tzs>[+-])(?P<tzh>\d{1,2}):?(?P<tzm>\d{2})?)?)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Point:
    """A time of day: `clock` after local midnight, or `event` shifted by `offset`."""

    event: Literal["sunrise", "sunset"] | None
    offset: timedelta  # from the event; for a clock time, from midnight at `tz`

    def text(self) -> str:
        if self.event is None:
            minutes = int(self.offset.total_seconds()) // 60
            return f"{minutes // 60:02d}:{minutes % 60:02d}"
        if not self.offset:
            return self.event
        sign = "+" if self.offset > timedelta(0) else "-"
        minutes = int(abs(self.offset.total_seconds())) // 60
        h, m = divmod(minutes, 60)
        return f"{self.event}{sign}{f'{h}h' if h else ''}{f'{m}m' if m else ''}"


@dataclass(frozen=True)
class Window:
    """One daily window, parsed from a string such as "sunrise-30m to sunrise+3h"."""

    text: str
    start: _Point
    end: _Point
    tz: timezone  # for clock times; sun events are absolute

    @property
    def uses_sun(self) -> bool:
        return self.start.event is not None or self.end.event is not None

    def describe(self) -> str:
        tz = "" if self.tz == timezone.utc else f" {self.tz.tzname(None)}"
        return f"{self.start.text()} to {self.end.text()}{tz}"


def _bad(text: str, why: str = "") -> ScheduleError:
    return ScheduleError(
        f"{text!r} is not a window{f' ({why})' if why else ''}; use {WINDOW_FORMS}"
    )


def parse_window(text: str) -> Window:
    """Parse one window string; ScheduleError naming the string and the accepted forms."""
    if not isinstance(text, str):
        raise ScheduleError(f"{text!r} is not a window: it must be a string; use {WINDOW_FORMS}")
    m = _WINDOW.match(text)
    if m is None:
        raise _bad(text)
    g = m.groupdict()

    def point(n: str) -> _Point:
        if g[f"{n}h"] is not None:
            h, mi = int(g[f"{n}h"]), int(g[f"{n}m"])
            if h > 24 or mi > 59 or (h == 24 and mi):
                raise _bad(text, f"{h:02d}:{mi:02d} is not a time of day")
            return _Point(None, timedelta(hours=h, minutes=mi))
        sign, oh, om = g[f"{n}sg"], g[f"{n}oh"], g[f"{n}om"]
        if sign and oh is None and om is None:
            raise _bad(text, f"offset after {sign!r} needs hours or minutes, e.g. 30m or 1h30m")
        off = timedelta(hours=int(oh or 0), minutes=int(om or 0))
        if off > MAX_OFFSET:
            raise _bad(text, "sun offsets are limited to 12h")
        return _Point(g[f"{n}ev"].lower(), -off if sign == "-" else off)  # type: ignore[arg-type]

    start, end = point("a"), point("b")
    tz = timezone.utc
    if g["tzs"]:
        off = timedelta(hours=int(g["tzh"]), minutes=int(g["tzm"] or 0))
        if off > timedelta(hours=14) or int(g["tzm"] or 0) > 59:
            raise _bad(text, "UTC offsets run from -14:00 to +14:00")
        tz = timezone(-off if g["tzs"] == "-" else off)
    return Window(text, start, end, tz)


# -- the schedule ----------------------------------------------------------------


@dataclass(frozen=True)
class DutyCycle:
    on_s: float
    period_s: float

    def __post_init__(self) -> None:
        if not (0 < self.on_s < self.period_s) or not math.isfinite(self.period_s):
            raise ScheduleError(
                f"duty cycle needs 0 < on_s < period_s (got on_s={self.on_s}, period_s={self.period_s})"
            )


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ScheduleError(f"{t.isoformat()} has no time zone: schedules work on aware datetimes")
    return t.astimezone(timezone.utc)


def _merge(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:  # touching intervals are one: no flip at the seam
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


class Schedule:
    """When to record: daily windows (none = always) and an optional duty cycle.

    Times are half-open: active at a window's start, inactive at its end. The duty
    cycle starts "on" at each window's start; with no windows it is anchored to
    00:00 UTC 1970, so a 600 s period starts at :00, :10, ... of every hour.
    """

    def __init__(
        self,
        windows: list[Window] | None = None,
        duty_cycle: DutyCycle | None = None,
        latitude: float | None = None,
        longitude: float | None = None,
    ):
        self.windows = list(windows or [])
        self.duty_cycle = duty_cycle
        self.latitude = latitude
        self.longitude = longitude
        if any(w.uses_sun for w in self.windows) and (latitude is None or longitude is None):
            raise ScheduleError("sunrise/sunset windows need a latitude and a longitude")
        self._sun_cache: dict[date, SunTimes] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> Schedule:
        """From a `ScheduleConfig` (config.py), already validated."""
        duty = cfg.duty_cycle
        return cls(
            [parse_window(w) for w in cfg.windows],
            DutyCycle(duty.on_s, duty.period_s) if duty is not None else None,
            cfg.latitude,
            cfg.longitude,
        )

    @property
    def always_on(self) -> bool:
        return not self.windows and self.duty_cycle is None

    # -- resolving windows to UTC intervals --

    def _sun(self, day: date) -> SunTimes:
        st = self._sun_cache.get(day)
        if st is None:
            if len(self._sun_cache) > 1024:  # a few years of days; then start over
                self._sun_cache.clear()
            assert self.latitude is not None and self.longitude is not None  # checked in __init__
            st = self._sun_cache[day] = sun_times(self.latitude, self.longitude, day)
        return st

    def _at(self, p: _Point, tz: timezone, day: date) -> datetime | None:
        if p.event is None:
            return datetime(day.year, day.month, day.day, tzinfo=tz) + p.offset
        ev = self._sun(day).event(p.event)
        return None if ev is None else ev + p.offset

    def _instance(self, w: Window, day: date) -> tuple[datetime, datetime] | None:
        """The window that starts on local date `day`, or None (its sun event does not occur)."""
        start = self._at(w.start, w.tz, day)
        if start is None:
            return None
        for d in (day - _DAY, day, day + _DAY, day + 2 * _DAY):
            end = self._at(w.end, w.tz, d)
            if end is not None and end > start:
                return start.astimezone(timezone.utc), end.astimezone(timezone.utc)
        return None  # the end event does not occur in the two days after the start

    def _on_intervals(self, t0: datetime, t1: datetime) -> list[tuple[datetime, datetime]]:
        """Merged active intervals that overlap [t0, t1)."""
        if not self.windows:
            if self.duty_cycle is None:
                return [(t0, t1)]
            spans = [(t0 - _DAY, t1 + _DAY)]
        else:
            spans = []
            d, last = (t0 - _LOOKBACK_DAYS * _DAY).date(), (t1 + _DAY).date()
            while d <= last:
                for w in self.windows:
                    iv = self._instance(w, d)
                    if iv is not None and iv[0] < t1 and iv[1] > t0:
                        spans.append(iv)
                d += _DAY
        if self.duty_cycle is None:
            return _merge(spans)
        on = timedelta(seconds=self.duty_cycle.on_s)
        period = timedelta(seconds=self.duty_cycle.period_s)
        pieces = []
        for s, e in spans:
            anchor = _EPOCH if not self.windows else s
            k = max(0, (max(s, t0) - anchor) // period - 1)
            while True:
                a = anchor + k * period
                if a >= min(e, t1):
                    break
                b = min(a + on, e)
                if b > t0 and a >= s:
                    pieces.append((a, b))
                k += 1
        return _merge(pieces)

    # -- the public questions --

    def is_active(self, t: datetime) -> bool:
        """Whether to record at instant `t` (an aware datetime)."""
        t = _utc(t)
        if self.always_on:
            return True
        return any(s <= t < e for s, e in self._on_intervals(t, t + timedelta(microseconds=1)))

    def next_change(self, t: datetime) -> datetime | None:
        """The first instant after `t` at which `is_active` differs from `is_active(t)`.

        None when it never changes: always on, or no window occurs within about a
        year (e.g. only sunrise windows at the North Pole's latitude in a polar night
        longer than that, which does not happen on Earth below 89.9 deg).
        """
        t = _utc(t)
        if self.always_on:
            return None
        horizon = 2 * _DAY
        while horizon <= _HORIZON_DAYS * _DAY * 2:
            t1 = t + horizon
            ivs = self._on_intervals(t, t1)
            for s, e in ivs:
                if s <= t < e:
                    if e < t1:
                        return e
                    break  # active up to the horizon: look further
                if s > t:
                    return s
            else:
                if horizon >= _HORIZON_DAYS * _DAY:
                    return None
            horizon *= 2
        return None

    def active_since(self, t: datetime) -> datetime | None:
        """When the active period holding `t` began: the last instant at or before `t` at
        which `is_active` became True. None when `t` is inactive or the schedule is always
        on. Looks back a few days (one duty period with a duty cycle): merged windows
        active longer than that are said to begin within that reach."""
        t = _utc(t)
        if self.always_on:
            return None
        back = (
            timedelta(seconds=self.duty_cycle.period_s)
            if self.duty_cycle is not None
            else _LOOKBACK_DAYS * _DAY
        )
        for s, e in self._on_intervals(t - back, t + timedelta(microseconds=1)):
            if s <= t < e:
                return s
        return None

    def windows_on(self, day: date) -> list[tuple[Window, tuple[datetime, datetime] | None]]:
        """Each window with its instance starting on local date `day` (None: does not occur)."""
        return [(w, self._instance(w, day)) for w in self.windows]

    def describe(self, day: date, now: datetime | None = None) -> str:
        """A few lines: the day's windows in UTC, the duty cycle, and missing sun events;
        with `now`, the windows already over are marked so."""
        lines = []
        if self.latitude is not None and self.longitude is not None:
            st = self._sun(day)
            where = f"{self.latitude:.4f}, {self.longitude:.4f}"
            if st.polar == "day":
                lines.append(f"{day}: polar day at {where}: the Sun does not set")
            elif st.polar == "night":
                lines.append(f"{day}: polar night at {where}: the Sun does not rise")
            else:
                fmt = "%H:%M UTC"
                rise = st.sunrise.strftime(fmt) if st.sunrise else "none"
                set_ = st.sunset.strftime(fmt) if st.sunset else "none"
                lines.append(f"{day}: sunrise {rise}, sunset {set_} at {where}")
        if not self.windows:
            lines.append(f"{day}: no windows: recording all day")
        elif not lines:  # no sun line: the day heads the windows
            lines.append(f"{day}:")
        for w, iv in self.windows_on(day):
            if iv is None:
                lines.append(f"  {w.describe()}: does not occur (no sunrise/sunset that day)")
            else:
                s, e = iv
                fmt = "%Y-%m-%d %H:%M" if e.date() != s.date() else "%H:%M"
                lines.append(
                    f"  {w.describe()}: {s:%Y-%m-%d %H:%M} to {e.strftime(fmt)} UTC "
                    f"({(e - s).total_seconds() / 3600:.1f} h)"
                    + (" (over)" if now is not None and e <= _utc(now) else "")
                )
        if self.duty_cycle is not None:
            dc = self.duty_cycle
            lines.append(
                f"  duty cycle: {dc.on_s:g} s on every {dc.period_s:g} s"
                + (", from each window's start" if self.windows else ", from 00:00 UTC")
            )
        return "\n".join(lines)


# -- a source that follows a schedule -----------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# The wall clock and the monotonic one are read one after the other: a step of less
# than this at a period's end is not told from the end itself.
_STEP_TOLERANCE_S = 1.0
_BEFORE_ALL = datetime.min.replace(tzinfo=timezone.utc)
_AFTER_ALL = datetime.max.replace(tzinfo=timezone.utc)


def _step_text(seconds: float) -> str:
    """'46800 s (13.0 h)', '120 s (2 min)' or '5 s': the size of a step of the clock."""
    s = abs(seconds)
    if s >= 86_400:
        return f"{s:.0f} s ({s / 86_400:.1f} days)"
    if s >= 3_600:
        return f"{s:.0f} s ({s / 3_600:.1f} h)"
    if s >= 60:
        return f"{s:.0f} s ({s / 60:.0f} min)"
    return f"{s:.0f} s"


@dataclass
class _Period:
    """An active period being recorded: the wall clock must stay in [start, end).

    The end is worked out once, when the period opens, from the clock as it read then;
    a clock set back before the start, or forward past the end (NTP's first sync on a
    recorder that booted at its last shutdown time), leaves the period. `watch`, begun
    at the opening, tells a step from the period's end.
    """

    start: datetime
    end: datetime
    watch: ClockWatch
    left: datetime | None = None  # the wall clock read when it was first found outside
    stepped: float = 0.0  # seconds the wall clock was set by, then


class ScheduledSource:
    """Opens a live source only while `schedule` is active; closed (device released) otherwise.

    `factory` makes a fresh inner source (e.g. a `MicSource`) at the start of each
    active period; each of its recordings is yielded with its blocks cut at the
    period's end (after the block in progress: up to one block late), then the inner
    source is closed. Live sources give every opening its own recording id
    (`sources.live_recording_id`), so each period is its own row in the store. If the
    inner source ends before the period does (a device glitch, a pipe at EOF), it is
    reopened after `retry_s`.

    The clock is read after every block: one set back before the period's start or
    forward past its end (NTP stepping it) ends the period at that block too, with a
    log line saying the period was cut short by a clock step and by how much (told from
    `monotonic`, which never steps); the schedule is then read again, as at any
    period's end.

    Idle periods are slept in pieces of at most `max_sleep_s`, re-reading the clock
    each time: a recorder's clock often jumps when NTP first syncs after boot, and a
    single long sleep would then miss a window.
    """

    def __init__(
        self,
        factory: Callable[[], Source],
        schedule: Schedule,
        *,
        name: str = "scheduled",
        now: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
        max_sleep_s: float = 60.0,
        retry_s: float = 5.0,
        log: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.factory = factory
        self.schedule = schedule
        self.name = name
        self._now = now
        self._sleep = sleep
        self._monotonic = monotonic
        self.max_sleep_s = float(max_sleep_s)
        self.retry_s = float(retry_s)
        self._log = log or (lambda _msg: None)
        self._inner: Source | None = None
        self._closed = False

    def _sleep_until(self, t: datetime) -> None:
        left = (t - self._now()).total_seconds()
        if left > 0:
            self._sleep(min(left, self.max_sleep_s))

    def _outside(self, p: _Period) -> bool:
        """Whether the wall clock is out of the period (at or past its end, or set back
        before its start); the first reading outside is kept for `_step_note`."""
        now = self._now()
        if p.start <= now < p.end:
            return False
        if p.left is None:
            p.left, p.stepped = now, p.watch.since_start()
        return True

    def _cut(self, blocks: Iterator[Any], p: _Period) -> Iterator[Any]:
        try:
            for b in blocks:
                yield b
                if self._closed or self._outside(p):
                    return
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()

    @staticmethod
    def _step_note(p: _Period) -> str:
        """A log line where the period was left because the clock was set, not because
        it ran to the end; "" for a period that ran to its end."""
        if p.left is None:
            return ""
        now, stepped = p.left, p.stepped
        if now >= p.start and (
            stepped < _STEP_TOLERANCE_S or now - timedelta(seconds=stepped) >= p.end
        ):
            return ""  # it ran to the end, or would have read past it without the step
        way = "back" if now < p.start or stepped < 0 else "forward"
        where = (
            f"before this period's start ({p.start:%Y-%m-%d %H:%M:%S} UTC)"
            if now < p.start
            else f"past this period's end ({p.end:%Y-%m-%d %H:%M:%S} UTC)"
        )
        return (
            f"schedule: period cut short by a clock step: the clock was set {way} by "
            f"{_step_text(stepped)}, to {now:%Y-%m-%d %H:%M:%S} UTC, {where}; "
            "input closed, reading the schedule again"
        )

    def recordings(self) -> Iterator[Recording | Skipped]:
        announced: datetime | None = None
        while not self._closed:
            t = self._now()
            change = self.schedule.next_change(t)
            if not self.schedule.is_active(t):
                if change is None:
                    self._log("schedule: no active window in the coming year; stopping")
                    return
                if announced != change:
                    self._log(f"schedule: idle until {change:%Y-%m-%d %H:%M:%S} UTC")
                    announced = change
                self._sleep_until(change)
                continue
            until = "" if change is None else f" until {change:%Y-%m-%d %H:%M:%S} UTC"
            self._log(f"schedule: recording{until}")
            watch = ClockWatch(lambda: self._now().timestamp(), self._monotonic)
            if change is None:  # active for good: no clock reading leaves it
                period = _Period(_BEFORE_ALL, _AFTER_ALL, watch)
            else:
                start = self.schedule.active_since(t) or t
                period = _Period(min(start, t), change, watch)
            inner = self._inner = self.factory()
            try:
                for rec in inner.recordings():
                    if isinstance(rec, Skipped):
                        yield rec
                        continue
                    yield replace(rec, blocks=self._cut(rec.blocks, period))
                    if self._closed or self._outside(period):
                        break
            finally:
                self._inner = None
                inner.close()
            if self._closed:
                return
            if self._outside(period):
                note = self._step_note(period)
                if note:
                    self._log(note)
                announced = None  # say where the schedule now stands
                continue
            # Ended early: do not spin on a source that keeps ending at once.
            wait = min(self.retry_s, (period.end - self._now()).total_seconds())
            self._log(f"schedule: input ended inside the window; reopening in {wait:g} s")
            if wait > 0:
                self._sleep(wait)

    def close(self) -> None:
        self._closed = True
        inner = self._inner
        if inner is not None:
            inner.close()

    def __enter__(self) -> ScheduledSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
