"""The SQLite detection store: schema, durability settings, idempotent writes, the outbox."""

from __future__ import annotations

import json
import socket
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from animalclap_edge.records import detection_id
from animalclap_edge.store import SCHEMA_VERSION, DetectionStore, StoreError

from .factories import BUNDLE, REC, RUN, detection, recording, released_database

_det = detection


_rec = recording


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sd" / "animalclap" / "detections.db"  # parents do not exist yet


@pytest.fixture
def store(db: Path):
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0")
        yield s


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_schema_created(db: Path):
    DetectionStore(db).close()
    c = sqlite3.connect(db)
    try:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        indexes = {
            r[0]
            for r in c.execute("SELECT sql FROM sqlite_master WHERE type='index' AND sql NOT NULL")
        }
        assert tables == {
            *("runs", "recordings", "detections", "outbox", "events", "health"),
            "sqlite_sequence",  # health ids are AUTOINCREMENT: never reused after deletes
        }
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 9
        cols = [r[1] for r in c.execute("PRAGMA table_info(detections)")]
        assert cols == [
            "detection_id",
            "run_id",
            "recording_id",
            "window_start_s",
            "window_end_s",
            "start_time_utc",
            "clock_trusted",
            "bundle_id",
            "config_hash",
            "rank",
            "level",
            "taxon",
            "scientific_name",
            "common_name",
            "score",
            "probability",
            "traits_json",
            "created_utc",
            *("queued", "attempts", "delivered_utc", "set_aside_utc", "last_error"),
        ]
        on = " ".join(indexes)
        for idx in (
            "detections(recording_id)",
            "detections(taxon)",
            "outbox(delivered_utc)",
            "events(recording_id)",
            "events(delivered_utc, set_aside_utc) WHERE queued = 1",
            "detections(delivered_utc, set_aside_utc) WHERE queued = 1",
        ):
            assert idx in on
    finally:
        c.close()


def test_wal_and_durability_pragmas(db: Path):
    with DetectionStore(db) as s:
        assert s.journal_mode == "wal"
        conn = s._conn
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with sqlite3.connect(db) as c:  # WAL is a property of the file, seen by every reader
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reinsert_is_idempotent(store: DetectionStore, db: Path):
    dets = [_det(0), _det(0, "sonthr", rank=1), _det(72000)]
    assert store.add_detections(dets) == 3
    assert store.add_detections(dets) == 0  # a replay of the same windows
    # A rebuilt record (new run, new timestamp) has the same id: still nothing new.
    assert store.add_detections([replace(dets[0], created_utc="later")]) == 0
    assert store.add_detections([dets[2], _det(144000)]) == 1
    assert _count(db, "detections") == 4
    assert store.backlog() == 4  # one message each, in its row
    assert [d.detection_id for d in store.detections()] == [
        *(d.detection_id for d in dets),
        _det(144000).detection_id,
    ]


def test_duplicate_inside_one_batch(store: DetectionStore, db: Path):
    assert store.add_detections([_det(0), _det(0)]) == 1
    assert store.backlog() == 1


def test_detection_ids_are_stable():
    a = detection_id(BUNDLE, REC, 48000, "species", "eurbla")
    assert a == detection_id(BUNDLE, REC, 48000, "species", "eurbla")
    variants = [
        ("other-bundle", REC, 48000, "species", "eurbla"),
        (BUNDLE, "/data/in/other.flac", 48000, "species", "eurbla"),
        (BUNDLE, REC, 48001, "species", "eurbla"),
        (BUNDLE, REC, 48000, "genus", "eurbla"),
        (BUNDLE, REC, 48000, "species", "sonthr"),
    ]
    assert len({a, *(detection_id(*v) for v in variants)}) == 6
    # Pinned: ids already on recorders and upstream must never change meaning.
    assert detection_id("b", "r.wav", 0, "species", "x") == "036a7ca6-4bee-551b-a7a6-8d08e8123331"
    with pytest.raises(TypeError):
        detection_id(BUNDLE, REC, 1.5, "species", "eurbla")  # type: ignore[arg-type]


