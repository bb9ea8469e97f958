"""A full card: clip audio gives way to the database, oldest first, kept examples too."""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import uuid
from collections import namedtuple
from pathlib import Path

import pytest

from animalclap_edge.config import EdgeConfig
from animalclap_edge.room import ROOM_TARGET, is_want_of_room, make_room
from animalclap_edge.store import DetectionStore, StoreError

from .factories import BUNDLE, RUN, detection, event

Usage = namedtuple("Usage", "total used free")


def _clips(folder: Path, n: int, size: int) -> list[Path]:
    """n clip files as ClipWriter names them, c0 oldest."""
    out = []
    for i in range(n):
        p = folder / "2026-05-01" / f"event_{uuid.UUID(int=i)}.flac"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\x01" * size)
        os.utime(p, (1_000 + i, 1_000 + i))
        out.append(p)
    return out


def test_make_room_deletes_our_oldest_clips_until_the_target_and_nothing_else(tmp_path):
    clips = _clips(tmp_path / "clips", 5, 3 << 20)  # 3 MiB each
    mine = tmp_path / "clips" / "my_reference_call.wav"  # a user's file: never ours to delete
    mine.write_bytes(b"\x02" * 4096)
    os.utime(mine, (1, 1))  # the oldest of all

    def disk(_):  # 1 MiB free; 16 MiB with no clip: three must go for 8 MiB
        used = 2**30 - (16 << 20) + sum(p.stat().st_blocks * 512 for p in clips if p.exists())
        return Usage(2**30, used, 2**30 - used)

    room = make_room(tmp_path / "clips", disk)
    assert [p.exists() for p in clips] == [False, False, False, True, True]
    assert mine.exists() and room.files == 3 and disk(None).free >= ROOM_TARGET
    assert "clip file(s) deleted" in room.summary()
    assert make_room(tmp_path / "none", disk) is None  # nothing of ours to delete


def test_make_room_deletes_nothing_where_it_cannot_help(tmp_path):
    clips = _clips(tmp_path / "clips", 2, 4096)
    full = lambda _: Usage(2**30, 2**30 - 100, 100)  # noqa: E731 - a full card
    assert make_room(tmp_path / "clips", full) is None
    assert all(p.exists() for p in clips)


def test_only_want_of_room_is_taken_for_a_full_card(tmp_path):
    with sqlite3.connect(tmp_path / "x.db") as c:
        c.execute("CREATE TABLE t (x INTEGER CHECK (x > 0))")
        with pytest.raises(sqlite3.IntegrityError) as e:
            c.execute("INSERT INTO t VALUES (0)")
        assert not is_want_of_room(e.value)
        assert not is_want_of_room(_as_on_python_3_10(e.value))
        c.execute("PRAGMA max_page_count = 2")  # SQLite's own "database or disk is full"
        with pytest.raises(sqlite3.OperationalError) as e:
            c.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1, 5000)])
        assert is_want_of_room(e.value)
        # the recorder's Python 3.10 has no sqlite_errorcode: a full card made no room
        assert is_want_of_room(_as_on_python_3_10(e.value))
    assert not is_want_of_room(ValueError("x"))
    assert not is_want_of_room(ValueError("database or disk is full"))  # not SQLite's


def _as_on_python_3_10(e: sqlite3.Error) -> sqlite3.Error:
    """The same error as Python 3.10 raises it: its class and message, no code."""
    bare = type(e)(*e.args)
    assert getattr(bare, "sqlite_errorcode", None) is None
    return bare


def test_a_full_card_gives_clips_up_and_the_database_opens_again(small_card, fill_card):
    """Kept example clips filled the card; the database then could not open, and the
    recorder's every restart failed (found in a field walkthrough)."""
    from animalclap_edge.runtime import Runtime

    db = small_card / "d.db"
    clips = _clips(small_card / "clips", 3, 400_000)
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "t", "0")
        s.add_detections([detection(i) for i in range(50)])
        # each clip an event's: kept examples, which retention never takes, so their
        # rows pointed at deleted audio for good (found in a deployment trial)
        rel = [c.relative_to(small_card / "clips").as_posix() for c in clips]
        s.add_events([event(i * 72_000, clip_path=r) for i, r in enumerate(rel)])
    fill_card(small_card)  # the rest of the card
    with pytest.raises(StoreError):  # as every restart met it
        DetectionStore(db).close()
    cfg = EdgeConfig.model_validate(
        {"storage": {"clips_dir": str(small_card / "clips"), "save_clips": True}}
    )
    rt = Runtime(cfg, db, sys.stderr, hop_s=1.0, sample_rate=48_000)
    try:
        rt.store.add_detections([detection(i) for i in range(50, 80)])
        assert len(rt.store.detections()) == 80  # nothing lost, and logging goes on
        (health,) = [h for h in rt.store.health() if h["kind"] == "disk_full"]
        assert health["detail"]["files"] >= 1
        rows = (
            rt.store._db()
            .execute("SELECT clip_path, clip_note FROM events ORDER BY start_s")
            .fetchall()
        )  # the runtime's own connection: one left open would hold the card
        for clip, (path, note) in zip(clips, rows, strict=True):
            if clip.exists():  # kept: its row as it was
                assert path is not None and note is None
            else:  # the database never points at audio that is gone
                assert path is None and "to make room on a full card" in note
        assert sum(path is None for path, _ in rows) == health["detail"]["files"]
    finally:
        rt.close()


