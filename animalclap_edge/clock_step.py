"""Steps of the wall clock, told from the monotonic clock.

A recorder without a real-time clock boots at 2000-01-01 or at its last shutdown time,
and NTP (or GPS) then steps the clock, by hours or days; ages and times measured across
the step are off by it. The monotonic clock never steps: the wall clock's progress
against it shows a step, and how large it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# NTP slews a drift of seconds away; a difference of more than this between the wall
# clock's progress and the monotonic clock's is a clock that was set
CLOCK_STEP_S = 60.0


class ClockWatch:
    """The wall clock's steps since the watch began (`since_start`) and since the last
    look (`step`). `wall` and `mono` are seconds (time.time, time.monotonic)."""

    def __init__(
        self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic
    ):
        self._wall, self._mono = wall, mono
        self._w0 = self._w = wall()
        self._m0 = self._m = mono()

    def now(self) -> float:
        return self._wall()

    def since_start(self) -> float:
        """Seconds the wall clock was stepped since the watch began: forward > 0."""
        return (self._wall() - self._w0) - (self._mono() - self._m0)

    def step(self) -> tuple[float, float, float] | None:
        """(seconds stepped, the wall time it would read without the step, the wall time
        it reads) where the clock was stepped by CLOCK_STEP_S or more since the last
        call; None otherwise."""
        w, m = self._wall(), self._mono()
        stepped = (w - self._w) - (m - self._m)
        unstepped = self._w + (m - self._m)
        self._w, self._m = w, m
        return (stepped, unstepped, w) if abs(stepped) >= CLOCK_STEP_S else None
