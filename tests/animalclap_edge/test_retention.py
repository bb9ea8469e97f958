"""Retention on a real store and real clip files: oldest clip audio first, examples of
each label kept, undelivered detections never deleted by age, events told why."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import namedtuple
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from animalclap_edge.config import ConfigError, EdgeConfig, config_from_dict
from animalclap_edge.diskspace import percent_full
from animalclap_edge.records import Detection, Event, event_id
from animalclap_edge.retention import Retention
from animalclap_edge.store import DetectionStore

from .factories import BUNDLE, REC, RUN, detection

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
CLIP_BYTES = 40 * 4096  # a whole number of blocks: its size on disk is its length
Usage = namedtuple("Usage", "total used free")


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def _event(i: int, taxon: str, p: float, created: datetime, clip: str | None = None) -> Event:
    return Event(
        event_id=event_id(BUNDLE, REC, i * 48_000, "species", taxon),
        run_id=RUN,
        recording_id=REC,
        level="species",
        taxon=taxon,
        scientific_name=taxon,
        common_name=taxon,
        start_s=float(i),
        end_s=i + 3.0,
        start_time_utc=None,
        clock_trusted=False,
        n_windows=1,
        max_probability=p,
        mean_probability=p,
        bundle_id=BUNDLE,
        config_hash="0123456789abcdef",
        created_utc=_iso(created),
        clip_path=clip,
    )


def _detection(i: int, taxon: str, p: float, created: datetime) -> Detection:
    return detection(
        i * 48_000,
        taxon,
        scientific_name=taxon,
        common_name=taxon,
        score=0.3,
        probability=p,
        traits_json="{}",
        created_utc=_iso(created),
    )


class FakeDisk:
    """A disk of `total` bytes holding `base` bytes plus the clip files really on it."""

    def __init__(self, folder: Path, total: int, base: int = 0):
        self.folder, self.total, self.base = folder, total, base

    def __call__(self, path: Path) -> Usage:
        used = self.base + sum(f.stat().st_blocks * 512 for f in self.folder.rglob("*.flac"))
        return Usage(self.total, used, self.total - used)

    def percent(self) -> float:
        return percent_full(self.folder, self)


@pytest.fixture
def store(tmp_path: Path):
    with DetectionStore(tmp_path / "d.db") as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0")
        yield s


def _with_clips(store: DetectionStore, clips: Path, spec: list[tuple[str, float, int]]) -> list:
    """Events (taxon, max_probability, age in days) with a real clip file each, logged
    in the order given (so the first is the oldest)."""
    events = []
    for i, (taxon, p, days) in enumerate(spec):
        rel = f"2026-05-01/{event_id(BUNDLE, REC, i * 48_000, 'species', taxon).replace(':', '_')}.flac"
        (clips / rel).parent.mkdir(parents=True, exist_ok=True)
        (clips / rel).write_bytes(bytes(range(256)) * (CLIP_BYTES // 256))
        events.append(_event(i, taxon, p, NOW - timedelta(days=days, minutes=len(spec) - i), rel))
    store.add_events(events)
    return events


def _clip_rows(store: DetectionStore) -> dict[str, tuple[str | None, str | None]]:
    return {e.event_id: (e.clip_path, e.clip_note) for e in store.events()}


def test_disk_rule_deletes_oldest_first_to_the_low_mark_and_keeps_the_best_of_each_label(
    store, tmp_path
):
    clips = tmp_path / "clips"
    clips.mkdir()
    spec = [  # oldest first
        ("eurbla", 0.95, 1),  # the best blackbird: kept
        ("eurbla", 0.50, 1),
        ("tawowl1", 0.40, 1),  # the only owl: kept however old
        ("eurbla", 0.60, 1),
        ("eurbla", 0.70, 1),
        ("comfro", 0.30, 1),
        ("comfro", 0.80, 1),  # the best frog: kept
        ("eurbla", 0.55, 1),
    ]
    events = _with_clips(store, clips, spec)
    # 8 clips on a disk of 10 clips' size: 80% used; high 75, low 45 -> 35% = 3.5 clips to go
    disk = FakeDisk(clips, total=10 * CLIP_BYTES)
    r = Retention(
        clips_dir=clips,
        high_percent=75,
        low_percent=45,
        keep_examples_per_species=1,
        disk_usage=disk,
    ).apply(store, clips, NOW)

    # oldest first, skipping the kept examples: 2nd, 4th, 5th, 6th
    gone = {events[i].event_id for i in (1, 3, 4, 5)}
    rows = _clip_rows(store)
    for e in events:
        path, note = rows[e.event_id]
        if e.event_id in gone:
            assert path is None and not (clips / e.clip_path).exists()
            assert note.startswith("clip deleted by retention at 2026-06-01T12:00")
            assert "disk 80.0% full > storage.max_disk_percent 75" in note
        else:
            assert path == e.clip_path and note is None and (clips / path).exists()
    assert r.clips_deleted_for_disk == 4 and r.clips_deleted_for_age == 0
    assert r.clip_bytes_freed == 4 * CLIP_BYTES
    assert r.disk_percent_before == pytest.approx(80) and r.disk_percent_after == pytest.approx(40)
    assert r.detections_deleted == r.events_deleted == 0  # never rows for space
    assert r.wal == "WAL checkpointed and truncated"
    assert "4 for disk space" in r.summary() and "80.0% -> 40.0%" in r.summary()


def test_below_the_high_mark_nothing_is_deleted(store, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    _with_clips(store, clips, [("eurbla", 0.5, 1), ("eurbla", 0.6, 1)])
    disk = FakeDisk(clips, total=10 * CLIP_BYTES)  # 20%
    r = Retention(clips_dir=clips, high_percent=20.5, low_percent=5, disk_usage=disk).apply(
        store, clips, NOW
    )
    assert not r.deleted_anything and r.wal == "" and len(list(clips.rglob("*.flac"))) == 2


def test_when_only_examples_remain_the_pass_says_so_and_is_not_repeated_per_clip(store, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    _with_clips(store, clips, [("eurbla", 0.5, 1), ("eurbla", 0.6, 1), ("comfro", 0.2, 1)])
    t = [0.0]
    disk = FakeDisk(clips, total=3 * CLIP_BYTES, base=CLIP_BYTES)  # over 100%: something else
    ret = Retention(
        clips_dir=clips,
        high_percent=90,
        low_percent=50,
        keep_examples_per_species=1,
        interval_s=600,
        disk_usage=disk,
        clock=lambda: t[0],
    )
    r = ret.maybe_apply(store, start=True)
    assert r is not None and r.clips_deleted_for_disk == 1  # the weaker blackbird
    assert "only the 1 kept examples per label remain" in r.summary()
    assert sum(p is not None for p, _ in _clip_rows(store).values()) == 2
    assert len(list(clips.rglob("*.flac"))) == 2
    t[0] = 10.0
    assert ret.maybe_apply(store) is None  # still full, but the last pass could do no more
    t[0] = 700.0
    assert ret.maybe_apply(store).trigger == "interval"


def test_a_disk_above_high_triggers_a_pass_between_intervals(store, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    t = [0.0]
    disk = FakeDisk(clips, total=10 * CLIP_BYTES)
    ret = Retention(
        clips_dir=clips,
        high_percent=50,
        low_percent=30,
        keep_examples_per_species=0,
        disk_usage=disk,
        clock=lambda: t[0],
    )
    assert ret.maybe_apply(store, start=True).trigger == "start"
    t[0] = 1.0
    assert ret.maybe_apply(store) is None  # not due, disk empty
    _with_clips(store, clips, [("eurbla", 0.5, 0)] * 6)  # 60% > 50%
    r = ret.maybe_apply(store)
    assert r.trigger == "disk" and r.clips_deleted_for_disk == 4 and disk.percent() == 20
    assert list(ret.history) == [r]


def test_age_rule_deletes_old_clips_and_delivered_detections_never_undelivered(store, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    old, new = NOW - timedelta(days=40), NOW - timedelta(days=2)
    # clips: two old blackbirds (the better one is the kept example), one new
    spec = [("eurbla", 0.9, 40), ("eurbla", 0.5, 40), ("eurbla", 0.4, 2)]
    events = _with_clips(store, clips, spec)
    # frog detections 10..13 old: 10, 11 delivered, 12, 13 not; 14 new and delivered;
    # and the old weaker blackbird's own detection, not delivered
    dets = [_detection(10 + k, "comfro", 0.7, old) for k in range(4)]
    dets += [_detection(14, "comfro", 0.7, new), _detection(1, "eurbla", 0.5, old)]
    store.add_detections(dets)
    store.mark_delivered([dets[0].detection_id, dets[1].detection_id, dets[4].detection_id])
    frog_events = [  # clip-less events covering the frog detections
        replace(_event(10, "comfro", 0.7, old), end_s=14.0),  # windows 10 and 11
        replace(_event(12, "comfro", 0.7, old), end_s=16.0),  # windows 12 and 13
        _event(14, "comfro", 0.7, new),
        _event(20, "comfro", 0.7, old),  # no detection left, but its own message not sent
    ]
    store.add_events(frog_events)
    store.mark_delivered([e.event_id for e in frog_events[:3]])
    r = Retention(
        clips_dir=clips,
        retention_days=30,
        uplink=True,
        high_percent=100.0,
        keep_examples_per_species=1,
    ).apply(store, clips, NOW)

    left = {d.detection_id for d in store.detections()}
    assert left == {d.detection_id for d in (dets[2], dets[3], dets[4], dets[5])}
    pending = {i for i, _ in store.pending_outbox()}
    still = (dets[2], dets[3], dets[5])  # still to be sent, with the clips' events and one frog's
    assert pending == {d.detection_id for d in still} | {
        e.event_id for e in (*events, frog_events[3])
    }
    assert r.detections_deleted == 2 and r.undelivered_kept == 3
    assert r.age_rule == "delivered detections older than 30 days"
    # old clip audio goes, except the kept example; the new clip stays
    rows = _clip_rows(store)
    assert rows[events[0].event_id] == (events[0].clip_path, None)
    path, note = rows[events[1].event_id]
    assert path is None and not (clips / events[1].clip_path).exists()
    assert note == (
        "clip deleted by retention at 2026-06-01T12:00:00.000+00:00: "
        "older than storage.retention_days 30"
    )
    assert rows[events[2].event_id] == (events[2].clip_path, None)
    assert r.clips_deleted_for_age == 1 and r.clip_bytes_freed == CLIP_BYTES
    # of the events, only the old frog one whose detections were all delivered (and so
    # deleted) goes: the others hold an undelivered detection, a clip, an undelivered
    # message of their own, or are new
    assert r.events_deleted == 1
    assert frog_events[0].event_id not in rows and len(rows) == 6
    assert store.integrity_check() == "ok"


def test_without_an_uplink_age_deletes_all_old_detections_unless_one_was_ever_delivered(
    tmp_path,
):
    old = NOW - timedelta(days=40)
    for delivered_one, expect_left in ((False, 0), (True, 2)):
        with DetectionStore(tmp_path / f"d{delivered_one}.db") as store:
            store.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0")
            dets = [_detection(k, "comfro", 0.7, old) for k in range(3)]
            store.add_detections(dets)
            if delivered_one:  # a separate `publish` process sent one: there is an uplink
                store.mark_delivered([dets[0].detection_id])
            r = Retention(clips_dir=None, retention_days=30, uplink=False).apply(store, None, NOW)
            assert len(store.detections()) == expect_left
            assert r.detections_deleted == 3 - expect_left
            assert r.age_rule.startswith("delivered" if delivered_one else "no uplink configured")
            # the outbox rows went with their detections (ON DELETE CASCADE)
            assert len(store.pending_outbox()) == expect_left


def test_deleting_the_only_copy_is_a_warning_and_delivered_rows_are_routine(tmp_path, caplog):
    """A recorder without an uplink aged out its detections with nothing on the console
    (an INFO line): the card held the only copy (found in a deployment trial)."""
    old = datetime.now(timezone.utc) - timedelta(days=40)
    for delivered_one, level in ((False, logging.WARNING), (True, logging.INFO)):
        with DetectionStore(tmp_path / f"w{delivered_one}.db") as store:
            store.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0")
            dets = [_detection(k, "comfro", 0.7, old) for k in range(3)]
            store.add_detections(dets)
            if delivered_one:
                store.mark_delivered([dets[0].detection_id])
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="animalclap_edge.retention"):
                r = Retention(clips_dir=None, retention_days=30).maybe_apply(store, start=True)
            assert r is not None and r.detections_deleted == (1 if delivered_one else 3)
            assert [rec.levelno for rec in caplog.records] == [level]
            assert ("the only copy" in caplog.text) is not delivered_one


def test_rows_logged_before_the_clock_was_set_are_not_aged_out_when_it_is(store, tmp_path):
    """A board without a real-time clock logs at 2000-01-01 until NTP sets the clock;
    the age rule then read those rows as 26 years old and deleted all of them, silently
    (found in a field walkthrough). Their age is unknown: they are kept, and said."""
    unset = datetime(2000, 1, 1, 0, 5, tzinfo=timezone.utc)
    store.add_detections([_detection(k, "comfro", 0.7, unset) for k in range(3)])
    store.add_detections(
        [_detection(k + 10, "comfro", 0.7, NOW - timedelta(days=40)) for k in range(2)]
    )
    clips = tmp_path / "clips"
    rel = "2000-01-01/old.flac"
    (clips / rel).parent.mkdir(parents=True)
    (clips / rel).write_bytes(b"x" * 4096)
    store.add_events([replace(_event(0, "comfro", 0.7, unset, rel), event_id="e-unset")])
    retention = Retention(
        clips_dir=clips,
        retention_days=30,
        uplink=False,
        keep_examples_per_species=0,
        disk_usage=lambda _: Usage(100, 10, 90),  # the age rule alone
    )
    r = retention.apply(store, clips, NOW)
    assert r.detections_deleted == 2  # the 40-day-old ones, logged with a set clock
    assert len(store.detections()) == 3 and (clips / rel).exists()
    assert any("3 detection(s) were logged while the clock was unset" in n for n in r.notes)
    # said once, not on every pass (it was a warning every retention_interval_s)
    assert not any("clock was unset" in n for n in retention.apply(store, clips, NOW).notes)
    # while the clock is itself unset, nothing is aged out at all
    store.add_detections([_detection(20, "comfro", 0.7, NOW - timedelta(days=40))])
    r = Retention(clips_dir=None, retention_days=30, uplink=False).apply(store, None, unset)
    assert r.detections_deleted == 0 and len(store.detections()) == 4


def test_orphan_clip_files_are_swept_at_start_and_nothing_else(store, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    (event,) = _with_clips(store, clips, [("eurbla", 0.5, 1)])
    day = clips / "2026-05-01"
    orphan = day / "event_0f0f0f0f-0000-5000-8000-000000000000.flac"
    tmp = day / ".event_0f0f0f0f-0000-5000-8000-000000000001.flac.tmp"
    mine = day / "notes.flac"  # not a name ClipWriter gives: never touched
    for f in (orphan, tmp, mine):
        f.write_bytes(b"x" * 4096)
    ret = Retention(clips_dir=clips, high_percent=100.0, low_percent=99.0)
    r = ret.maybe_apply(store, start=True)
    assert r.orphans_deleted == 2 and not orphan.exists() and not tmp.exists()
    assert mine.exists() and (clips / event.clip_path).exists()


def test_a_clip_file_already_gone_is_cleared_and_reported(store, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    events = _with_clips(store, clips, [("eurbla", 0.5, 40), ("eurbla", 0.9, 40)])
    (clips / events[0].clip_path).unlink()
    r = Retention(clips_dir=clips, retention_days=30, keep_examples_per_species=1).apply(
        store, clips, NOW
    )
    assert r.clips_deleted_for_age == r.clip_files_missing == 1 and r.clip_bytes_freed == 0
    # clip-less, old and without detections: the event itself went too
    assert r.events_deleted == 1 and list(_clip_rows(store)) == [events[1].event_id]


def test_deletions_give_the_wal_space_back(store, tmp_path):
    old = NOW - timedelta(days=40)
    store.add_detections([_detection(k, "comfro", 0.7, old) for k in range(300)])
    wal = Path(str(store.path) + "-wal")
    assert wal.stat().st_size > 0
    r = Retention(clips_dir=None, retention_days=30).apply(store, None, NOW)
    assert r.detections_deleted == 300 and r.wal == "WAL checkpointed and truncated"
    assert wal.stat().st_size == 0
    with sqlite3.connect(store.path) as c:
        assert c.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def test_retention_refuses_a_naive_now_and_bad_marks(store):
    with pytest.raises(ValueError, match="aware datetime"):
        Retention(clips_dir=None, retention_days=3).apply(store, None, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="low"):
        Retention(clips_dir=None, high_percent=50, low_percent=50)


def test_config_low_mark_defaults_below_high_and_must_stay_below_it():
    st = EdgeConfig().storage
    assert (st.max_disk_percent, st.retention_low, st.keep_examples_per_species) == (90, 80, 3)
    assert config_from_dict({"storage": {"max_disk_percent": 12}}).storage.retention_low == 6
    with pytest.raises(ConfigError) as ei:
        config_from_dict({"storage": {"max_disk_percent": 80, "retention_low_percent": 85}})
    assert ei.value.problems == [
        "<dict>: storage.retention_low_percent: must be < storage.max_disk_percent "
        "(got 85.0 >= 80.0)"
    ]
    r = Retention.from_config(
        config_from_dict(
            {
                "storage": {"clips_dir": "c", "retention_days": 7, "retention_low_percent": 60},
                "messaging": {"mqtt": {"enabled": True}},
            }
        )
    )
    assert (r.high, r.low, r.retention_days, r.uplink) == (90, 60, 7, True)
    assert Retention.from_config(EdgeConfig()) is None  # nothing it could delete


def test_report_is_json_serialisable(store):
    r = Retention(clips_dir=None, retention_days=1).apply(store, None, NOW)
    assert json.loads(json.dumps(r.to_dict()))["age_rule"].startswith("no uplink")


def _indexes(store: DetectionStore) -> set[str]:
    rows = store._db().execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    return {r[0] for r in rows}


def _plan(store: DetectionStore, query: str) -> str:
    rows = store._db().execute(f"EXPLAIN QUERY PLAN {query}", (_iso(NOW),))
    return " / ".join(r[-1] for r in rows)


AGE_INDEX_NAMES = {"detections_created_utc", "events_created_utc"}


def test_the_age_pass_searches_by_index_which_only_age_rules_build(store, tmp_path):
    count = "SELECT count(*) FROM detections WHERE created_utc < ?"
    # a recorder without an age rule never pays for them (a page more per transaction)
    clips = tmp_path / "clips"
    clips.mkdir()
    Retention(clips_dir=clips, high_percent=100.0).apply(store, clips, NOW)
    assert not _indexes(store) & AGE_INDEX_NAMES
    assert _plan(store, count) == "SCAN detections"

    old = NOW - timedelta(days=40)
    store.add_detections([_detection(k, "comfro", 0.7, old) for k in range(3)])
    r = Retention(clips_dir=None, retention_days=30).apply(store, None, NOW)
    assert r.detections_deleted == 3 and not r.notes
    assert _indexes(store) >= AGE_INDEX_NAMES
    assert "USING COVERING INDEX detections_created_utc" in _plan(store, count)
    # reopened by an older version, or again by this one: nothing to migrate or redo
    with DetectionStore(store.path) as again:
        assert again.ensure_age_indexes() is None


def test_when_the_indexes_cannot_be_built_the_pass_says_so_and_still_deletes(store, tmp_path):
    old = NOW - timedelta(days=40)
    store.add_detections([_detection(k, "comfro", 0.7, old) for k in range(2)])
    # another connection holds the write lock longer than the store waits for it
    other = sqlite3.connect(store.path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    conn = store._db()
    conn.execute("PRAGMA busy_timeout = 50")
    problem = store.ensure_age_indexes()
    assert problem and problem.startswith("created_utc indexes not built (database is locked)")
    other.execute("ROLLBACK")
    other.close()

    retention = Retention(clips_dir=None, retention_days=30)
    original = store.ensure_age_indexes
    store.ensure_age_indexes = lambda: "created_utc indexes not built (database or disk is full): x"
    r = retention.apply(store, None, NOW)
    assert r.detections_deleted == 2
    assert r.notes == ["created_utc indexes not built (database or disk is full): x"]
    assert "database or disk is full" in r.summary()
    store.ensure_age_indexes = original
    assert not retention.apply(store, None, NOW).notes  # tried again, and built
    assert _indexes(store) >= AGE_INDEX_NAMES


class _Clocks:
    """A wall clock and a monotonic one, moved by the test: `step` sets the wall alone."""

    def __init__(self, wall: datetime):
        self.w, self.m = wall.timestamp(), 1000.0

    def wall(self) -> float:
        return self.w

    def mono(self) -> float:
        return self.m

    def wait(self, seconds: float) -> None:
        self.w += seconds
        self.m += seconds


def test_a_clock_set_forward_during_the_run_ages_nothing_out_that_it_only_made_look_old(
    store, tmp_path
):
    """A recorder booted at its last shutdown time, logged for minutes, then NTP set the
    clock 2 days forward: the age rule (retention_days 1) deleted those minutes' clips and
    detections as 2 days old (found in a field test with libfaketime)."""
    booted = NOW - timedelta(days=2)  # the wrong clock at boot
    clocks = _Clocks(booted)
    retention = Retention(
        clips_dir=None, retention_days=1, uplink=False, clock=clocks.mono, wall=clocks.wall
    )
    store.add_detections([_detection(k, "comfro", 0.7, booted) for k in range(3)])
    clocks.wait(120)
    clocks.w += 2 * 86_400  # NTP steps the wall clock
    r = retention.maybe_apply(store, start=True)
    assert r is not None and r.detections_deleted == 0 and len(store.detections()) == 3
    assert any("the clock was set forward by 2.0 days since this run began" in n for n in r.notes)
    # aged by the clock as it ran: a day and a bit later they go, as retention_days says
    clocks.wait(86_400 + 300)
    r = retention.maybe_apply(store, start=True)
    assert r is not None and r.detections_deleted == 3
    # and a clock that only ran on (no step) ages as before
    other = _Clocks(NOW)
    plain = Retention(
        clips_dir=None, retention_days=1, uplink=False, clock=other.mono, wall=other.wall
    )
    store.add_detections([_detection(10, "comfro", 0.7, NOW)])
    other.wait(86_400 + 300)
    r = plain.maybe_apply(store, start=True)
    assert r is not None and r.detections_deleted == 1 and not r.notes
