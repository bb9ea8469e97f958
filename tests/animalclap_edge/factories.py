"""Detection and recording factories for the runtime tests (store, events, outbox,
recovery, retention, report)."""

from __future__ import annotations

import json

from animalclap_edge.records import Detection, RecordingResult, detection_id

BUNDLE = "bundle-0001"
RUN = "run-a"
REC = "/data/in/dawn.flac"


def detection(
    start_sample: int,
    taxon: str = "eurbla",
    level: str = "species",
    recording_id: str = REC,
    **kw,
) -> Detection:
    """A species detection of the window starting at `start_sample` (48 kHz); its id is
    the real one for (BUNDLE, recording, start, level, taxon). Any field can be given."""
    t0 = start_sample / 48000
    fields = dict(
        detection_id=detection_id(BUNDLE, recording_id, start_sample, level, taxon),
        run_id=RUN,
        recording_id=recording_id,
        window_start_s=t0,
        window_end_s=t0 + 3.0,
        start_time_utc=None,
        clock_trusted=False,
        bundle_id=BUNDLE,
        config_hash="0123456789abcdef",
        rank=0,
        level=level,
        taxon=taxon,
        scientific_name="Turdus merula",
        common_name="Eurasian Blackbird",
        score=0.31,
        probability=0.87,
        traits_json=json.dumps({"activity": {"value": "diurnal", "p": 0.9}}),
        created_utc="2024-05-01T04:00:00.000+00:00",
    )
    fields.update(kw)
    return Detection(**fields)


def recording(status: str = "ok", recording_id: str = REC, **kw) -> RecordingResult:
    """The accounting row of a minute-long file of RUN; any field can be given."""
    fields = dict(
        recording_id=recording_id,
        run_id=RUN,
        source_path=recording_id,
        status=status,
        reason=None if status == "ok" else "too short (0.20 s < audio.min_clip_s 0.5 s)",
        duration_s=60.0,
        n_windows=39,
        n_detections=2,
        start_time_utc="2024-05-01T04:00:00+00:00",
        clock_trusted=True,
        clock_note="file name timestamp",
        finished_utc="2024-05-01T04:01:00.000+00:00",
    )
    fields.update(kw)
    return RecordingResult(**fields)
