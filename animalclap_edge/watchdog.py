"""A live source that keeps itself alive: the watchdog per source.

A USB microphone unplugged by a curious animal, a sound card that stops calling back,
an `arecord` pipe whose writer died, a capsule that delivers digital silence: each of
these ends or freezes the audio. `WatchedSource` wraps a live source and, when its
stream ends, fails, stalls (no block for `stall_s`) or stays below `silence_dbfs`
for `silence_s`, closes it, logs a health event, waits with exponential backoff and
opens a new one from the factory. Each opening is its own `Recording` (its own id and
start time), so the detector logs a cut-short stream as "partial" with the reason
and carries on with the next.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Protocol, TypeVar

import numpy as np

from animalclap_edge.audio.decode import AudioError
from animalclap_edge.sources import Recording, Skipped, Source, SourceError

_T = TypeVar("_T")


class _Stopped(Exception):
    """The watched source was closed while an open or a first read waited."""


class HealthLog(Protocol):
    def record(self, kind: str, source: str, detail: dict) -> None: ...


@dataclass
class WatchdogSettings:
    stall_s: float = 10.0  # no block for this long: the stream is frozen
    silence_s: float = 600.0  # every block below silence_dbfs for this long: reopen
    silence_dbfs: float = -90.0  # below a real microphone's self-noise (about -70 dBFS)
    backoff_min_s: float = 1.0
    backoff_max_s: float = 300.0
    max_opens: int | None = None  # None: for as long as it takes


@dataclass
class WatchdogCounters:
    opens: int = 0
    open_failures: int = 0
    ended: int = 0  # stream ended or failed (device lost, writer gone)
    stalls: int = 0
    silences: int = 0


class WatchedSource:
    """`Source` over successive openings of a live source; see the module docstring.

    `first` is an already opened source (so a bad device fails before the run starts,
    with its own one-line error); `reopen` makes the next ones."""

    def __init__(
        self,
        first: Source,
        reopen: Callable[[], Source],
        health: HealthLog,
        settings: WatchdogSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._first: Source | None = first
        self._reopen = reopen
        self.health = health
        self.settings = settings or WatchdogSettings()
        self._sleep = sleep
        self.name = getattr(first, "name", type(first).__name__)
        self.counters = WatchdogCounters()
        self._current: Source | None = None
        self._stop = threading.Event()

    # -- Source ----------------------------------------------------------------

    def recordings(self) -> Iterator[Recording | Skipped]:
        with contextlib.suppress(_Stopped):
            yield from self._openings()

    def _openings(self) -> Iterator[Recording | Skipped]:
        s, backoff = self.settings, self.settings.backoff_min_s
        while not self._stop.is_set():
            if s.max_opens is not None and self.counters.opens >= s.max_opens:
                return
            src = self._open()
            if src is None:
                self._wait(backoff)
                backoff = min(s.backoff_max_s, backoff * 2)
                continue
            self.counters.opens += 1
            if self.counters.opens > 1:
                self._log("source_reopened", {"opens": self.counters.opens})
            healthy = False
            try:
                for rec in self._recordings(src):
                    if isinstance(rec, Skipped):
                        yield rec
                        continue
                    watched = _Watched(rec, s, on_end=self._after)
                    yield replace(rec, blocks=watched.blocks())
                    healthy = healthy or watched.audio_s >= s.stall_s
            except (SourceError, OSError) as e:  # failed starting (device gone, host down)
                self._problem("open_failed", _why(e))
            finally:
                self._current = None
                with contextlib.suppress(Exception):
                    src.close()
            # a stream that ran for a while earns a fresh, short backoff
            backoff = s.backoff_min_s if healthy else min(s.backoff_max_s, backoff * 2)
            if not self._stop.is_set():
                self._wait(backoff)

    def close(self) -> None:
        self._stop.set()
        cur, self._current = self._current, None
        for src in (cur, self._first):
            if src is not None:
                with contextlib.suppress(Exception):
                    src.close()
        self._first = None

    def __enter__(self) -> WatchedSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health_counters(self) -> dict:
        out = asdict(self.counters)
        inner = self._current
        for key in ("overflows", "dropped_frames"):  # MicSource's own counters
            if inner is not None and hasattr(inner, key):
                out[key] = getattr(inner, key)
        return out

    # -- internals ---------------------------------------------------------------

    def _open(self) -> Source | None:
        if self._first is not None:
            src, self._first = self._first, None
        else:
            try:
                # a named pipe's open blocks until a writer opens the other end
                src = self._said_while_waiting("no writer opened the pipe", self._reopen)
            except (SourceError, OSError) as e:  # OSError: a network source's host is down
                self.counters.open_failures += 1
                self._problem("open_failed", _why(e))
                return None
        self._current = src
        return src

    def _recordings(self, src: Source) -> Iterator[Recording | Skipped]:
        """`src.recordings()`, the first one asked for under `_said_while_waiting`: a
        live pipe reads its first audio to time the recording before yielding it, and a
        frozen writer held that read (and the run) without a word for as long as it
        lasted, where a stall after the first block is said every time."""
        it = iter(src.recordings())
        first = self._said_while_waiting("no audio", lambda: next(it, None))
        if first is not None:
            yield first
            yield from it

    def _said_while_waiting(self, what: str, fn: Callable[[], _T]) -> _T:
        """fn() (a call that blocks in the kernel, which nothing here can interrupt),
        with a source_stalled event when it has waited stall_s, then after twice as
        long each time (up to backoff_max_s apart), so that the health log and the
        counters show a recorder that records nothing; fn's exception is raised."""
        box: dict[str, object] = {}
        done = threading.Event()

        def call() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e
            finally:
                done.set()

        threading.Thread(target=call, name=f"watchdog-wait:{self.name}", daemon=True).start()
        waited, step = 0.0, self.settings.stall_s
        while not done.wait(step):
            if self._stop.is_set():  # closed while waiting: the run is stopping
                raise _Stopped
            waited += step
            self.counters.stalls += 1
            self._problem("source_stalled", f"{what} for {waited:g} s")
            step = min(max(self.settings.backoff_max_s, self.settings.stall_s), 2 * step)
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def _after(self, w: _Watched) -> None:
        if w.problem is None:
            self.counters.ended += 1
            self._problem("source_ended", f"stream ended after {w.audio_s:.1f} s of audio")
        elif w.kind == "stalled":
            self.counters.stalls += 1
            self._problem("source_stalled", w.problem)
        elif w.kind == "silent":
            self.counters.silences += 1
            self._problem("source_silent", w.problem)
        else:
            self.counters.ended += 1
            self._problem("source_lost", w.problem)

    def _problem(self, kind: str, why: str) -> None:
        self._log(kind, {"why": why})

    def _log(self, kind: str, detail: dict) -> None:
        self.health.record(kind, self.name, detail)

    def _wait(self, seconds: float) -> None:
        if not self._stop.is_set():
            self._sleep(seconds)


