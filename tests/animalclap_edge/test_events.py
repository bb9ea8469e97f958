"""Merging window detections into events: the rule, the ids, the store, a real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from animalclap_edge.events import EventMerger
from animalclap_edge.store import DetectionStore

from .factories import detection as _det  # one Detection factory for the runtime tests

HOP = 72_000  # 1.5 s at 48 kHz


def _run(merger: EventMerger, windows: dict[int, list[str]], n: int) -> list:
    """windows: window index -> taxa detected in it; n windows in all, hop 1.5 s."""
    events = []
    for k in range(n):
        dets = [_det(k * HOP, taxon=t) for t in windows.get(k, [])]
        events += merger.push(k * HOP / 48_000, dets)
    return events + merger.flush()


def test_consecutive_windows_merge_and_a_missing_window_splits():
    events = _run(EventMerger(1.5), {0: ["a"], 1: ["a"], 2: ["a"], 4: ["a"], 5: ["a"]}, 7)
    assert [(e.start_s, e.end_s, e.n_windows) for e in events] == [(0.0, 6.0, 3), (6.0, 10.5, 2)]


def test_a_wider_gap_bridges_one_missing_window():
    events = _run(EventMerger(3.0), {0: ["a"], 1: ["a"], 3: ["a"]}, 5)
    assert [(e.start_s, e.end_s, e.n_windows) for e in events] == [(0.0, 7.5, 3)]


def test_labels_are_merged_separately_and_probabilities_summarised():
    merger = EventMerger(1.5)
    events = []
    for k, (taxa, p) in enumerate([(["a", "b"], 0.6), (["a"], 0.9), (["b"], 0.7)]):
        events += merger.push(k * 1.5, [_det(k * HOP, taxon=t, probability=p) for t in taxa])
    events += merger.flush()
    by = {e.taxon: e for e in events}
    assert by["a"].n_windows == 2 and by["a"].max_probability == 0.9
    assert by["a"].mean_probability == pytest.approx(0.75)
    assert len(events) == 3  # b splits: window 1 lacks it and window 2 is 3 s after window 0
    assert [e.n_windows for e in events if e.taxon == "b"] == [1, 1]


def test_event_ids_are_stable_and_reset_clears_state():
    a = _run(EventMerger(1.5), {0: ["a"], 1: ["a"]}, 2)
    merger = EventMerger(1.5)
    merger.push(0.0, [_det(0, taxon="x")])
    merger.reset()
    assert merger.flush() == []
    b = _run(merger, {0: ["a"], 1: ["a"]}, 2)
    assert [e.event_id for e in a] == [e.event_id for e in b]
    assert a[0].event_id.startswith("event:")
    with pytest.raises(ValueError, match="merge_gap_s"):
        EventMerger(-1)


def test_store_keeps_events_once(tmp_path: Path):
    events = _run(EventMerger(1.5), {0: ["a"], 1: ["a"], 3: ["b"]}, 4)
    with DetectionStore(tmp_path / "d.db") as s:
        s.start_run("run-a", "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        assert s.add_events(events) == 2
        assert s.add_events(events) == 0  # replay
        assert [e.taxon for e in s.events()] == ["a", "b"]
        assert s.events()[0] == events[0]


def test_detector_logs_events_that_cover_its_detections(tiny_bundle, realaudio, tmp_path):
    from animalclap_edge.config import EdgeConfig
    from animalclap_edge.detector import Detector
    from animalclap_edge.sinks import JsonlSink
    from animalclap_edge.sources import FolderSource

    cfg = EdgeConfig.model_validate({"scoring": {"threshold": 0.0, "top_k": 2}})
    det = Detector.load(tiny_bundle, cfg)
    import io

    out = io.StringIO()
    files = sorted(realaudio.glob("srkw*.wav"))[:4]  # orca calls of several seconds
    folder = tmp_path / "in"
    folder.mkdir()
    for f in files:
        (folder / f.name).symlink_to(f)
    try:
        with (
            DetectionStore(tmp_path / "d.db") as store,
            FolderSource(folder, det.sample_rate) as src,
        ):
            det.run(src, store, [JsonlSink(out)])
            dets, events = store.detections(), store.events()
    finally:
        det.close()
    assert dets and events
    assert sum(e.n_windows for e in events) == len(dets)  # every detection in one event
    for d in dets:
        owners = [
            e
            for e in events
            if (e.recording_id, e.level, e.taxon) == (d.recording_id, d.level, d.taxon)
            and e.start_s <= d.window_start_s
            and d.window_end_s <= e.end_s
        ]
        assert len(owners) == 1
    assert out.getvalue().count('"type": "event"') == len(events)


def test_clips_are_the_best_window_of_each_event(tiny_bundle, realaudio, tmp_path):
    import soundfile as sf

    from animalclap_edge.config import EdgeConfig
    from animalclap_edge.detector import Detector
    from animalclap_edge.sources import FileSource

    cfg = EdgeConfig.model_validate(
        {
            "scoring": {"threshold": 0.0, "top_k": 1},
            "storage": {"save_clips": True, "clips_dir": str(tmp_path / "clips")},
        }
    )
    det = Detector.load(tiny_bundle, cfg)
    # the longest real clip (9.7 s, 5 windows): events of several windows
    wav = max(realaudio.glob("*.ogg"), key=lambda p: sf.info(p).duration)
    try:
        with DetectionStore(tmp_path / "d.db") as store, FileSource(wav, det.sample_rate) as src:
            det.run(src, store)
            events, dets = store.events(), store.detections()
    finally:
        det.close()
    assert events and all(e.clip_path and e.clip_note is None for e in events)
    from animalclap_edge.audio.decode import read_all

    whole = read_all(wav, 48_000)
    peaks_inside = 0  # events whose best window is not their first: the case that tells
    for e in events:
        audio, sr = sf.read(tmp_path / "clips" / e.clip_path)
        assert sr == 48_000 and len(audio) == det.window
        peak = max(
            (
                d
                for d in dets
                if (d.level, d.taxon) == (e.level, e.taxon)
                and e.start_s <= d.window_start_s < e.end_s
            ),
            key=lambda d: d.probability,
        )
        assert peak.probability == e.max_probability
        # the clip holds that window's audio (16-bit in the file; the streamed and the
        # whole-file resampling of a non-48 kHz source differ by far less than 1e-3)
        peaks_inside += peak.window_start_s > e.start_s
        start = round(peak.window_start_s * 48_000)
        expected = whole[start : start + det.window]
        np.testing.assert_allclose(audio[: len(expected)], expected, atol=1e-3)
    assert peaks_inside, [(e.start_s, e.end_s, e.n_windows) for e in events]
    assert not list((tmp_path / "clips").rglob(".*.tmp"))


def test_a_full_disk_stops_clips_but_not_events(tiny_bundle, realaudio, tmp_path):
    from animalclap_edge.config import EdgeConfig
    from animalclap_edge.detector import Detector
    from animalclap_edge.sources import FileSource

    cfg = EdgeConfig.model_validate(
        {
            "scoring": {"threshold": 0.0, "top_k": 1},
            # any real disk is fuller than 0.001%: every clip is refused
            "storage": {
                "save_clips": True,
                "clips_dir": str(tmp_path / "clips"),
                "max_disk_percent": 0.001,
            },
        }
    )
    det = Detector.load(tiny_bundle, cfg)
    wav = sorted(realaudio.glob("srkw*.wav"))[0]
    try:
        with DetectionStore(tmp_path / "d.db") as store, FileSource(wav, det.sample_rate) as src:
            det.run(src, store)
            events = store.events()
    finally:
        det.close()
    assert events and all(e.clip_path is None and "max_disk_percent" in e.clip_note for e in events)
    assert det.clips.refused == {"disk full": len(events)}
