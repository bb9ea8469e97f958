"""Output sinks: views of what the store already holds (stdout lines, JSONL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TextIO, runtime_checkable

from animalclap_edge.records import Detection, Event, RecordingResult

if TYPE_CHECKING:
    from animalclap_edge.detector import RunSummary


class DetectionSink(Protocol):
    """Where `Detector.run` hands each detection, event and finished recording, after the
    database holds it, on the analysis thread (a slow sink delays analysis: queue the
    work and return). An exception from a sink does not stop the run: the first of each
    sink is warned of and logged (health `sink_failed`), all are counted
    (`RunSummary.sink_failures`), and the sink is still called for what follows;
    except those of its `stops_run` (a tuple of exception types), which end the run as
    they always did: a closed stdout (`run --jsonl | head`) ends it."""

    def on_detection(self, det: Detection) -> None: ...
    def on_event(self, event: Event) -> None: ...
    def on_recording(self, result: RecordingResult) -> None: ...


@runtime_checkable
class RunEndSink(Protocol):
    """A sink that also wants the end of the run (optional: a DetectionSink without it
    is not called). Called once, after the database has closed the run, however it
    ended (`summary.ended`: finished, stopped by Ctrl-C or SIGTERM, or failed): where a
    sink that buffers (a file, a batch for a webhook) flushes. An exception from it is
    reported as the other calls' are and never ends anything."""

    def on_run_end(self, summary: RunSummary) -> None: ...


class SinkBase:
    """A DetectionSink to subclass: each call does nothing until overridden, and no
    exception of it ends the run (`stops_run` empty). Override what you need."""

    stops_run: tuple[type[BaseException], ...] = ()

    def on_detection(self, det: Detection) -> None:
        pass

    def on_event(self, event: Event) -> None:
        pass

    def on_recording(self, result: RecordingResult) -> None:
        pass

    def on_run_end(self, summary: RunSummary) -> None:
        pass


class GuardedSink:
    """`sink`, whose exceptions are reported (`report(sink name, exception)`) and
    swallowed: the database already holds what it was given."""

    def __init__(self, sink: DetectionSink, report: Callable[[str, Exception], None]):
        self.sink, self.report = sink, report
        self.name = type(sink).__name__
        self.stops_run: tuple[type[BaseException], ...] = getattr(sink, "stops_run", ())

    def _call(self, method: str, item: object) -> None:
        try:
            getattr(self.sink, method)(item)
        except self.stops_run:
            raise
        except Exception as e:  # KeyboardInterrupt and SystemExit still stop the run
            self.report(self.name, e)

    def on_detection(self, det: Detection) -> None:
        self._call("on_detection", det)

    def on_event(self, event: Event) -> None:
        self._call("on_event", event)

    def on_recording(self, result: RecordingResult) -> None:
        self._call("on_recording", result)

    def on_run_end(self, summary: RunSummary) -> None:
        if not isinstance(self.sink, RunEndSink):
            return
        try:  # the run is over: nothing is left for stops_run to stop
            self.sink.on_run_end(summary)
        except Exception as e:
            self.report(self.name, e)


class ConsoleSink(SinkBase):
    """One human line per detection."""

    stops_run: tuple[type[BaseException], ...] = (BrokenPipeError,)  # `| head`: the CLI ends

    def __init__(self, out: TextIO):
        self.out = out

    def on_detection(self, d: Detection) -> None:
        when = (
            d.start_time_utc[:19] + ("Z" if d.clock_trusted else "Z?") if d.start_time_utc else "-"
        )
        name = d.scientific_name if d.level == "species" else f"unknown {d.taxon} ({d.level})"
        common = f" ({d.common_name})" if d.level == "species" else ""
        self.out.write(
            f"{when}  {_short(d.recording_id)}  {d.window_start_s:7.1f}-{d.window_end_s:.1f}s  "
            f"{name}{common}  p={d.probability:.2f}\n"
        )
        self.out.flush()

    # on_event: none; the console shows windows as they come, events are in the store and JSONL

    def on_recording(self, r: RecordingResult) -> None:
        # Every file is accounted for: files with detections appear above, skipped ones
        # on stderr (SkipLog); this covers files that were read but held nothing.
        if r.status == "ok" and r.n_detections == 0:
            self.out.write(
                f"{'-':21s}  {_short(r.source_path)}  {r.n_windows} windows, nothing above threshold\n"
            )
            self.out.flush()


class SkipLog(SinkBase):
    """One line per skipped or partial recording, with its reason, and one per audio
    note (stderr in the CLI). A note is said once: a card of 384 kHz files holds the same
    note for every file, which the database keeps per file (`recordings.audio_note`)."""

    def __init__(self, err: TextIO):
        self.err = err
        self._notes_said: set[str] = set()

    def on_recording(self, r: RecordingResult) -> None:
        if r.status != "ok":
            self.err.write(f"{r.status}: {r.source_path}: {r.reason}\n")
        if r.audio_note and r.audio_note not in self._notes_said:
            self._notes_said.add(r.audio_note)
            self.err.write(
                f"note: {r.source_path}: {r.audio_note} (said once; every file's note is in "
                "recordings.audio_note)\n"
            )
        self.err.flush()


class JsonlSink(SinkBase):
    """One JSON object per detection, and one per recording with its status, on `out`."""

    stops_run: tuple[type[BaseException], ...] = (BrokenPipeError,)  # reader gone: exit 141

    def __init__(self, out: TextIO):
        self.out = out

    def on_detection(self, d: Detection) -> None:
        self.out.write(json.dumps({"type": "detection", **d.to_json_dict()}) + "\n")
        self.out.flush()

    def on_event(self, e: Event) -> None:
        self.out.write(json.dumps({"type": "event", **e.to_json_dict()}) + "\n")
        self.out.flush()

    def on_recording(self, r: RecordingResult) -> None:
        self.out.write(
            json.dumps(
                {
                    "type": "recording",
                    "path": r.source_path,
                    "status": r.status,
                    "reason": r.reason,
                    "audio_note": r.audio_note,
                    "windows": r.n_windows,
                    "detections": r.n_detections,
                }
            )
            + "\n"
        )
        self.out.flush()


def _short(path: str, width: int = 40) -> str:
    name = path.rsplit("/", 1)[-1]
    return name if len(name) <= width else name[: width - 1] + "…"
