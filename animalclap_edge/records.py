"""Record types the pipeline hands to the store and the sinks.

Field names match the columns of the `detections` and `recordings` tables in
`animalclap_edge.store`, so a row and a record convert one to one.
"""

from __future__ import annotations

import json
import operator
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any


def utc_ms(t: datetime) -> str:
    """The one form every time is logged and sent in: UTC to the millisecond, offset
    written out (`2024-03-15T03:30:01.500+00:00`), so that the strings sort and compare
    as times. isoformat() alone wrote whole seconds without a fraction and others with
    microseconds, and one column (one MQTT stream) holding both made
    pandas.to_datetime refuse it."""
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def now_utc_ms() -> str:
    return utc_ms(datetime.now(timezone.utc))


LEVELS: tuple[str, ...] = ("species", "genus", "family", "order", "class")

# The reason of a recording's row while it is analysed (kept current: a power cut leaves
# how much audio it had), and of one whose run died with it open, as the next run on
# the database (holding its lock: no other can be running) finds it.
OPEN_REASON = (
    "open: still being analysed, or its process died (power cut, kill -9) after duration_s of audio"
)
CUT_OFF_REASON = "cut off: its run died with it open (power cut, kill -9) after duration_s of audio"
STATUSES: tuple[str, ...] = ("ok", "skipped", "partial")

# Fixed forever: detection ids derived from it are stored on recorders and sent
# upstream, and a replay must reproduce them to stay idempotent.
_DETECTION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:animalclap-edge:detection")


def detection_id(
    bundle_id: str, recording_id: str, window_start_sample: int, level: str, taxon: str
) -> str:
    """Stable id of one label in one window: the same inputs give the same id on any machine.

    The config is deliberately not part of it: re-running a recording with the same
    bundle after a threshold change must not duplicate what was already logged.
    """
    # operator.index rejects a float offset (which would not round-trip) and turns a
    # numpy integer into a plain int that json can encode.
    start = operator.index(window_start_sample)
    # JSON encoding keeps the parts unambiguous whatever characters a path contains.
    name = json.dumps([bundle_id, recording_id, start, level, taxon], ensure_ascii=False)
    return str(uuid.uuid5(_DETECTION_NAMESPACE, name))


def _coerce(obj: Any, floats: tuple[str, ...], ints: tuple[str, ...]) -> None:
    # numpy scalars reach here from the scorer; sqlite3 cannot bind them and json
    # cannot encode them, so every record holds plain Python numbers.
    for name in floats:
        object.__setattr__(obj, name, float(getattr(obj, name)))
    for name in ints:
        object.__setattr__(obj, name, operator.index(getattr(obj, name)))
    object.__setattr__(obj, "clock_trusted", bool(obj.clock_trusted))


@dataclass(frozen=True)
class Detection:
    """One label of one window (a row of `detections`); numbers are coerced to float/int/bool."""

    detection_id: str
    run_id: str
    recording_id: str
    window_start_s: float  # offset in the recording
    window_end_s: float
    start_time_utc: str | None  # ISO 8601 wall-clock time of the window start, if known
    clock_trusted: bool
    bundle_id: str
    config_hash: str
    rank: int  # 0 = best label of the window
    level: str  # one of LEVELS
    taxon: str  # species id, or the taxon's name for back-off levels
    scientific_name: str
    common_name: str
    score: float  # cosine similarity
    probability: float
    traits_json: str  # JSON object: trait -> prediction
    created_utc: str

    def __post_init__(self) -> None:
        _coerce(self, ("window_start_s", "window_end_s", "score", "probability"), ("rank",))

    def to_json_dict(self) -> dict[str, Any]:
        """The JSONL line / outbox payload: every field, with traits as a JSON object."""
        d = asdict(self)
        raw = d.pop("traits_json")
        d["traits"] = json.loads(raw) if raw else None
        return d


@dataclass(frozen=True)
class RecordingResult:
    """The accounting of one recording (a row of `recordings`), whatever happened to it."""

    recording_id: str
    run_id: str
    source_path: str
    status: str  # one of STATUSES
    reason: str | None  # why skipped/partial; None when ok
    duration_s: float
    n_windows: int
    n_detections: int
    start_time_utc: str | None
    clock_trusted: bool
    clock_note: str
    finished_utc: str
    audio_note: str = ""  # what of the audio the model does not hear (a faster recording)
    # sources.content_digest of a file ('' for live audio and rows written before it)
    content_digest: str = ""

    def __post_init__(self) -> None:
        _coerce(self, ("duration_s",), ("n_windows", "n_detections"))


EVENT_ID_PREFIX = "event:"  # detection ids are bare UUIDs: a message id names its kind


def event_id(
    bundle_id: str, recording_id: str, first_window_sample: int, level: str, taxon: str
) -> str:
    """Stable id of an event: its label and the start of its first window."""
    return EVENT_ID_PREFIX + detection_id(
        bundle_id, recording_id, first_window_sample, level, taxon
    )


def is_event_id(message_id: str) -> bool:
    """Whether an outbox message id is an event's (else a detection's)."""
    return message_id.startswith(EVENT_ID_PREFIX)


@dataclass(frozen=True)
class Event:
    """Consecutive windows with the same label, merged (a row of `events`)."""

    event_id: str
    run_id: str
    recording_id: str
    level: str
    taxon: str
    scientific_name: str
    common_name: str
    start_s: float  # start of the first window, in the recording
    end_s: float  # end of the last window
    start_time_utc: str | None
    clock_trusted: bool
    n_windows: int
    max_probability: float
    mean_probability: float
    bundle_id: str
    config_hash: str
    created_utc: str
    clip_path: str | None = None  # relative to storage.clips_dir: the event's best window
    clip_note: str | None = None  # why there is no clip, when one was asked for

    def __post_init__(self) -> None:
        _coerce(self, ("start_s", "end_s", "max_probability", "mean_probability"), ("n_windows",))

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)
