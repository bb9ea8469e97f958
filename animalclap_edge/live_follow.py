"""What one live stream reads: the database file now at the path, and its cursor there.

A stream id names a row, not only its number: `<rowid>-<last 8 characters of the
row's detection_id or event_id>` (`1042-3cca4270`), or `0` for "before the first row".
A client hands it back (`Last-Event-ID`, `?last_event_id=`, `?since=`) and resumes
after that row only if the row at that number is still the same one; otherwise the
number belongs to another file (the database was recovered, deleted and made again) or
to rows since deleted, and the stream starts from the first row (`0`): a replay that
consumers de-duplicate by `detection_id`, never a silent gap. A bare integer (what
clients sent before) still means that rowid in the file there now, unchecked.

An open stream checks on every poll that the path still names the file it opened
(st_dev, st_ino: `run`'s recovery moves a damaged file aside and puts a new one in its
place; a SQLite connection keeps reading the old one for good) and that its cursor's
row is still there; when either changed it sends `id: 0` and the rows from the first.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from animalclap_edge.payloads import EVENT_PAYLOAD_JOIN, PAYLOAD_JOIN, payload_columns, runs_columns

BATCH = 500  # rows per query, so catching up on `since=all` does not load everything
MAX_ROWID = 2**63 - 1
KEY_CHARS = 8  # of the row's id in a stream id: 32 bits, the tail of its uuid

# A stream's kind (`?kind=`): its table, the column of the row's id, the SQL of its rows
# after a rowid with their run's device and site (`payload_of`), and whether they are
# events.
KINDS = {
    "detection": (
        "detections",
        "detection_id",
        "SELECT d.rowid, d.detection_id, {columns} FROM detections d " + PAYLOAD_JOIN
        + " WHERE d.rowid > ? ORDER BY d.rowid LIMIT ?",
        False,
    ),
    "event": (
        "events",
        "event_id",
        "SELECT e.rowid, e.event_id, {columns} FROM events e " + EVENT_PAYLOAD_JOIN
        + " WHERE e.rowid > ? ORDER BY e.rowid LIMIT ?",
        True,
    ),
}  # fmt: skip

Identity = tuple[int, int]  # (st_dev, st_ino) of the database file


class BadStreamId(ValueError):
    """A cursor the client sent that is not a stream id; the message says what is."""


class Unusable(Exception):
    """The file at the path is no database of this stream's kind; the message says why."""


