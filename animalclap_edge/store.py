"""The SQLite detection store: the recorder's product.

One file holds the runs, one row per recording (ok / skipped / partial, with the
reason), the detections, and the events merged from them. Each detection and event
is also a message to send upstream, and the state of that message (queued,
delivered, refused, set aside) is kept in its own row: a message exists exactly when
its row does, so an uplink never misses a logged one and never announces one that
was not logged. Detections logged before schema 9 keep theirs in the `outbox` table,
as they were. Message ids name their kind (an event's starts with "event:"), so the
outbox methods (`outbox.OutboxRows`, which the store is) take either; the message
itself is `payloads.message_payload`.
Detection ids are stable (`records.detection_id`), so replaying a recording adds
nothing twice.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, fields
from pathlib import Path
from types import TracebackType

from animalclap_edge.outbox import OutboxRows
from animalclap_edge.payloads import DET_COLS as _DET_COLS
from animalclap_edge.payloads import EVENT_COLS as _EVENT_COLS
from animalclap_edge.payloads import message_payload
from animalclap_edge.records import (
    CUT_OFF_REASON,
    LEVELS,
    OPEN_REASON,
    STATUSES,
    Detection,
    Event,
    RecordingResult,
    now_utc_ms,
)

SCHEMA_VERSION = 9  # 2: events; 3: health; 4: recordings.audio_note; 5: content_digest;
# 6: outbox.set_aside_utc, outbox.last_error; 7: runs.end_reason; 8: runs.device, runs.site;
# 9: messages' state in the detections' and events' rows (events are sent too)
BUSY_TIMEOUT_MS = 5000  # a reader (sync job, sqlite3 shell) may hold the lock briefly
# The WAL is folded back into the database (a passive checkpoint) once it holds
# 1/WAL_SHARE_OF_FREE of the card's free space, and at most SQLite's default 1,000
# pages (4 MB): on a nearly full card the default let the WAL take the last megabytes
# before its first checkpoint, and a checkpoint needs room for the database to grow,
# so the WAL could then never be folded back and every restart failed to open it.
WAL_SHARE_OF_FREE = 8
WAL_PAGES = (16, 1000)  # (fewest, most) pages between checkpoints


RUN_FINISHED = "finished"  # the source was done
RUN_STOPPED = "stopped: Ctrl-C or SIGTERM"  # `systemctl stop`, a shutdown, a person


class StoreError(RuntimeError):
    """The database cannot be used; the message names the file and why."""


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


# TEXT primary keys are NOT NULL explicitly: SQLite otherwise accepts NULL in them.
# No foreign key from detections to recordings: a recording's row is written after
# its detections (and replaced on replay), so such a key could never hold.
_SCHEMA = (
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY NOT NULL,
        started_utc TEXT NOT NULL,
        finished_utc TEXT,
        bundle_id TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        source TEXT NOT NULL,
        host TEXT NOT NULL,
        software_version TEXT NOT NULL
    )""",
    f"""CREATE TABLE recordings (
        recording_id TEXT PRIMARY KEY NOT NULL,
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        source_path TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ({_in(STATUSES)})),
        reason TEXT,
        duration_s REAL NOT NULL,
        n_windows INTEGER NOT NULL,
        n_detections INTEGER NOT NULL,
        start_time_utc TEXT,
        clock_trusted INTEGER NOT NULL CHECK (clock_trusted IN (0, 1)),
        clock_note TEXT NOT NULL,
        finished_utc TEXT NOT NULL
    )""",
    f"""CREATE TABLE detections (
        detection_id TEXT PRIMARY KEY NOT NULL,
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        recording_id TEXT NOT NULL,
        window_start_s REAL NOT NULL,
        window_end_s REAL NOT NULL,
        start_time_utc TEXT,
        clock_trusted INTEGER NOT NULL CHECK (clock_trusted IN (0, 1)),
        bundle_id TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        rank INTEGER NOT NULL,
        level TEXT NOT NULL CHECK (level IN ({_in(LEVELS)})),
        taxon TEXT NOT NULL,
        scientific_name TEXT NOT NULL,
        common_name TEXT NOT NULL,
        score REAL NOT NULL,
        probability REAL NOT NULL,
        traits_json TEXT NOT NULL,
        created_utc TEXT NOT NULL
    )""",
    # The messages of detections logged before schema 9 (since, a message's state is in
    # its detection's row). ON DELETE CASCADE so that retention can delete old detections
    # without first clearing their (possibly never delivered) messages. payload_json is '' since
    # 2026-11-26: the message is built from the (immutable) detection row when it is
    # sent, instead of storing a second copy of every detection on the SD card.
    # Databases written before keep their stored payloads, which are sent as they are.
    """CREATE TABLE outbox (
        detection_id TEXT PRIMARY KEY NOT NULL
            REFERENCES detections(detection_id) ON DELETE CASCADE,
        payload_json TEXT NOT NULL,
        created_utc TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_utc TEXT
    )""",
    "CREATE INDEX detections_recording_id ON detections(recording_id)",
    "CREATE INDEX detections_taxon ON detections(taxon)",
    "CREATE INDEX outbox_delivered_utc ON outbox(delivered_utc)",
)
# Indexes the age retention pass searches by. Without them every pass scans both
# tables: 0.25-0.27 s for 1 M detections (362-427 MB; 19 days at 2,160 detections/h) in the
# page cache, every retention_interval_s, and the whole file read from the card when
# the cache cannot hold it. With them a pass with nothing to delete takes 0 ms, but
# every transaction writes a page more: +9% bytes written per hour (61.2 -> 66.9 MB/h,
# scripts/benchmarks/retention_scan.py and bytes_written.py). So only recorders with
# an age rule build them (`ensure_age_indexes`). They change no schema: no version.
AGE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS detections_created_utc ON detections(created_utc)",
    "CREATE INDEX IF NOT EXISTS events_created_utc ON events(created_utc)",
)
# Each entry upgrades from the version before it (MIGRATIONS[v] takes v -> v + 1).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        f"""CREATE TABLE events (
            event_id TEXT PRIMARY KEY NOT NULL,
            run_id TEXT NOT NULL REFERENCES runs(run_id),
            recording_id TEXT NOT NULL,
            level TEXT NOT NULL CHECK (level IN ({_in(LEVELS)})),
            taxon TEXT NOT NULL,
            scientific_name TEXT NOT NULL,
            common_name TEXT NOT NULL,
            start_s REAL NOT NULL,
            end_s REAL NOT NULL,
            start_time_utc TEXT,
            clock_trusted INTEGER NOT NULL CHECK (clock_trusted IN (0, 1)),
            n_windows INTEGER NOT NULL CHECK (n_windows >= 1),
            max_probability REAL NOT NULL,
            mean_probability REAL NOT NULL,
            bundle_id TEXT NOT NULL,
            config_hash TEXT NOT NULL,
            created_utc TEXT NOT NULL,
            clip_path TEXT,
            clip_note TEXT
        )""",
        "CREATE INDEX events_recording_id ON events(recording_id)",
    ),
    # Health events (source lost/reopened, silence, overruns, disk, temperature):
    # written where the detections are, so an SD card tells the whole story.
    2: (
        """CREATE TABLE health (
            health_id INTEGER PRIMARY KEY AUTOINCREMENT,
            time_utc TEXT NOT NULL,
            kind TEXT NOT NULL,
            source TEXT NOT NULL,
            detail_json TEXT NOT NULL
        )""",
    ),
    # What of a recording the model does not hear (a 384 kHz bat recording is heard up
    # to 24 kHz; a 16 kHz one holds nothing above 8); '' for the rows written before.
    3: ("ALTER TABLE recordings ADD COLUMN audio_note TEXT NOT NULL DEFAULT ''",),
    # What a file held (its first 16 KiB): another card's file at the same path is
    # another recording. '' for the rows written before, and for live audio.
    4: ("ALTER TABLE recordings ADD COLUMN content_digest TEXT NOT NULL DEFAULT ''",),
    # A message the broker refused `max_attempts` times in a row (too large for it):
    # set aside, so that it no longer blocks the rest of the outbox, and kept with the
    # reason (`publish --retry-set-aside` queues it again). attempts (there since 1,
    # never written before) counts the refusals in a row.
    5: (
        "ALTER TABLE outbox ADD COLUMN set_aside_utc TEXT",
        "ALTER TABLE outbox ADD COLUMN last_error TEXT",
    ),
    # How a run ended: its source done ("finished"), stopped by Ctrl-C or SIGTERM (a
    # service stopped, a recorder shut down), or an error. NULL for runs before it, and
    # for a run still going or killed (no finished_utc either).
    6: ("ALTER TABLE runs ADD COLUMN end_reason TEXT",),
    # Which recorder ran it and where (config device.name, or the host name; device.site):
    # cards from many recorders merge by them. '' for runs before it (reports fall back
    # to runs.host for the device).
    7: (
        "ALTER TABLE runs ADD COLUMN device TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN site TEXT NOT NULL DEFAULT ''",
    ),
    # A message's state moves into the row it carries, and events are sent too (MQTT
    # <prefix>/<device>/events). An outbox table keyed by the random detection_id (or
    # event_id) writes one more random index leaf per row: per hour of the demo's audio
    # (1,812 detections, 1,075 events; `scripts/benchmarks/bytes_written.py --hours 1
    # --strace --only db`, 2026-11-28), 48.3 MB/h with detections' outbox alone, 55.9
    # with an events' one beside it, 49.3 with events' state in their rows, and 38.8
    # with no detections' outbox either. Rows before it are not rewritten (`queued` 0 is
    # a default; an UPDATE of a month of rows would fill the WAL of a nearly full
    # card): a detection's message stays in `outbox`, and an event's is not sent (0.8 M
    # messages a month at the demo's rate, up a metered link at the upgrade, whose
    # detections the server has). The indexes hold the queued rows alone, so the
    # uplink's poll never walks that history, and their new entries land in one place.
    8: (
        *(
            f"ALTER TABLE {table} ADD COLUMN {column}"
            for table in ("detections", "events")
            for column in (
                "queued INTEGER NOT NULL DEFAULT 0",
                "attempts INTEGER NOT NULL DEFAULT 0",
                "delivered_utc TEXT",
                "set_aside_utc TEXT",
                "last_error TEXT",
            )
        ),
        "CREATE INDEX detections_to_send ON detections(delivered_utc, set_aside_utc) "
        "WHERE queued = 1",
        "CREATE INDEX events_to_send ON events(delivered_utc, set_aside_utc) WHERE queued = 1",
    ),
}

_REC_COLS = tuple(f.name for f in fields(RecordingResult))


class DetectionStore(OutboxRows):
    """Open (creating if needed) a detection database; use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"{self.path}: cannot open the detection database: {e}") from e
        try:
            self.journal_mode = self._open()
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(f"{self.path}: cannot open the detection database: {e}") from e
        except BaseException:
            self.close()
            raise

    def _open(self) -> str:
        conn = self._db()
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Checked before anything is written, so a newer database is left as it was.
        self._refuse_newer(conn.execute("PRAGMA user_version").fetchone()[0])
        # WAL: readers never block the recorder, and a crash mid-write leaves the last
        # committed state. FULL: a committed detection survives a power cut too.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = FULL")
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self._wal_pages = 0  # the autocheckpoint in force; 0: not yet fitted to the card
        with self._transaction() as tx:
            version = tx.execute("PRAGMA user_version").fetchone()[0]
            self._refuse_newer(version)  # another process may have upgraded it meanwhile
            if version == 0:
                if tx.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise StoreError(
                        f"{self.path}: has tables but no schema version: not an AnimalCLAP "
                        "detection database; choose another file"
                    )
                for stmt in _SCHEMA:
                    tx.execute(stmt)
                version = 1
            while version < SCHEMA_VERSION:  # existing databases are upgraded in place
                for stmt in MIGRATIONS[version]:
                    tx.execute(stmt)
                version += 1
            tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return str(mode)

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: database schema version {version} is newer than this "
                f"software supports ({SCHEMA_VERSION}); upgrade animalclap-edge or use another database"
            )

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> DetectionStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writes ---------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        bundle_id: str,
        config_hash: str,
        source: str,
        software_version: str,
        device: str | None = None,
        site: str = "",
    ) -> None:
        """`device`: the recorder's name (config device.name; None: the host name)."""
        host = socket.gethostname()
        with self._transaction() as tx:
            tx.execute(
                "INSERT INTO runs (run_id, started_utc, finished_utc, bundle_id, config_hash, "
                "source, host, software_version, device, site) "
                "VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    now_utc_ms(),
                    bundle_id,
                    config_hash,
                    source,
                    host,
                    software_version,
                    device or host,
                    site,
                ),
            )

    def finish_run(self, run_id: str, end_reason: str = RUN_FINISHED) -> None:
        """Close a run with its end time and how it ended (`RUN_FINISHED`,
        `RUN_STOPPED`, or `failed: <error>`)."""
        with self._transaction() as tx:
            cur = tx.execute(
                "UPDATE runs SET finished_utc = ?, end_reason = ? WHERE run_id = ?",
                (now_utc_ms(), end_reason, run_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"{self.path}: no run {run_id!r} to finish")

    def add_detections(self, detections: Iterable[Detection]) -> int:
        """Log detections, each queued to be sent, in one transaction; returns how many
        were new.

        A detection whose id is already stored is skipped with its message, so a
        replay neither duplicates rows nor re-sends anything. Any failure rolls the
        whole batch back.
        """
        # Payloads are built (and dropped) before the write lock is taken, so a bad
        # one (traits that are not JSON) fails the batch before anything is written.
        batch = [(d, message_payload(d)) for d in detections]
        if not batch:
            return 0
        new = 0
        insert = (
            f"INSERT INTO detections ({', '.join(_DET_COLS)}, queued) "
            f"VALUES ({', '.join('?' * len(_DET_COLS))}, 1)"
        )
        with self._transaction() as tx:
            for d, _ in batch:
                # Look-up then plain INSERT rather than INSERT OR IGNORE: OR IGNORE also
                # silently drops rows that break a CHECK or NOT NULL constraint.
                if tx.execute(
                    "SELECT 1 FROM detections WHERE detection_id = ?", (d.detection_id,)
                ).fetchone():
                    continue
                tx.execute(insert, astuple(d))
                new += 1
        return new

    def add_events(self, events: Iterable[Event]) -> int:
        """Log closed events, each queued to be sent; an event already stored (a replay)
        is kept as it was, and not queued again."""
        new = 0
        insert = (
            f"INSERT INTO events ({', '.join(_EVENT_COLS)}, queued) "
            f"VALUES ({', '.join('?' * len(_EVENT_COLS))}, 1)"
        )
        with self._transaction() as tx:
            for e in events:
                if tx.execute("SELECT 1 FROM events WHERE event_id = ?", (e.event_id,)).fetchone():
                    continue
                tx.execute(insert, astuple(e))
                new += 1
        return new

    def close_cut_off_recordings(self) -> list[str]:
        """Say of every recording still open that its run died with it (OPEN_REASON ->
        CUT_OFF_REASON); returns their ids. Only for a run holding the database's lock,
        when no other run can be analysing one: they read "still being analysed" for
        good after a power cut."""
        with self._transaction() as tx:
            ids = [
                r[0]
                for r in tx.execute(
                    "SELECT recording_id FROM recordings WHERE status = 'partial' AND reason = ?",
                    (OPEN_REASON,),
                )
            ]
            tx.execute(
                "UPDATE recordings SET reason = ? WHERE status = 'partial' AND reason = ?",
                (CUT_OFF_REASON, OPEN_REASON),
            )
        return ids

    def detections_in_window_order(self, recording_id: str) -> Iterator[Detection]:
        """One recording's detections by window, then rank, read as they are used (a
        live recording can hold months of them)."""
        cursor = self._db().execute(
            f"SELECT {', '.join(_DET_COLS)} FROM detections WHERE recording_id = ? "
            "ORDER BY window_start_s, rank",
            (recording_id,),
        )
        for row in cursor:
            yield Detection(*row)

    def event_ids(self, recording_id: str) -> set[str]:
        """The ids of one recording's logged events."""
        rows = self._db().execute(
            "SELECT event_id FROM events WHERE recording_id = ?", (recording_id,)
        )
        return {r[0] for r in rows}

    def overlaps_an_event(self, e: Event) -> bool:
        """Whether an event of e's recording and label already covers part of e."""
        return (
            self._db()
            .execute(
                "SELECT 1 FROM events WHERE recording_id = ? AND level = ? AND taxon = ? "
                "AND start_s < ? AND end_s > ? LIMIT 1",
                (e.recording_id, e.level, e.taxon, e.end_s, e.start_s),
            )
            .fetchone()
            is not None
        )

    def record_recording(self, result: RecordingResult) -> None:
        """Write (or, on replay, replace) the accounting row of one recording."""
        row = astuple(result)  # clock_trusted is a bool: sqlite3 stores it as 0/1
        with self._transaction() as tx:
            tx.execute(
                f"INSERT OR REPLACE INTO recordings ({', '.join(_REC_COLS)}) "
                f"VALUES ({', '.join('?' * len(_REC_COLS))})",
                row,
            )

    def recording_id_for(self, path: str, digest: str) -> tuple[str, bool]:
        """(id, adopted) of the file at `path` whose content has `digest`.

        The id is `path#<digest[:12]>`: two cards mounted in turn at one path, their
        recorders naming files alike, hold two recordings, whatever this database saw
        before. The exception is a row logged under the bare path before digests
        (2026-11-27): its content is unknown, so it is taken for this file, which keeps
        its detections' ids, and `digest` is written into it (adopted True, once) so
        that other content at the path is told apart from then on. Streams (no
        digest) keep their id."""
        if not digest:
            return path, False
        row = (
            self._db()
            .execute("SELECT content_digest FROM recordings WHERE recording_id = ?", (path,))
            .fetchone()
        )
        if row is None or row[0] not in ("", digest):
            return f"{path}#{digest[:12]}", False
        if row[0] == digest:
            return path, False
        with self._transaction() as tx:
            tx.execute(
                "UPDATE recordings SET content_digest = ? WHERE recording_id = ?", (digest, path)
            )
        return path, True

    def analysed(self, recording_id: str) -> bool:
        """Whether a row under `recording_id` holds an analysis (any status but skipped)."""
        row = (
            self._db()
            .execute(
                "SELECT 1 FROM recordings WHERE recording_id = ? AND status != 'skipped'",
                (recording_id,),
            )
            .fetchone()
        )
        return row is not None

    def recording_done(self, recording_id: str, bundle_id: str, config_hash: str) -> bool:
        """Whether this recording was processed to the end with this bundle and config."""
        row = (
            self._db()
            .execute(
                "SELECT 1 FROM recordings r JOIN runs u ON r.run_id = u.run_id "
                "WHERE r.recording_id = ? AND r.status = 'ok' AND u.bundle_id = ? AND u.config_hash = ?",
                (recording_id, bundle_id, config_hash),
            )
            .fetchone()
        )
        return row is not None

    def add_health(self, kind: str, source: str, detail: dict) -> int:
        """Log one health event (e.g. "source_lost", "snapshot"); returns its id."""
        text = json.dumps(detail, sort_keys=True, separators=(",", ":"), default=str)
        with self._transaction() as tx:
            cur = tx.execute(
                "INSERT INTO health (time_utc, kind, source, detail_json) VALUES (?, ?, ?, ?)",
                (now_utc_ms(), kind, source, text),
            )
            return int(cur.lastrowid or 0)

    def backup(self, dest: str | Path) -> Path:
        """A consistent copy of the live database (SQLite's online backup), written
        beside `dest`, fsynced, then renamed over it: a crash leaves the old backup."""
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
        target = sqlite3.connect(str(tmp))
        try:
            try:
                self._db().backup(target)
                target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            finally:
                target.close()
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:  # a full card: a half copy must not keep the room it took
            tmp.unlink(missing_ok=True)
            raise
        return dest

    # -- reads ----------------------------------------------------------------

    def health(self, after_id: int = 0, limit: int = 1000, newest: bool = False) -> list[dict]:
        """Health events after `after_id`, oldest first, with their detail decoded; the
        first `limit` of them, or with `newest` the last `limit`."""
        rows = self._db().execute(
            "SELECT * FROM (SELECT health_id, time_utc, kind, source, detail_json FROM health "
            f"WHERE health_id > ? ORDER BY health_id {'DESC' if newest else 'ASC'} LIMIT ?) "
            "ORDER BY health_id",
            (after_id, limit),
        )
        return [
            {"id": i, "time_utc": t, "kind": k, "source": src, "detail": json.loads(d)}
            for i, t, k, src, d in rows
        ]

    def detections(self, recording_id: str | None = None) -> list[Detection]:
        """Detections in the order they were logged, optionally of one recording."""
        sql = f"SELECT {', '.join(_DET_COLS)} FROM detections"
        args: tuple[str, ...] = ()
        if recording_id is not None:
            sql, args = sql + " WHERE recording_id = ?", (recording_id,)
        rows = self._db().execute(sql + " ORDER BY rowid", args).fetchall()
        return [Detection(*r) for r in rows]  # __post_init__ turns clock_trusted back to bool

    def events(self, recording_id: str | None = None) -> list[Event]:
        """Events in the order they were logged, optionally of one recording."""
        sql = f"SELECT {', '.join(_EVENT_COLS)} FROM events"
        args: tuple[str, ...] = ()
        if recording_id is not None:
            sql, args = sql + " WHERE recording_id = ?", (recording_id,)
        return [Event(*row) for row in self._db().execute(sql + " ORDER BY rowid", args)]

    def recordings(self, run_id: str | None = None) -> list[RecordingResult]:
        sql = f"SELECT {', '.join(_REC_COLS)} FROM recordings"
        args: tuple[str, ...] = ()
        if run_id is not None:
            sql, args = sql + " WHERE run_id = ?", (run_id,)
        rows = self._db().execute(sql + " ORDER BY rowid", args).fetchall()
        return [RecordingResult(*r) for r in rows]

    def integrity_check(self) -> str:
        """ "ok", or what SQLite's integrity and foreign-key checks found, on one line."""
        conn = self._db()
        found = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if found != ["ok"]:
            return "; ".join(str(f) for f in found)
        bad = conn.execute("PRAGMA foreign_key_check").fetchall()
        if bad:
            return "; ".join(f"{t} rowid {rid}: no row in {parent}" for t, rid, parent, _ in bad)
        return "ok"

    # -- retention (the policy is animalclap_edge.retention; this is its SQL) ----

    def clip_candidates(
        self,
        keep_per_label: int,
        after_rowid: int = 0,
        before_utc: str | None = None,
        limit: int = 500,
        not_before_utc: str = "",
    ) -> list[tuple[int, str, str]]:
        """(rowid, event_id, clip_path) of events holding a clip, oldest first, leaving out
        the `keep_per_label` best of each (level, taxon): highest max_probability, then
        oldest. With `before_utc`, only events logged before that time and not before
        `not_before_utc`."""
        age = " AND created_utc < ? AND created_utc >= ?" if before_utc is not None else ""
        args = (
            (keep_per_label, after_rowid)
            + ((before_utc, not_before_utc) if before_utc else ())
            + (limit,)
        )
        return (
            self._db()
            .execute(
                "SELECT rid, event_id, clip_path FROM (SELECT rowid AS rid, event_id, clip_path, "
                "created_utc, ROW_NUMBER() OVER (PARTITION BY level, taxon "
                "ORDER BY max_probability DESC, rowid) AS nth FROM events WHERE clip_path IS NOT NULL) "
                f"WHERE nth > ? AND rid > ?{age} ORDER BY rid LIMIT ?",
                args,
            )
            .fetchall()
        )

    def clear_clips(self, clips: Iterable[tuple[str, str, str]]) -> list[tuple[str, str]]:
        """For each (event_id, clip_path, note): set clip_path NULL and clip_note, in one
        transaction, if the event still points at that clip; returns those cleared."""
        done: list[tuple[str, str]] = []
        with self._transaction() as tx:
            for event_id, path, note in clips:
                if tx.execute(
                    "UPDATE events SET clip_path = NULL, clip_note = ? "
                    "WHERE event_id = ? AND clip_path = ?",
                    (note, event_id, path),
                ).rowcount:
                    done.append((event_id, path))
        return done

    def forget_clips(self, paths: Iterable[str], note: str) -> int:
        """Clear the events that point at these clip files (deleted), with `note` as
        their clip_note; returns how many. 500 paths a statement, one transaction."""
        paths = list(paths)
        n = 0
        with self._transaction() as tx:
            for i in range(0, len(paths), 500):
                part = paths[i : i + 500]
                n += tx.execute(
                    "UPDATE events SET clip_path = NULL, clip_note = ? "
                    f"WHERE clip_path IN ({', '.join('?' * len(part))})",
                    (note, *part),
                ).rowcount
        return n

    def clip_paths(self) -> set[str]:
        """Every clip path an event points at."""
        rows = self._db().execute("SELECT clip_path FROM events WHERE clip_path IS NOT NULL")
        return {r[0] for r in rows}

    def ensure_age_indexes(self) -> str | None:
        """Build the created_utc indexes if missing; None when done, else why not (a
        full card, a locked database): the age pass then scans, and says so."""
        try:
            with self._transaction() as tx:
                for stmt in AGE_INDEXES:
                    tx.execute(stmt)
        except sqlite3.OperationalError as e:
            return f"created_utc indexes not built ({e}): this age pass scans the tables"
        return None

    def delete_expired(
        self, before_utc: str, undelivered_too: bool, chunk: int = 2000, not_before_utc: str = ""
    ) -> tuple[int, int, int]:
        """Delete detections logged before `before_utc` (and not before `not_before_utc`)
        whose message was delivered (all of them with `undelivered_too`), with their
        outbox rows if any, then the events of that age left with no detection and no
        clip whose message, if any, was delivered too (all such with `undelivered_too`).
        Returns (detections deleted, events deleted, old detections kept because
        undelivered)."""
        # Chunks keep each transaction (and so the WAL, on a nearly full card) small
        # and let a publisher get the write lock in between.
        delivered = (
            ""
            if undelivered_too
            else " AND ((queued = 1 AND delivered_utc IS NOT NULL) OR EXISTS (SELECT 1 FROM "
            "outbox o WHERE o.detection_id = detections.detection_id AND o.delivered_utc IS NOT NULL))"
        )
        n_det = 0
        while True:
            with self._transaction() as tx:
                n = tx.execute(
                    "DELETE FROM detections WHERE rowid IN (SELECT rowid FROM detections "
                    f"WHERE created_utc < ? AND created_utc >= ?{delivered} LIMIT ?)",
                    (before_utc, not_before_utc, chunk),
                ).rowcount
            n_det += n
            if n < chunk:
                break
        # An event's bounds are its own windows' floats; 1e-6 only guards against rounding.
        undelivered_event = (
            "" if undelivered_too else "AND (queued = 0 OR delivered_utc IS NOT NULL) "
        )
        with self._transaction() as tx:
            n_ev = tx.execute(
                "DELETE FROM events WHERE created_utc < ? AND created_utc >= ? AND clip_path "
                f"IS NULL {undelivered_event}AND NOT EXISTS "
                "(SELECT 1 FROM detections d WHERE d.recording_id = events.recording_id "
                "AND d.level = events.level AND d.taxon = events.taxon "
                "AND d.window_start_s >= events.start_s - 1e-6 "
                "AND d.window_end_s <= events.end_s + 1e-6)",
                (before_utc, not_before_utc),
            ).rowcount
        kept = (
            self._db()
            .execute(
                "SELECT count(*) FROM detections WHERE created_utc < ? AND created_utc >= ?",
                (before_utc, not_before_utc),
            )
            .fetchone()[0]
        )
        return n_det, n_ev, kept

    def logged_before(self, utc: str) -> int:
        """Detections whose created_utc is before `utc`."""
        return (
            self._db()
            .execute("SELECT count(*) FROM detections WHERE created_utc < ?", (utc,))
            .fetchone()[0]
        )

    def checkpoint(self) -> tuple[int, int, int]:
        """PRAGMA wal_checkpoint(TRUNCATE): (busy, WAL pages, pages checkpointed); the WAL
        file is cut to zero bytes unless a reader held it (busy = 1)."""
        busy, log, done = self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy), int(log), int(done)

    # -- helpers --------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the detection store is closed")
        return self._conn

    def wal_pages_for(self, free_bytes: int) -> int:
        """Pages the WAL may hold before a checkpoint, with `free_bytes` free on the card."""
        fewest, most = WAL_PAGES
        return max(fewest, min(most, free_bytes // WAL_SHARE_OF_FREE // self._page_size))

    def _fit_wal_to_card(self, conn: sqlite3.Connection) -> None:
        """Set the autocheckpoint (and the size a WAL is cut back to after one) to the
        card's free space, before each write: it shrinks as the card fills."""
        if str(self.path) == ":memory:":
            return
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:  # a card pulled: the write itself says so, as SQLite's error
            return
        pages = self.wal_pages_for(free)
        if pages != self._wal_pages:
            conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
            limit = -1 if pages == WAL_PAGES[1] else pages * self._page_size  # -1: no cut
            conn.execute(f"PRAGMA journal_size_limit = {limit}")
            self._wal_pages = pages

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._db()
        self._fit_wal_to_card(conn)
        # IMMEDIATE takes the write lock up front, so a concurrent writer waits at
        # BEGIN (busy_timeout) instead of failing half-way through a batch.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # Also on KeyboardInterrupt: a half-written batch must not be committed
            # by a later transaction. SQLite may already have rolled back (disk full).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