def test_a_failed_batch_logs_and_queues_nothing(store: DetectionStore, db: Path):
    # The second row references a run that does not exist: it fails after the first
    # detection was written, and the whole batch must go.
    with pytest.raises(sqlite3.IntegrityError):
        store.add_detections([_det(0), _det(72000, run_id="no-such-run"), _det(144000)])
    assert _count(db, "detections") == 0 and store.backlog() == 0
    # A CHECK violation fails loudly too (INSERT OR IGNORE would have dropped it).
    with pytest.raises(sqlite3.IntegrityError):
        store.add_detections([_det(0), _det(72000, level="subspecies")])
    assert _count(db, "detections") == 0 and store.backlog() == 0
    # The store is still usable after a failed batch, and keeps no outbox rows: a
    # detection's message is its own row since schema 9.
    assert store.add_detections([_det(0)]) == 1
    assert _count(db, "detections") == store.backlog() == 1 and _count(db, "outbox") == 0


def test_outbox_payload_and_delivery(store: DetectionStore):
    dets = [_det(0), _det(72000), _det(144000)]
    store.add_detections(dets)
    pending = store.pending_outbox(10)
    assert [i for i, _ in pending] == [d.detection_id for d in dets]
    payload = json.loads(pending[0][1])
    # the wire format consumers parse (MQTT, the live view): pinned key by key
    assert sorted(payload) == [
        "bundle_id",
        "clock_trusted",
        "common_name",
        "config_hash",
        "created_utc",
        "detection_id",
        "device",
        "level",
        "probability",
        "rank",
        "recording_id",
        "run_id",
        "scientific_name",
        "score",
        "site",
        "start_time_utc",
        "taxon",
        "traits",
        "window_end_s",
        "window_start_s",
    ]
    assert (payload["detection_id"], payload["probability"], payload["clock_trusted"]) == (
        dets[0].detection_id,
        0.87,
        False,
    )
    assert (payload["window_start_s"], payload["window_end_s"], payload["taxon"]) == (
        0.0,
        3.0,
        "eurbla",
    )
    assert payload["traits"] == {"activity": {"value": "diurnal", "p": 0.9}}
    assert len(store.pending_outbox(2)) == 2
    assert store.mark_delivered([dets[0].detection_id, dets[1].detection_id]) == 2
    assert store.mark_delivered([dets[0].detection_id]) == 0  # already delivered
    assert [i for i, _ in store.pending_outbox(10)] == [dets[2].detection_id]


def test_recordings_accounting(store: DetectionStore):
    store.record_recording(_rec())
    store.record_recording(_rec("skipped", "/data/in/empty.wav", n_windows=0, n_detections=0))
    store.record_recording(_rec("partial", "/data/in/cut.flac", reason="decode failed at 41 s"))
    got = store.recordings(RUN)
    assert [(r.source_path, r.status) for r in got] == [
        (REC, "ok"),
        ("/data/in/empty.wav", "skipped"),
        ("/data/in/cut.flac", "partial"),
    ]
    assert got[0] == _rec() and got[0].clock_trusted is True
    # A replay of a recording replaces its row instead of adding one.
    store.record_recording(_rec(n_detections=5))
    assert len(store.recordings()) == 3
    assert next(r for r in store.recordings() if r.recording_id == REC).n_detections == 5
    assert store.recordings("other-run") == []
    with pytest.raises(sqlite3.IntegrityError):
        store.record_recording(_rec("weird", "/data/in/x.wav"))


def test_runs_start_and_finish(store: DetectionStore, db: Path):
    store.finish_run(RUN)
    with sqlite3.connect(db) as c:
        row = c.execute("SELECT bundle_id, host, finished_utc FROM runs").fetchone()
    assert row[0] == BUNDLE and row[1] and row[2]
    with pytest.raises(StoreError):
        store.finish_run("never-started")


