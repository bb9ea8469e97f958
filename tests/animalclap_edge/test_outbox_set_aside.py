"""The outbox's set-aside mark (schema 6): a message the broker refused 3 times no longer
blocks the others, is kept with why, and can be queued again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from animalclap_edge.store import SCHEMA_VERSION, DetectionStore

from .factories import detection as _det
from .factories import insert_record, released_database


def test_a_version_5_database_gains_the_mark_and_keeps_its_messages(tmp_path: Path):
    db = tmp_path / "d.db"
    c = released_database(db, 5)
    d = _det(0)  # a message a schema-5 release logged and never delivered
    insert_record(c, "detections", d)
    c.execute("INSERT INTO outbox (detection_id, payload_json, created_utc) VALUES (?, '', 't')",
              (d.detection_id,))  # fmt: skip
    c.commit()
    c.close()
    assert SCHEMA_VERSION == 9
    with DetectionStore(db) as s:
        assert [i for i, _ in s.pending_outbox()] == [d.detection_id]
        assert s.backlog() == 1 and s.set_aside_count() == 0
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        cols = [r[1] for r in c.execute("PRAGMA table_info(outbox)")]
        assert cols[-2:] == ["set_aside_utc", "last_error"]


def test_refusals_count_in_a_row_and_a_set_aside_message_waits_apart(tmp_path: Path):
    a, b = _det(0), _det(72_000)
    with DetectionStore(tmp_path / "d.db") as s:
        s.start_run("run-a", "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections([a, b])
        assert [s.record_refusal(a.detection_id, "too large") for _ in range(3)] == [1, 2, 3]
        assert s.set_aside(a.detection_id, "too large; 3 refusals in a row")
        assert not s.set_aside(a.detection_id, "again")  # once
        assert [i for i, _ in s.pending_outbox()] == [b.detection_id]
        assert s.pending_payloads([a.detection_id, b.detection_id])[0][0] == b.detection_id
        assert s.backlog() == 1 and s.set_aside_count() == 1
        ((i, when, why),) = s.set_aside_messages()
        assert i == a.detection_id and when and why == "too large; 3 refusals in a row"
        assert s.retry_set_aside() == 1
        assert s.backlog() == 2 and s.set_aside_count() == 0
        assert s.record_refusal(a.detection_id, "again") == 1  # counted afresh