class _Watched:
    """One opening's blocks, read by a pump thread so that a frozen stream is noticed.

    `blocks()` ends normally when the stream ends, and raises AudioError (the
    detector's "partial" with a reason) when it fails, stalls or stays silent."""

    def __init__(self, rec: Recording, s: WatchdogSettings, on_end: Callable[[_Watched], None]):
        self.rec, self.s, self.on_end = rec, s, on_end
        self.ended = False  # the stream ended or failed (not: the consumer stopped early)
        self.audio_s = 0.0
        self.problem: str | None = None
        self.kind = ""
        self._q: queue.Queue = queue.Queue(maxsize=64)
        self._done = threading.Event()

    def _pump(self) -> None:
        try:
            for b in self.rec.blocks:
                while not self._done.is_set():
                    try:
                        self._q.put(("block", b), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._done.is_set():
                    return
            self._q.put(("end", None))
        except Exception as e:  # handed to the consumer, which reports it
            self._q.put(("error", e))

    def blocks(self) -> Iterator[np.ndarray]:
        s, sr = self.s, self.rec.sample_rate
        floor = 10 ** (s.silence_dbfs / 20)
        silent_s = 0.0
        pump = threading.Thread(target=self._pump, name=f"watchdog:{self.rec.id}", daemon=True)
        pump.start()
        try:
            while True:
                try:
                    kind, x = self._q.get(timeout=s.stall_s)
                except queue.Empty:
                    self._fail("stalled", f"no audio for {s.stall_s:g} s (stream frozen)")
                if kind == "end":
                    self.ended = True
                    return
                if kind == "error":
                    self._fail("lost", str(x))
                self.audio_s += len(x) / sr
                quiet = len(x) and float(np.max(np.abs(x))) < floor
                silent_s = silent_s + len(x) / sr if quiet else 0.0
                yield x
                if silent_s >= s.silence_s:
                    self._fail(
                        "silent",
                        f"{silent_s:.0f} s below {s.silence_dbfs:g} dBFS (microphone dead or muted?)",
                    )
        finally:
            # A pump blocked inside a frozen device cannot be interrupted from here; it
            # is a daemon and ends when its read returns or the source is closed.
            self._done.set()
            if self.ended:
                self.on_end(self)  # logged now, not when the next recording is asked for

    def _fail(self, kind: str, why: str) -> None:
        self.kind, self.problem, self.ended = kind, why, True
        raise AudioError(f"{kind}: {why}")


def _why(e: Exception) -> str:
    """A failed opening as the health log says it: a SourceError's own words, an
    OSError's with its kind ("ConnectionRefusedError: [Errno 111] Connection refused")."""
    return str(e) if isinstance(e, SourceError) else f"{type(e).__name__}: {e}"
