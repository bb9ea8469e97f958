"""Detector.run's accounting of a recording while it is open, and when it is stopped."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

import numpy as np
import pytest

from animalclap_edge.audio.decode import read_all
from animalclap_edge.detector import Detector
from animalclap_edge.records import OPEN_REASON
from animalclap_edge.sources import Recording
from animalclap_edge.store import DetectionStore

SR = 48_000


class _Once:
    """A source of the given recordings, in order (a live one: no file, no digest)."""

    name = "test"

    def __init__(self, *recs):
        self.recs = recs

    def recordings(self) -> Iterator[Recording]:
        yield from self.recs

    def close(self) -> None:
        pass


def _query(db, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def _row(db) -> tuple | None:
    rows = _query(db, "SELECT status, reason, duration_s, n_windows, n_detections FROM recordings")
    return rows[0] if rows else None


def test_an_open_recording_keeps_its_row_current_and_says_when_it_was_stopped(
    tiny_bundle, realaudio, tmp_path
):
    """A live stream cut by a power failure left no recordings row at all, so months of
    effort (minutes recorded) were missing from the card; a stop (SIGTERM) as well."""
    calls = np.concatenate([read_all(f, SR) for f in sorted(realaudio.glob("srkw*.wav"))])
    audio = np.resize(calls, 12 * SR)  # orca calls end to end, repeated to 12 s
    db, seen = tmp_path / "d.db", []

    def blocks() -> Iterator[np.ndarray]:
        for i in range(4):
            yield audio[i * 3 * SR : (i + 1) * 3 * SR]
            seen.append(_row(db))  # what a kill -9 at this moment would leave
        raise KeyboardInterrupt  # how SIGTERM and Ctrl-C reach the run

    det = Detector.load(tiny_bundle, warn_notice=False)
    det.progress_every_s = 0.0  # every batch: the default 30 s would outlast the test
    rec = Recording("mic:test@2026-11-27T12:00:00Z", SR, None, False, "test clock", blocks())
    try:
        with DetectionStore(db) as store, pytest.raises(KeyboardInterrupt):
            det.run(_Once(rec), store)
    finally:
        det.close()
    assert [s[:2] for s in seen] == [("partial", OPEN_REASON)] * 4
    durations = [s[2] for s in seen]
    assert durations == sorted(durations) and durations[-1] > 0
    status, reason, duration, n_windows, n_dets = _row(db)
    assert status == "partial" and duration == pytest.approx(12.0)
    assert reason == "stopped after 12.0 s: the process was stopped (Ctrl-C or SIGTERM)"
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM detections").fetchone()[0] == n_dets
    assert n_windows >= 6


class _Ends:
    """A source with nothing to yield that ends as told: done, stopped or failed."""

    name = "test"

    def __init__(self, error: BaseException | None):
        self.error = error

    def recordings(self) -> Iterator[Recording]:
        if self.error is not None:
            raise self.error
        yield from ()

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "error, ended",
    [
        (None, "finished"),
        (KeyboardInterrupt(), "stopped: Ctrl-C or SIGTERM"),
        (OSError(5, "Input/output\nerror"), "failed: OSError: [Errno 5] Input/output error"),
    ],
    ids=["finished", "stopped", "failed"],
)
def test_a_run_logs_how_it_ended(tiny_bundle, tmp_path, error, ended):
    """`report runs` called a recorder stopped by systemd, or one whose card failed,
    "finished", as if its source had been done. Sinks hear of the end too, however it
    came: one that buffers flushes then, and one whose flush raises changes nothing."""
    from animalclap_edge.sinks import SinkBase

    class Buffered(SinkBase):
        def __init__(self) -> None:
            self.ends: list[str] = []

        def on_run_end(self, summary) -> None:
            self.ends.append(summary.ended)

    class FlushFails(SinkBase):
        def on_run_end(self, summary) -> None:
            raise OSError("webhook down at the end")

    db, buffered = tmp_path / "d.db", Buffered()
    sinks = [FlushFails(), buffered]
    det = Detector.load(tiny_bundle, warn_notice=False)
    try:
        with DetectionStore(db) as store, pytest.warns(UserWarning, match="sink FlushFails"):
            if error is None:
                summary = det.run(_Ends(None), store, sinks=sinks)
                assert summary.sink_failures == 1
            else:
                with pytest.raises(type(error)):
                    det.run(_Ends(error), store, sinks=sinks)
    finally:
        det.close()
    ((finished, how),) = _query(db, "SELECT finished_utc, end_reason FROM runs")
    assert finished is not None and how == ended
    assert buffered.ends == [ended]  # once, after the runs table says how it ended


def _events(db) -> list[tuple]:
    return _query(db, "SELECT event_id, start_s, end_s, n_windows FROM events ORDER BY event_id")


def test_a_file_stopped_part_way_is_analysed_again_whole_and_its_events_match(
    tiny_bundle, realaudio, tmp_path
):
    """A review found a SIGTERM part-way through a file flushing events closed at the
    stop: the next run's whole events had the same ids and were dropped, so the rest
    of the file's events were never logged. A file is not flushed on a stop, and no
    row is written while a short file is analysed (a card's rows were written twice)."""
    import soundfile as sf

    from animalclap_edge.sources import FileSource

    calls = np.concatenate([read_all(f, SR) for f in sorted(realaudio.glob("srkw*.wav"))])
    wav = tmp_path / "20240514_053000.wav"
    sf.write(wav, np.resize(calls, 40 * SR), SR, subtype="PCM_16")
    low = tmp_path / "low.yaml"
    low.write_text("scoring:\n  threshold: 0.01\n")
    det = Detector.load(tiny_bundle, low, warn_notice=False)
    det.progress_every_s = 3600.0  # a slow machine must not write the row on time alone
    clean, stopped = tmp_path / "clean.db", tmp_path / "stopped.db"
    rows_seen = []

    def watched(rec, db, stop_after=None):
        for i, block in enumerate(rec.blocks):
            if stop_after is not None and i == stop_after:
                raise KeyboardInterrupt
            yield block
            rows_seen.append(_row(db))

    try:
        with FileSource(wav, SR, block_seconds=2.0) as src, DetectionStore(clean) as store:
            (rec,) = src.recordings()
            det.run(_Once(_replace(rec, blocks=watched(rec, clean))), store)
        assert rows_seen and set(rows_seen) == {None}  # one row, at the end
        with FileSource(wav, SR, block_seconds=2.0) as src, DetectionStore(stopped) as store:
            (rec,) = src.recordings()
            with pytest.raises(KeyboardInterrupt):
                det.run(_Once(_replace(rec, blocks=watched(rec, stopped, 7))), store)
        status, reason, *_ = _row(stopped)
        assert status == "partial" and reason.endswith(
            "the next run analyses it again from its start"
        )
        assert len(_events(stopped)) < len(_events(clean))
        with FileSource(wav, SR, block_seconds=2.0) as src, DetectionStore(stopped) as store:
            summary = det.run(src, store)
        assert summary.recordings == 1 and summary.already_done == 0
    finally:
        det.close()
    assert _events(stopped) == _events(clean)
    # one time format in every row (and so in every MQTT and live message): windows on
    # a whole second were written without a fraction, the others with microseconds
    times = [t for (t,) in _query(clean, "SELECT start_time_utc FROM detections")]
    assert times and all(
        re.fullmatch(r"2024-05-14T05:\d\d:\d\d\.\d{3}\+00:00", t) for t in times
    ), times[:3]
    assert {t[-10:-6] for t in times} == {".000", ".500"}  # hop 1.5 s
    with sqlite3.connect(clean) as a, sqlite3.connect(stopped) as b:
        q = "SELECT detection_id, probability FROM detections ORDER BY detection_id"
        assert a.execute(q).fetchall() == b.execute(q).fetchall()
        assert b.execute("SELECT status FROM recordings").fetchall() == [("ok",)]


def _replace(rec, **kw):
    from dataclasses import replace

    return replace(rec, **kw)


def test_a_card_read_after_digests_adopts_an_old_row_and_an_unreadable_file_keeps_it(
    tiny_bundle, tmp_path
):
    """A row logged before digests (bare path, no digest) is taken for the file now at
    its path, once; a file there that cannot be read is logged beside the analysed
    row, not over it (a review found the ok row replaced by 'skipped')."""
    from dataclasses import replace

    import soundfile as sf

    from animalclap_edge.sources import FileSource, Skipped

    from .factories import RUN, recording

    wav = tmp_path / "20240514_053000.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 4 * SR), SR, subtype="PCM_16")
    db = tmp_path / "d.db"
    det = Detector.load(tiny_bundle, warn_notice=False)
    try:
        with DetectionStore(db) as store:
            store.start_run(RUN, det.bundle.id, det.config_hash, "old", "0.1.0")
            store.record_recording(replace(recording(recording_id=str(wav)), content_digest=""))
            with FileSource(wav, SR) as src:
                summary = det.run(src, store)
            assert (summary.adopted, summary.already_done) == (1, 1)
            with FileSource(wav, SR) as src:
                assert det.run(src, store).adopted == 0  # known from now on
            det.run(_Once(Skipped(str(wav), "cannot read: Input/output error")), store)
            rows = {r.recording_id: (r.status, r.source_path) for r in store.recordings()}
    finally:
        det.close()
    assert rows == {
        str(wav): ("ok", str(wav)),
        f"{wav}#unread": ("skipped", str(wav)),
    }


@pytest.mark.parametrize("name", ["rec-07", None])
def test_a_run_logs_the_recorders_name_and_site(tiny_bundle, tmp_path, name):
    """Recorders cloned from one image share a host name, the only name a run had."""
    import socket

    from animalclap_edge.config import EdgeConfig

    cfg = EdgeConfig.model_validate({"device": {"name": name, "site": "ridge-3"}})
    db = tmp_path / "d.db"
    det = Detector.load(tiny_bundle, cfg, warn_notice=False)
    try:
        with DetectionStore(db) as store:
            det.run(_Ends(None), store)
    finally:
        det.close()
    assert _query(db, "SELECT device, site FROM runs") == [
        (name or socket.gethostname(), "ridge-3")
    ]


def test_a_live_window_is_logged_once_a_block_completes_it_not_a_batch_later(
    tiny_bundle, realaudio, tmp_path
):
    """A live view lagged 12-15 s behind the sound: a live stream's windows waited for
    a full batch (backend.batch_size 8 x hop 1.5 s) before the model saw them (found by
    a dashboard builder)."""
    calls = np.concatenate([read_all(f, SR) for f in sorted(realaudio.glob("srkw*.wav"))])
    audio = np.resize(calls, 9 * SR)
    db, logged = tmp_path / "d.db", []
    half = SR // 2  # a microphone's 0.5 s blocks

    def blocks() -> Iterator[np.ndarray]:
        for i in range(0, len(audio), half):
            yield audio[i : i + half]
            logged.append((i + half) / SR)  # seconds of audio given when this is read
            logged.append(_query(db, "SELECT count(DISTINCT window_start_s) FROM detections")[0][0])

    cfg = tmp_path / "c.yaml"
    cfg.write_text("scoring:\n  threshold: 0.01\nbackend:\n  batch_size: 8\n")
    from animalclap_edge.config import load_config

    det = Detector.load(tiny_bundle, load_config(str(cfg)), warn_notice=False)
    rec = Recording("mic:test@2026-11-27T12:00:00Z", SR, None, False, "test clock", blocks())
    try:
        with DetectionStore(db) as store:
            det.run(_Once(rec), store)
    finally:
        det.close()
    given = dict(zip(logged[::2], logged[1::2], strict=True))
    # windows of 3 s every 1.5 s: each is in the database as soon as its audio is
    assert given[3.0] == 1 and given[4.5] == 2 and given[6.0] == 3, given


def test_a_source_of_ones_own_giving_int16_or_another_rate_is_said_per_recording(
    tiny_bundle, realaudio, tmp_path
):
    """An integrator's source gave int16 blocks: scored as floats 32,767 times too loud,
    with a detection; one at 22,050 Hz was analysed as 48 kHz, its duration logged
    wrong. Both were taken without a word (found by an integrator)."""
    audio = np.resize(read_all(sorted(realaudio.glob("srkw*.wav"))[0], SR), 4 * SR)
    as_int16 = Recording("mic:int16", SR, None, False, "", iter([(audio * 32767).astype("<i2")]))
    slow = Recording("mic:22k", 22_050, None, False, "", iter([audio[: 4 * 22_050]]))
    good = Recording("mic:float", SR, None, False, "", iter([audio]))
    det = Detector.load(tiny_bundle, warn_notice=False)
    try:
        with DetectionStore(tmp_path / "d.db") as store:
            det.run(_Once(as_int16, slow, good), store)
    finally:
        det.close()
    rows = dict(
        (rid, (status, reason, n))
        for rid, status, reason, n in _query(
            tmp_path / "d.db", "SELECT recording_id, status, reason, n_windows FROM recordings"
        )
    )
    status, reason, n = rows["mic:int16"]
    assert (status, n) == ("skipped", 0)  # no window: skipped, with the reason
    assert reason.startswith("a block of int16 (192000,): a source yields 1-D float32 mono")
    assert rows["mic:22k"] == (
        "skipped",
        "its blocks are at 22050 Hz and the model takes 48000 Hz: a source resamples to the "
        "detector's sample_rate",
        0,
    )
    assert rows["mic:float"][:1] == ("ok",) and rows["mic:float"][2] > 0


def test_a_sink_that_raises_is_said_once_and_the_run_goes_on(tiny_bundle, realaudio, tmp_path):
    """A webhook sink that raised ConnectionError ended the recording ("partial") and
    the run: the database had every detection, and the rest of the audio was lost."""

    class Down:
        def on_detection(self, det) -> None:
            raise ConnectionError("webhook down")

        def on_event(self, event) -> None:
            raise ConnectionError("webhook down")

        def on_recording(self, result) -> None:
            pass

    from animalclap_edge.sinks import SinkBase

    class Kept(SinkBase):  # only the call it needs: SinkBase has the others
        def __init__(self) -> None:
            self.detections: list = []

        def on_detection(self, det) -> None:
            self.detections.append(det)

    down, kept = Down(), Kept()
    audio = np.resize(read_all(sorted(realaudio.glob("srkw*.wav"))[0], SR), 9 * SR)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scoring:\n  threshold: 0.01\n")
    from animalclap_edge.config import load_config

    det = Detector.load(tiny_bundle, load_config(str(cfg)), warn_notice=False)
    rec = Recording("mic:webhook", SR, None, False, "", iter(np.split(audio, 6)))
    try:
        with DetectionStore(tmp_path / "d.db") as store:
            with pytest.warns(UserWarning, match=r"sink Down failed \(ConnectionError: webhook"):
                summary = det.run(_Once(rec), store, sinks=[down, kept])
            health = [h for h in store.health() if h["kind"] == "sink_failed"]
    finally:
        det.close()
    assert _row(tmp_path / "d.db")[0] == "ok"
    assert summary.detections == len(kept.detections) > 1
    assert summary.sink_failures == summary.detections + summary.events
    assert [(h["source"], h["detail"]["why"]) for h in health] == [
        ("Down", "ConnectionError: webhook down")
    ]


def test_a_closed_detector_says_so_and_a_missing_file_is_named_once(tmp_path):
    """Used after close(): "AttributeError: 'NoneType' object has no attribute 'run'";
    a missing file: "/x/nope.wav: not found or not a file: /x/nope.wav"."""
    from animalclap_edge.audio.decode import AudioError

    det = Detector.load(warn_notice=False)
    with pytest.raises(AudioError) as e:
        det.detect_file(tmp_path / "nope.wav")
    assert str(e.value) == f"not found or not a file: {tmp_path / 'nope.wav'}"
    det.close()
    for use in (
        lambda: det.detect_array(np.zeros(3 * SR, np.float32), SR),
        lambda: det.detect_file(tmp_path / "nope.wav"),
        lambda: det.run(_Once(), DetectionStore(":memory:")),
    ):
        with pytest.raises(RuntimeError, match=r"^this Detector was closed: load another"):
            use()
