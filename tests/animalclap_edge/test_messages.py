"""Messages kept in the rows they carry (schema 9): a detection or event is queued by
being logged, then sent, refused, set aside and counted; retention keeps it until sent;
a recovery keeps its state. A card from before keeps its outbox of detections, sent
as it was, and its events unsent."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from animalclap_edge.records import is_event_id
from animalclap_edge.store import SCHEMA_VERSION, DetectionStore, message_payload

from .factories import BUNDLE, RUN, detection, event, insert_record, released_database


@pytest.fixture
def store(tmp_path: Path):
    with DetectionStore(tmp_path / "d.db") as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0", "rec-09", "ridge-3")
        yield s


def test_an_event_is_queued_with_its_row_and_its_message_names_the_recorder(store):
    e = event(0)
    assert is_event_id(e.event_id) and not is_event_id(detection(0).detection_id)
    assert store.add_events([e]) == 1
    assert store.add_events([e]) == 0  # a replay: neither a second row nor a second message
    ((i, payload),) = store.pending_outbox()
    assert i == e.event_id and payload == message_payload(e, "rec-09", "ridge-3")
    # the wire format consumers parse on <prefix>/<device>/events: pinned key by key
    assert sorted(json.loads(payload)) == [
        "bundle_id",
        "clip_note",
        "clip_path",
        "clock_trusted",
        "common_name",
        "config_hash",
        "created_utc",
        "device",
        "end_s",
        "event_id",
        "level",
        "max_probability",
        "mean_probability",
        "n_windows",
        "recording_id",
        "run_id",
        "scientific_name",
        "site",
        "start_s",
        "start_time_utc",
        "taxon",
    ]
    assert json.loads(payload)["n_windows"] == 2 and json.loads(payload)["end_s"] == 4.5
    assert store.pending_payloads([e.event_id]) == [(e.event_id, payload)]


def test_events_go_first_then_detections_each_oldest_first(store):
    dets = [detection(s) for s in (0, 72_000, 144_000)]
    store.add_detections(dets)
    events = [event(0), event(0, taxon="comfro")]
    store.add_events(events)
    ids = [i for i, _ in store.pending_outbox()]
    assert ids == [e.event_id for e in events] + [d.detection_id for d in dets]
    assert [i for i, _ in store.pending_outbox(3)] == ids[:3]
    assert store.backlog() == 5


def test_delivery_refusal_and_set_aside_take_event_ids(store):
    e, other, d = event(0), event(0, taxon="comfro"), detection(0)
    store.add_detections([d])
    store.add_events([e, other])
    assert store.mark_delivered([e.event_id, d.detection_id]) == 2
    assert store.mark_delivered([e.event_id]) == 0  # already delivered
    assert store.record_refusal(other.event_id, "too large") == 1
    assert store.record_refusal(other.event_id, "too large") == 2
    assert store.set_aside(other.event_id, "too large; 2 refusals in a row")
    assert store.backlog() == 0 and store.set_aside_count() == 1
    ((i, _, why),) = store.set_aside_messages()
    assert (i, why) == (other.event_id, "too large; 2 refusals in a row")
    assert store.retry_set_aside() == 1 and store.backlog() == 1


def test_a_version_8_card_sends_its_outbox_as_it_was_then_the_new_rows(tmp_path: Path):
    db = tmp_path / "d.db"
    c = released_database(db, 8)
    c.execute(f"INSERT INTO runs (run_id, started_utc, bundle_id, config_hash, source, host, "
              f"software_version) VALUES ('{RUN}', 't', '{BUNDLE}', 'c', 'src', 'h', '0.1')")  # fmt: skip
    old, stored = detection(0), detection(72_000)
    for d, payload in ((old, ""), (stored, '{"stored": "by a release before 2026-11-26"}')):
        insert_record(c, "detections", d)
        c.execute("INSERT INTO outbox (detection_id, payload_json, created_utc) VALUES (?, ?, 't')",
                  (d.detection_id, payload))  # fmt: skip
    c.commit()
    c.close()
    new = detection(144_000)
    with DetectionStore(db) as s:
        s.add_detections([new])
        pending = s.pending_outbox()
        assert [i for i, _ in pending] == [old.detection_id, stored.detection_id, new.detection_id]
        assert pending[1][1] == '{"stored": "by a release before 2026-11-26"}'
        assert s.pending_payloads([new.detection_id, stored.detection_id]) == [
            pending[2],
            pending[1],
        ]
        assert s.mark_delivered([old.detection_id, new.detection_id]) == 2
        assert s.set_aside(stored.detection_id, "too large") and s.backlog() == 0
        assert s.set_aside_messages() == [
            (stored.detection_id, s.set_aside_messages()[0][1], "too large")
        ]
        assert s.requeue_missing_outbox() == 0  # the new one's message is its row
        # with an uplink, the delivered ones age out, the one set aside stays
        assert s.delete_expired("2099-01-01", undelivered_too=False) == (2, 0, 1)
        assert [d.detection_id for d in s.detections()] == [stored.detection_id]
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1


def test_a_version_8_database_keeps_its_events_and_sends_only_new_ones(tmp_path: Path):
    """A recorder upgraded mid-season: a month of events already on its card (0.8 M at
    the demo's rate) must not go up a metered link at once, ahead of the live ones; the
    server has their detections. They are not queued, and age out as before."""
    db = tmp_path / "d.db"
    c = released_database(db, 8)
    c.execute(f"INSERT INTO runs (run_id, started_utc, bundle_id, config_hash, source, host, "
              f"software_version) VALUES ('{RUN}', 't', '{BUNDLE}', 'c', 'src', 'h', '0.1')")  # fmt: skip
    old = event(0)
    insert_record(c, "events", old)
    c.commit()
    c.close()
    new = event(72_000, taxon="comfro")
    with DetectionStore(db) as s:
        assert s.pending_outbox() == [] and s.backlog() == 0 and s.set_aside_count() == 0
        s.add_events([new])
        assert [i for i, _ in s.pending_outbox()] == [new.event_id]
        assert s.events() == [old, new]
        # with an uplink, an old event waits for its message; one never queued does not
        assert s.delete_expired("2099-01-01", undelivered_too=False)[1] == 1
        assert s.events() == [new]
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 9
        cols = [r[1] for r in c.execute("PRAGMA table_info(events)")]
        assert cols[-5:] == ["queued", "attempts", "delivered_utc", "set_aside_utc", "last_error"]


def test_no_message_query_reads_every_detection_or_event(store):
    """Months of delivered rows must not be read at every poll, heartbeat or snapshot:
    every statement the store's message methods really run (captured as executed) is
    planned on the queued rows' partial indexes, with no scan and no sort."""
    store.add_detections([detection(0)])
    store.add_events([event(0)])
    sent: list[str] = []
    store._db().set_trace_callback(sent.append)
    try:
        store.pending_outbox()
        store.backlog()
        store.set_aside_count()
        store.set_aside_messages()
        store.any_delivered()
        store.retry_set_aside()
    finally:
        store._db().set_trace_callback(None)
    queries = [q for q in sent if "detections" in q or "events" in q]
    assert len(queries) >= 12, queries
    for sql in queries:
        plan = " / ".join(str(r[-1]) for r in store._db().execute("EXPLAIN QUERY PLAN " + sql))
        assert "SCAN d" not in plan and "SCAN e" not in plan, (sql, plan)
        assert "TEMP B-TREE FOR ORDER BY" not in plan or "UNION" in sql, (sql, plan)
        if "outbox" not in sql:
            assert "_to_send" in plan, (sql, plan)


def test_a_recovered_database_keeps_what_was_delivered(tmp_path: Path):
    from animalclap_edge.recovery import recover

    db = tmp_path / "d.db"
    sent, unsent = event(0), event(0, taxon="comfro")
    with DetectionStore(db) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0")
        s.add_events([sent, unsent])
        s.mark_delivered([sent.event_id])
    recover(db, None, "quick_check said so")
    with DetectionStore(db) as s:
        assert [i for i, _ in s.pending_outbox()] == [unsent.event_id]
        assert s.events() == [sent, unsent]


def test_deleting_an_event_deletes_its_message(store):
    store.add_events([event(0)])
    store.delete_expired("2099-01-01", undelivered_too=True)
    assert store.events() == [] and store.backlog() == 0