def test_a_card_full_of_other_files_is_said_and_the_database_is_not_moved_aside(
    small_card, fill_card
):
    """A full card also fails the database's check: it must not be taken for damage
    (moved aside and rebuilt empty) when only room is missing."""
    from animalclap_edge.recovery import open_store

    db = small_card / "d.db"
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "t", "0")
        s.add_detections([detection(i) for i in range(50)])
    fill_card(small_card)
    with pytest.raises(StoreError, match="free space on it"):
        open_store(db, None)
    assert sorted(p.name for p in small_card.iterdir() if p.name.startswith("d.db")) in (
        ["d.db"], ["d.db", "d.db-shm", "d.db-wal"]
    )  # fmt: skip
    (small_card / "recorder-os-files").unlink()
    store, recovery = open_store(db, None)
    with store:
        assert recovery is None and len(store.detections()) == 50


def test_a_write_that_fails_for_room_mid_run_makes_room_and_is_tried_again(small_card, fill_card):
    """The detector's own write path, on a real full card: the batch rolls back, our
    clips go, the same batch is written once, and a health event says so."""
    from types import SimpleNamespace

    from animalclap_edge.detector import Detector

    db = small_card / "d.db"
    store = DetectionStore(db)
    try:
        store.start_run(RUN, BUNDLE, "0123456789abcdef", "t", "0")
        _clips(small_card / "clips", 3, 400_000)
        fill_card(small_card)
        dets = [detection(i) for i in range(2000)]  # more pages than the card has left
        detector = SimpleNamespace(clips=SimpleNamespace(folder=small_card / "clips"))
        assert Detector._with_room(detector, store, store.add_detections, dets) == 2000
        assert len(store.detections()) == 2000
        (event,) = [h for h in store.health() if h["kind"] == "disk_full"]
        assert event["detail"]["files"] >= 1
        with pytest.raises(sqlite3.IntegrityError):  # a constraint is no want of room
            bad = [detection(5000, level="bogus")]
            Detector._with_room(detector, store, store.add_detections, bad)
        assert len([h for h in store.health() if h["kind"] == "disk_full"]) == 1
    finally:
        store.close()


def test_the_wal_is_folded_back_before_it_outgrows_a_small_card(small_card):
    """SQLite's default autocheckpoint (1,000 pages, 4 MB) let the WAL take a 3 MB card
    whole before its first checkpoint (2.77 MB of WAL for 73 detections, found in a
    field walkthrough); a checkpoint needs room for the database to grow, so the WAL
    could then never be folded back and every restart failed to open the database."""
    db = small_card / "d.db"
    wal = small_card / "d.db-wal"
    largest = 0
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "t", "0")
        for i in range(300):  # one transaction a detection, as a slow day's run writes
            s.add_detections([detection(48_000 * i)])
            free = shutil.disk_usage(small_card).free
            size = wal.stat().st_size if wal.exists() else 0
            largest = max(largest, size)
            # the WAL past its checkpoint is at most one transaction (a few pages) more
            assert size <= (s.wal_pages_for(free) + 32) * 4096 + free // 2, (i, size, free)
        assert len(s.detections()) == 300
    assert 0 < largest < 1 << 20  # it was 2.77 MB


def test_a_card_full_of_other_files_is_said_when_the_recorder_starts(small_card, fill_card):
    """A restart on a card full of what is not ours said only SQLite's "database or disk
    is full"; it must say the card is full and that the database is kept."""
    from animalclap_edge.runtime import Runtime

    db = small_card / "d.db"
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "t", "0")
        s.add_detections([detection(i) for i in range(50)])
    fill_card(small_card)
    cfg = EdgeConfig.model_validate({"storage": {"clips_dir": str(small_card / "clips")}})
    with pytest.raises(StoreError, match=r"the card is full \(0.0 MB free.*free space on it"):
        Runtime(cfg, db, sys.stderr, hop_s=1.0, sample_rate=48_000)
    (small_card / "recorder-os-files").unlink()
    with DetectionStore(db) as s:
        assert len(s.detections()) == 50


def test_a_backup_that_finds_no_room_leaves_no_half_copy(small_card, fill_card):
    """A backup cut short by a full card left its half-written temporary file, holding
    the very room the database then lacked."""
    db = small_card / "d.db"
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "t", "0")
        s.add_detections([detection(i) for i in range(400)])
        fill_card(small_card)
        filler = small_card / "recorder-os-files"
        os.truncate(filler, filler.stat().st_size - (64 << 10))  # 64 KiB free: under the db
        with pytest.raises((OSError, sqlite3.Error)):
            s.backup(small_card / "d.db.backup")
    assert sorted(p.name for p in small_card.iterdir() if "backup" in p.name) == []
