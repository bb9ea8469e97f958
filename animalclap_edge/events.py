"""Merge consecutive window detections of one label into events.

A call or a chorus spans several overlapping windows; a biologist counts it once.
Per recording, each label (level, taxon) keeps an open event. A detection whose
window starts at most `merge_gap_s` (config `scoring.merge_gap_s`) after the
event's last window started extends it; a later one closes it and opens a new
event. With the default hop of 1.5 s and gap of 1.5 s, windows in a row merge and
one window without the label splits the event. State is explicit: one merger per
recording, `flush` at its end, `reset` to reuse it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from animalclap_edge.records import Detection, Event, event_id, now_utc_ms

_EPS = 1e-6  # window starts are sample counts / rate: compare with a little slack


@dataclass
class _Open:
    first: Detection
    last_start_s: float
    end_s: float
    probs: list[float] = field(default_factory=list)


class EventMerger:
    def __init__(self, merge_gap_s: float = 1.5):
        if merge_gap_s < 0:
            raise ValueError(f"merge_gap_s must be >= 0, got {merge_gap_s}")
        self.gap = merge_gap_s
        self._open: dict[tuple[str, str], _Open] = {}

    def reset(self) -> None:
        self._open.clear()

    def push(self, window_start_s: float, detections: list[Detection]) -> list[Event]:
        """The detections of the window starting at window_start_s (possibly none);
        returns the events that this window closed."""
        closed = self._close_before(window_start_s)
        for d in detections:
            key = (d.level, d.taxon)
            ev = self._open.get(key)
            if ev is None:
                self._open[key] = _Open(d, d.window_start_s, d.window_end_s, [d.probability])
            else:
                ev.last_start_s, ev.end_s = d.window_start_s, max(ev.end_s, d.window_end_s)
                ev.probs.append(d.probability)
        return closed

    def flush(self) -> list[Event]:
        """End of the recording: close every open event."""
        return [self._close(k) for k in list(self._open)]

    def _close_before(self, window_start_s: float) -> list[Event]:
        stale = [
            k for k, ev in self._open.items() if window_start_s - ev.last_start_s > self.gap + _EPS
        ]
        return [self._close(k) for k in stale]

    def _close(self, key: tuple[str, str]) -> Event:
        ev = self._open.pop(key)
        d = ev.first
        return Event(
            event_id=event_id(
                d.bundle_id, d.recording_id, _micros(d.window_start_s), d.level, d.taxon
            ),
            run_id=d.run_id,
            recording_id=d.recording_id,
            level=d.level,
            taxon=d.taxon,
            scientific_name=d.scientific_name,
            common_name=d.common_name,
            start_s=d.window_start_s,
            end_s=ev.end_s,
            start_time_utc=d.start_time_utc,
            clock_trusted=d.clock_trusted,
            n_windows=len(ev.probs),
            max_probability=round(max(ev.probs), 4),
            mean_probability=round(sum(ev.probs) / len(ev.probs), 4),
            bundle_id=d.bundle_id,
            config_hash=d.config_hash,
            created_utc=now_utc_ms(),
        )


def merged(detections: Iterable[Detection], merge_gap_s: float) -> Iterator[Event]:
    """Every event of one recording's detections, given in window order, as a run that
    analysed it whole would have merged them (the same ids with the same merge_gap_s)."""
    merger = EventMerger(merge_gap_s)
    window: float | None = None
    batch: list[Detection] = []
    for d in detections:
        if window is not None and d.window_start_s != window:
            yield from merger.push(window, batch)
            batch = []
        window = d.window_start_s
        batch.append(d)
    if window is not None:
        yield from merger.push(window, batch)
    yield from merger.flush()


def _micros(seconds: float) -> int:
    # ids take an integer: the start in microseconds is exact for any sample position
    return round(seconds * 1_000_000)