def test_reopen_and_read_back(db: Path):
    dets = [
        _det(0),
        _det(72000, "turdus", level="genus", start_time_utc="2024-05-01T04:00:01.5+00:00"),
    ]
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0")
        s.add_detections(dets)
        s.record_recording(_rec())
        s.finish_run(RUN)
    with DetectionStore(db) as s:
        assert s.detections() == dets
        assert s.detections(REC) == dets
        assert s.detections("/elsewhere.wav") == []
        assert s.recordings() == [_rec()]
        assert len(s.pending_outbox(10)) == 2
        assert s.add_detections(dets) == 0  # idempotent across restarts too


def test_numpy_like_scalars_are_stored_as_plain_numbers(store: DetectionStore):
    np = pytest.importorskip("numpy")
    d = _det(0, score=np.float32(0.25), probability=np.float64(0.5), rank=np.int64(0))
    assert type(d.score) is float and type(d.rank) is int
    assert store.add_detections([d]) == 1
    assert store.detections()[0] == d


def test_refuses_newer_schema(db: Path):
    DetectionStore(db).close()
    with sqlite3.connect(db) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        DetectionStore(db)
    with sqlite3.connect(db) as c:  # and leaves it as it was
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_refuses_a_foreign_database(tmp_path: Path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not an AnimalCLAP detection database"):
        DetectionStore(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        DetectionStore(junk)


def test_integrity_check_ok(store: DetectionStore):
    store.add_detections([_det(0)])
    store.record_recording(_rec())
    assert store.integrity_check() == "ok"


def test_closed_store_refuses_use(db: Path):
    s = DetectionStore(db)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.detections()


def test_a_version_1_database_is_upgraded_in_place_and_keeps_its_rows(db: Path):
    """A recorder's SD card from before events: same file, rows kept, events added."""
    from animalclap_edge import store as S

    db.parent.mkdir(parents=True)
    c = sqlite3.connect(db)
    for stmt in S._SCHEMA:  # the version-1 schema, as written by the previous release
        c.execute(stmt)
    c.execute("PRAGMA user_version = 1")
    c.commit()
    c.close()
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0")
        s.add_detections([_det(0)])
    with DetectionStore(db) as s:  # reopening is a no-op
        assert len(s.detections()) == 1 and s.events() == []
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _released_database(db: Path, version: int, recording: str) -> None:
    """A database at schema `version`, as released, holding run 'r' and one recording
    (the VALUES of its row, in that version's columns)."""
    db.parent.mkdir(parents=True)
    c = released_database(db, version)
    c.execute("INSERT INTO runs VALUES ('r', 't', NULL, 'b', 'c', 'src', 'h', '0.1')")
    c.execute(f"INSERT INTO recordings VALUES ({recording})")
    c.commit()
    c.close()


def test_a_version_3_database_gains_audio_notes_and_keeps_its_recordings(db: Path):
    """Rows written before the audio note read back with an empty one."""
    _released_database(db, 3, "'a.wav', 'r', 'a.wav', 'ok', NULL, 4.0, 2, 0, NULL, 0, '', 't'")
    with DetectionStore(db) as s:
        (old,) = s.recordings()
        assert old.source_path == "a.wav" and old.audio_note == ""
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0")
        s.record_recording(
            replace(old, recording_id="b.wav", run_id=RUN, audio_note="heard to 24 kHz")
        )
        assert [r.audio_note for r in s.recordings()] == ["", "heard to 24 kHz"]


def test_a_version_4_database_gains_digests_and_its_rows_stay_their_files(db: Path):
    """A file's id is path#digest, whatever the database saw before; a row from before
    digests cannot be told from another file at its path, so it is taken for the first
    file met there, once, and knows its content from then on."""
    row = "'/card/a.wav', 'r', '/card/a.wav', 'ok', NULL, 4.0, 2, 0, NULL, 0, '', 't', ''"
    _released_database(db, 4, row)
    with DetectionStore(db) as s:
        (old,) = s.recordings()
        assert old.content_digest == ""
        assert s.recording_id_for("/card/b.wav", "e" * 64) == ("/card/b.wav#eeeeeeeeeeee", False)
        assert s.recording_id_for("/card/a.wav", "f" * 64) == ("/card/a.wav", True)  # adopted
        assert s.recordings()[0].content_digest == "f" * 64
        assert s.recording_id_for("/card/a.wav", "f" * 64) == ("/card/a.wav", False)
        assert s.recording_id_for("/card/a.wav", "d" * 64) == ("/card/a.wav#dddddddddddd", False)
        assert s.recording_id_for("live", "") == ("live", False)
        assert s.analysed("/card/a.wav") and not s.analysed("/card/b.wav")


def test_health_events_are_logged_in_order_and_read_after_an_id(db: Path):
    with DetectionStore(db) as s:
        a = s.add_health("source_lost", "mic:usb", {"error": "device disconnected", "n": 1})
        b = s.add_health("snapshot", "runtime", {"disk_percent": 41.5})
        assert b > a
        rows = s.health()
        assert [r["kind"] for r in rows] == ["source_lost", "snapshot"]
        assert rows[0]["detail"] == {"error": "device disconnected", "n": 1}
        assert [r["id"] for r in s.health(after_id=a)] == [b]
        c = s.add_health("source_reopened", "mic:usb", {})
        assert [r["id"] for r in s.health(limit=2, newest=True)] == [b, c]
        assert [r["id"] for r in s.health(limit=2)] == [a, b]


def test_an_online_backup_is_a_complete_consistent_copy(db: Path, tmp_path: Path):
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0")
        s.add_detections([_det(i) for i in range(50)])
        out = s.backup(tmp_path / "backup.db")
        s.add_detections([_det(50)])  # after the backup: not in it
    assert not list(tmp_path.glob(".backup.db.tmp"))
    with DetectionStore(out) as b:
        assert b.integrity_check() == "ok" and len(b.detections()) == 50
        assert len(b.pending_outbox(1000)) == 50


def test_messages_are_built_from_the_detection_not_stored(store: DetectionStore, db: Path):
    from animalclap_edge.store import message_payload

    store.add_detections([_det(0), _det(1)])
    assert store.pending_outbox() == [
        (d.detection_id, message_payload(d, socket.gethostname(), "")) for d in (_det(0), _det(1))
    ]
    assert store.backlog() == 2
    store.mark_delivered([_det(0).detection_id])
    assert store.backlog() == 1
    assert _count(db, "outbox") == 0


def test_a_message_names_the_recorder_and_site_of_its_run(db: Path):
    """A message stored without its topic (most MQTT-to-database bridges keep the payload
    alone) did not say which recorder heard it."""
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0", "rec-09", "ridge-3")
        s.add_detections([_det(0)])
        ((_, payload),) = s.pending_outbox()
        assert s.pending_payloads([_det(0).detection_id]) == [(_det(0).detection_id, payload)]
    assert (json.loads(payload)["device"], json.loads(payload)["site"]) == ("rec-09", "ridge-3")


def test_the_wal_is_fitted_to_the_card_and_a_card_it_cannot_measure_still_takes_writes(
    store: DetectionStore, monkeypatch
):
    """The autocheckpoint follows the card's free space (docs/storage.md); where the
    free space cannot be read (a card going away), the write is SQLite's to refuse, not
    an OSError from measuring it."""
    import animalclap_edge.store as module

    assert store.wal_pages_for(10 << 30) == 1000  # a roomy card: SQLite's default
    assert store.wal_pages_for(1 << 20) == 32  # 1 MiB free: an eighth of it, in pages
    assert store.wal_pages_for(0) == 16

    def unmeasurable(path):
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(module.shutil, "disk_usage", unmeasurable)
    before = len(store.detections())
    store.add_detections([detection(48_000 * 999)])
    assert len(store.detections()) == before + 1
