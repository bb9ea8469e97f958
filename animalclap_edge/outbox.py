"""The outbox role of the detection store: each detection's and event's message state
(queued, delivered, refused, set aside), kept in its own row, read and marked by the
uplinks (`uplink.py`). `store.DetectionStore` is an `OutboxRows`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

from animalclap_edge.payloads import (
    EVENT_PAYLOAD_COLUMNS,
    EVENT_PAYLOAD_JOIN,
    PAYLOAD_COLUMNS,
    PAYLOAD_JOIN,
    payload_of,
)
from animalclap_edge.records import is_event_id, now_utc_ms

# (table, key column) of each place a message's state is kept: a detection's or an
# event's own row (queued = 1), or the outbox of detections logged before schema 9
_MESSAGE_TABLES = (
    ("detections", "detection_id"),
    ("events", "event_id"),
    ("outbox", "detection_id"),
)
# the rows' columns that are their message's state, not the detection or event
DELIVERY_COLUMNS = ("queued", "attempts", "delivered_utc", "set_aside_utc", "last_error")


def _queued(table: str, alias: str = "") -> str:
    """SQL: the row holds a message (rows logged before schema 9 were never queued in
    their own row); every outbox row is one."""
    return "" if table == "outbox" else f"{alias}queued = 1 AND "


def _pending(table: str, alias: str = "") -> str:
    """SQL: a message kept in `table` still to send (neither delivered nor set aside)."""
    return f"{_queued(table, alias)}{alias}delivered_utc IS NULL AND {alias}set_aside_utc IS NULL"


def _aside(table: str) -> str:
    """SQL: a message kept in `table` set aside (undelivered, refused by the broker)."""
    return f"{_queued(table)}delivered_utc IS NULL AND set_aside_utc IS NOT NULL"


def _kept_in(conn: sqlite3.Connection, message_id: str) -> tuple[str, str]:
    """(table, key column) holding a message's state: an event's row, a detection's
    own row, or (a detection logged before schema 9) the outbox."""
    if is_event_id(message_id):
        return "events", "event_id"
    row = conn.execute(
        "SELECT queued FROM detections WHERE detection_id = ?", (message_id,)
    ).fetchone()
    return ("detections", "detection_id") if row and row[0] else ("outbox", "detection_id")


class OutboxRows:
    """The outbox's reads and writes, on the store's connection (`_db`) and in its
    write transactions (`_transaction`)."""

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def mark_delivered(self, ids: Iterable[str]) -> int:
        """Mark messages (detections' or events') as delivered; returns how many were
        pending."""
        now = now_utc_ms()
        n = 0
        with self._transaction() as tx:
            for i in ids:
                table, key = _kept_in(tx, i)
                n += tx.execute(
                    f"UPDATE {table} SET delivered_utc = ? WHERE {_queued(table)}{key} = ? "
                    "AND delivered_utc IS NULL",
                    (now, i),
                ).rowcount
        return n

    def record_refusal(self, message_id: str, why: str) -> int:
        """Count one refusal of a message by the broker; returns its refusals in a row."""
        with self._transaction() as tx:
            table, key = _kept_in(tx, message_id)
            tx.execute(
                f"UPDATE {table} SET attempts = attempts + 1, last_error = ? "
                f"WHERE {_queued(table)}{key} = ? AND delivered_utc IS NULL",
                (why, message_id),
            )
            row = tx.execute(
                f"SELECT attempts FROM {table} WHERE {key} = ?", (message_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def set_aside(self, message_id: str, why: str) -> bool:
        """Stop sending one undelivered message, keeping it and why; False if it was
        delivered or set aside already."""
        with self._transaction() as tx:
            table, key = _kept_in(tx, message_id)
            return (
                tx.execute(
                    f"UPDATE {table} SET set_aside_utc = ?, last_error = ? WHERE {key} = ? "
                    f"AND {_pending(table)}",
                    (now_utc_ms(), why, message_id),
                ).rowcount
                == 1
            )

    def retry_set_aside(self) -> int:
        """Queue every set-aside message again, with its refusals reset; returns how many."""
        with self._transaction() as tx:
            return sum(
                tx.execute(
                    f"UPDATE {table} SET set_aside_utc = NULL, attempts = 0 WHERE {_aside(table)}"
                ).rowcount
                for table, _ in _MESSAGE_TABLES
            )

    def requeue_missing_outbox(self) -> int:
        """Give every detection logged before schema 9 without an outbox row a new
        undelivered one; returns how many. Only recovery needs this: a detection's
        message is its own row since schema 9, and before it both were written in one
        transaction. Re-sending one the server already has is harmless, consumers
        de-duplicate by id."""
        with self._transaction() as tx:
            return tx.execute(
                "INSERT INTO outbox (detection_id, payload_json, created_utc) "
                "SELECT d.detection_id, '', ? FROM detections d LEFT JOIN outbox o "
                "ON o.detection_id = d.detection_id WHERE d.queued = 0 AND o.detection_id IS NULL "
                "ORDER BY d.rowid",
                (now_utc_ms(),),
            ).rowcount

    def pending_outbox(self, limit: int = 100) -> list[tuple[str, str]]:
        """Up to `limit` (message_id, payload_json) still to send: events first, then
        detections, each oldest first (the outbox's, logged before schema 9, before the
        rest). Events are the fewer and the summary: after an outage a dashboard has
        them before the windows they merge."""
        out = self._pending_rows(
            True, f"{_pending('events', 'e.')} ORDER BY e.rowid LIMIT ?", (limit,)
        )
        rows = self._db().execute(
            f"SELECT o.detection_id, o.payload_json, {PAYLOAD_COLUMNS} FROM outbox o JOIN "
            f"detections d ON d.detection_id = o.detection_id {PAYLOAD_JOIN} WHERE "
            f"{_pending('outbox', 'o.')} ORDER BY o.rowid LIMIT ?",
            (limit - len(out),),
        )
        out += [(i, stored or payload_of(row)) for i, stored, *row in rows.fetchall()]
        where = f"{_pending('detections', 'd.')} ORDER BY d.rowid LIMIT ?"
        return out + self._pending_rows(False, where, (limit - len(out),))

    def pending_payloads(self, ids: Iterable[str]) -> list[tuple[str, str]]:
        """(message_id, payload_json) of those of `ids` still to send (neither delivered
        nor set aside), in the order given."""
        db = self._db()
        out = []
        for i in ids:
            table, key = _kept_in(db, i)
            if table != "outbox":
                alias = "e." if table == "events" else "d."
                where = f"{alias}{key} = ? AND {_pending(table, alias)}"
                out += self._pending_rows(table == "events", where, (i,))
                continue
            row = db.execute(
                f"SELECT o.payload_json, {PAYLOAD_COLUMNS} FROM outbox o JOIN detections "
                f"d ON d.detection_id = o.detection_id {PAYLOAD_JOIN} WHERE "
                f"o.detection_id = ? AND {_pending('outbox', 'o.')}",
                (i,),
            ).fetchone()
            if row is not None:
                stored, *rest = row
                out.append((i, stored or payload_of(rest)))
        return out

    def _pending_rows(self, events: bool, where: str, args: tuple) -> list[tuple[str, str]]:
        """(id, payload) of the events `e` (else detections `d`) matching `where`."""
        if events:
            sql = f"SELECT {EVENT_PAYLOAD_COLUMNS} FROM events e {EVENT_PAYLOAD_JOIN}"
        else:
            sql = f"SELECT {PAYLOAD_COLUMNS} FROM detections d {PAYLOAD_JOIN}"
        rows = self._db().execute(f"{sql} WHERE {where}", args).fetchall()
        return [(str(row[0]), payload_of(row, events)) for row in rows]

    def backlog(self) -> int:
        """How many messages are still to send (undelivered, not set aside), of both kinds."""
        return self._count_messages(_pending)

    def set_aside_count(self) -> int:
        """How many undelivered messages are set aside (refused by the broker)."""
        return self._count_messages(_aside)

    def _count_messages(self, where: Callable[[str], str]) -> int:
        """Messages of both kinds that match `where(table)`."""
        db = self._db()
        return sum(
            int(db.execute(f"SELECT count(*) FROM {table} WHERE {where(table)}").fetchone()[0])
            for table, _ in _MESSAGE_TABLES
        )

    def set_aside_messages(self, limit: int = 100) -> list[tuple[str, str, str]]:
        """(message_id, set_aside_utc, last_error) of set-aside messages, oldest first."""
        return (
            self._db()
            .execute(
                " UNION ALL ".join(
                    f"SELECT {key}, set_aside_utc, last_error FROM {table} WHERE {_aside(table)}"
                    for table, key in _MESSAGE_TABLES
                )
                + " ORDER BY set_aside_utc LIMIT ?",
                (limit,),
            )
            .fetchall()
        )

    def any_delivered(self) -> bool:
        """Whether any message of this database ever reached an uplink."""
        db = self._db()
        return any(
            db.execute(
                f"SELECT 1 FROM {table} WHERE {_queued(table)}delivered_utc IS NOT NULL LIMIT 1"
            ).fetchone()
            for table, _ in _MESSAGE_TABLES
        )