def identity(path: Path) -> Identity | None:
    """The file at `path` now, or None when there is none."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_dev, st.st_ino


def stream_id(rowid: int, key: str | None) -> str:
    """The id of the position after row `rowid` whose detection_id (event_id) is `key`."""
    return "0" if rowid == 0 or key is None else f"{rowid}-{key[-KEY_CHARS:]}"


def parse_stream_id(text: str, what: str) -> tuple[int, str | None]:
    """(rowid, key tail or None for a bare rowid) of a stream id a client sent."""
    number, dash, tail = text.strip().partition("-")
    rowid = int(number) if number.isascii() and number.isdigit() else -1
    if not 0 <= rowid <= MAX_ROWID or (dash and len(tail) != KEY_CHARS):
        words = "now, all, or " if what == "since" else ""
        raise BadStreamId(
            f"{what} must be {words}a stream id (the id: of a message, e.g. 1042-3cca4270, "
            f"or a bare rowid such as 1042), got {text[:40]!r}"
        )
    return rowid, (tail if dash else None)


class Follower:
    """One stream's connection to the database at `path`, and its cursor: the rowid it
    has sent up to (`after`) and that row's id (`key`)."""

    def __init__(self, path: Path, connect: Callable[[], sqlite3.Connection], kind: str):
        self.path, self._connect = path, connect
        self.table, self._key_column, self._sql, self.events = KINDS[kind]
        self.conn: sqlite3.Connection | None = None
        self._opened: Identity | None = None  # the file `conn` reads
        self._rows_sql = ""
        self.after = 0
        self.key: str | None = None
        self.problem = ""  # why the file at the path cannot be read as this kind, if so

    @property
    def position(self) -> str:
        return stream_id(self.after, self.key)

    def close(self) -> None:
        conn, self.conn, self._opened = self.conn, None, None
        if conn is not None:
            conn.close()

    def open(self) -> bool:
        """Open the file at the path; False when there is none yet (or it is being
        created: no tables). `Unusable` when it holds no table of this kind."""
        self.close()
        # stat before connecting: a file replaced in between shows up as a change at the
        # next poll (a replay), never as the old file taken for the new one
        opened = identity(self.path)
        if opened is None:
            return False
        conn = self._connect()
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if self.table not in tables:
                if not tables:
                    conn.close()
                    return False  # `run` is creating it: the schema comes in one transaction
                if "detections" in tables:
                    raise Unusable(
                        f"{self.path} predates merged events (no events table: written by a "
                        "release before them); `animalclap-edge run` adds the table when it "
                        "next opens the database; until then stream /events (detections)"
                    )
                raise Unusable(f"{self.path}: not a detection database (no {self.table} table)")
            self._rows_sql = self._sql.format(
                columns=payload_columns(runs_columns(conn), self.events)
            )
        except BaseException:
            conn.close()
            raise
        self.conn, self._opened = conn, opened
        return True

    def start(self, last_event_id: str | None, since: str) -> None:
        """Place the cursor where a new stream starts (see the module's docstring)."""
        if last_event_id is not None:
            rowid, tail = parse_stream_id(last_event_id, "Last-Event-ID")
        elif since == "now":
            rowid, tail = self._newest(), None
        elif since == "all":
            rowid, tail = 0, None
        else:
            rowid, tail = parse_stream_id(since, "since")
        if self.conn is None or rowid == 0:
            self.after, self.key = 0, None
        elif tail is None:
            # a bare rowid: there, or the row before it (a gap left by deleted rows is
            # never filled again), or the newest when it is beyond (a drop, a VACUUM)
            self._place_at_or_before(rowid)
        else:
            key = self._key_at(rowid)
            if key is not None and key[-KEY_CHARS:] == tail:
                self.after, self.key = rowid, key
            else:
                self.after, self.key = 0, None  # another file's id, or a deleted row

    def poll(self) -> tuple[list[tuple[int, str, tuple]], bool]:
        """(new rows as (rowid, key, payload columns), whether the cursor went back to 0).

        Reopens the file when the path names another one now, and starts over from the
        first row when the cursor's row is gone or another (retention emptied the table
        and SQLite handed its rowids out again). While the file is missing or unusable
        (`problem` says why) there are no rows, and the next poll tries again."""
        reset = False
        now = identity(self.path)
        if self.conn is not None and now != self._opened:
            self.close()
            reset = self._restart()
        if self.conn is None and now is not None:
            try:
                self.open()
                self.problem = ""
            except Unusable as e:
                self.problem = str(e)
        conn = self.conn
        if conn is None:
            return [], reset
        if self.after and self._key_at(self.after) != self.key:
            reset = self._restart() or reset
        # fetchall: no statement stays open between polls, so this reader never pins an
        # old WAL snapshot and keeps checkpoints from shrinking the WAL.
        rows = conn.execute(self._rows_sql, (self.after, BATCH)).fetchall()
        if rows:
            self.after, self.key = rows[-1][0], rows[-1][1]
        return [(r[0], r[1], r[2:]) for r in rows], reset

    def _restart(self) -> bool:
        moved = self.after != 0
        self.after, self.key = 0, None
        return moved

    def _newest(self) -> int:
        if self.conn is None:
            return 0
        return self.conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {self.table}").fetchone()[0]

    def _key_at(self, rowid: int) -> str | None:
        if self.conn is None:
            return None
        row = self.conn.execute(
            f"SELECT {self._key_column} FROM {self.table} WHERE rowid = ?", (rowid,)
        ).fetchone()
        return row[0] if row else None

    def _place_at_or_before(self, rowid: int) -> None:
        if self.conn is None:
            self.after, self.key = 0, None
            return
        row = self.conn.execute(
            f"SELECT rowid, {self._key_column} FROM {self.table} WHERE rowid <= ? "
            "ORDER BY rowid DESC LIMIT 1",
            (rowid,),
        ).fetchone()
        self.after, self.key = (row[0], row[1]) if row else (0, None)
