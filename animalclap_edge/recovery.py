"""Open the SD card's database after a power cut or a failing card: check it, recover it.

WAL with `synchronous=FULL` survives power cuts by design; what it cannot survive is a
card that returns wrong bytes, or a file damaged by hand. At start the database gets
SQLite's `quick_check`. If that fails, the damaged file (with its -wal/-shm) is moved
aside, never deleted; the last online backup, if it passes its own check, becomes the
new database; then every row still readable in the damaged file is copied in
(rows the backup already has are skipped by primary key). What happened is logged as a
`store_recovered` health event in the recovered database, and returned.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from animalclap_edge.room import is_full
from animalclap_edge.store import DetectionStore, StoreError

# Parents before children, so the recovered rows satisfy the schema's references.
TABLES = ("runs", "recordings", "detections", "outbox", "events", "health")


@dataclass
class Recovery:
    problem: str  # what quick_check (or opening) reported
    moved_to: str  # the damaged file, kept for a person to look at
    restored_from: str | None  # the backup the new database started from
    salvaged: dict[str, int] = field(default_factory=dict)  # table -> rows copied in
    unreadable: dict[str, str] = field(default_factory=dict)  # table -> why it stopped
    # messages whose detection row was unreadable: nothing left to send or to point at
    dropped_messages: int = 0
    to_redo: int = 0  # finished recordings that lost detections: marked for the next run

    def summary(self) -> str:
        base = f"from backup {self.restored_from}" if self.restored_from else "from empty"
        rows = sum(self.salvaged.values())
        lost = f"; unreadable: {self.unreadable}" if self.unreadable else ""
        if self.dropped_messages:
            lost += f"; {self.dropped_messages} messages dropped with their unreadable detections"
        if self.to_redo:
            lost += (
                f"; {self.to_redo} recording(s) lost detections and are processed again by "
                "the next run given their files"
            )
        return (
            f"database damaged ({self.problem}); moved to {self.moved_to}; rebuilt {base} "
            f"+ {rows} rows salvaged{lost}"
        )


def check_database(path: str | Path) -> str:
    """ "ok", or SQLite's complaint on one line; the file is opened read-only."""
    try:
        conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=5)
        try:
            found = [r[0] for r in conn.execute("PRAGMA quick_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:  # e.g. "file is not a database"
        return str(e)
    if found == ["ok"]:
        return "ok"
    # one line: quick_check's items hold newlines ("*** in database main ***\nPage 5 ...")
    first = " ".join(str(found[0]).split())[:300]
    return first if len(found) == 1 else f"{len(found)} problems, the first: {first}"


SQLITE_HEADER = b"SQLite format 3\x00"


def refuse_unusable(path: Path, backup: Path | None) -> None:
    """Refuse, before anything is moved or written, a path that is not ours to use.

    Only a file that is a database (or was one: a backup of it exists) may be moved
    aside as damaged. A folder, a recording or notes given as `--db` by mistake, or a
    database on a read-only card, is named and left as it is."""
    if path.is_dir():
        raise StoreError(
            f"{path}: is a folder; the database must be a file, e.g. {path / 'detections.db'}"
        )
    # the file, and its folder (SQLite writes the -wal and -shm beside it)
    places = [path, path.parent] if path.exists() else [_existing_parent(path)]
    for where in places:
        if where is not None and not os.access(where, os.W_OK):
            raise StoreError(
                f"{path}: cannot write {'it' if where == path else f'in {where}'} (read-only "
                "card or no permission); give a writable --db, or read it with "
                "`animalclap-edge report`"
            )
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head != SQLITE_HEADER and not (backup is not None and backup.is_file()):
            raise StoreError(
                f"{path}: is not a SQLite database and has no backup beside it, so it is "
                "left untouched; choose another --db (if it is a database damaged beyond "
                "recognition, move it aside yourself)"
            )


def _existing_parent(path: Path) -> Path | None:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return None


def open_store(
    path: str | Path, backup: str | Path | None = None
) -> tuple[DetectionStore, Recovery | None]:
    """The store at `path`, recovered first if its check fails; `StoreError` for a path
    that cannot be ours (`refuse_unusable`)."""
    path = Path(path)
    backup = Path(backup) if backup else None
    refuse_unusable(path, backup)
    recovery = None
    if path.exists():
        problem = check_database(path)
        if problem != "ok":
            if is_full(path.parent):  # a full card fails the check too: not damage
                raise StoreError(
                    f"{path}: cannot open the detection database: the card is full "
                    f"({problem}); free space on it (the database is left as it is)"
                )
            recovery = recover(path, backup, problem)
    store = DetectionStore(path)
    if recovery is not None:
        store.add_health("store_recovered", str(path), asdict(recovery))
    return store, recovery


def recover(path: Path, backup: Path | None, problem: str) -> Recovery:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    damaged = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, damaged)
    for suffix in ("-wal", "-shm"):  # the WAL belongs to the damaged file: keep them paired
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, damaged.with_name(damaged.name + suffix))
    restored = None
    if backup is not None and backup.exists() and check_database(backup) == "ok":
        tmp = path.with_name(f".{path.name}.restore")
        shutil.copyfile(backup, tmp)
        os.replace(tmp, path)
        restored = str(backup)
    with DetectionStore(path):  # creates or upgrades the schema
        pass
    rec = Recovery(problem=problem, moved_to=str(damaged), restored_from=restored)
    _salvage(damaged, path, rec)
    with DetectionStore(path) as store:  # detections whose outbox rows were lost
        rec.salvaged["outbox requeued"] = store.requeue_missing_outbox()
    return rec


def _salvage(damaged: Path, into: Path, rec: Recovery) -> None:
    try:
        src = sqlite3.connect(str(damaged), timeout=5)
        names = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        rec.unreadable["*"] = f"no table readable: {e}"
        return
    dst = sqlite3.connect(str(into), timeout=5, isolation_level=None)
    try:
        dst.execute("BEGIN IMMEDIATE")
        for table in TABLES:
            if table in names:
                rec.salvaged[table] = _copy_table(src, dst, table, rec)
        rec.dropped_messages = dst.execute(
            "DELETE FROM outbox WHERE detection_id NOT IN (SELECT detection_id FROM detections)"
        ).rowcount
        # A finished recording whose detections did not all come back would be passed
        # over as done by every later run: marked partial, the next run redoes it (the
        # surviving detections keep their ids, so nothing doubles). Only where rows were
        # unreadable: retention deletes old detections on purpose, and those recordings
        # are done.
        lost = "detections" in rec.unreadable or "*" in rec.unreadable
        rec.to_redo = (
            0
            if not lost
            else dst.execute(
                "UPDATE recordings SET status = 'partial', reason = 'detections lost when the "
                "damaged database was recovered (' || (SELECT count(*) FROM detections d WHERE "
                "d.recording_id = recordings.recording_id) || ' of ' || n_detections || ' came "
                "back): processed again by the next run' WHERE status = 'ok' AND n_detections > "
                "(SELECT count(*) FROM detections d WHERE d.recording_id = recordings.recording_id)"
            ).rowcount
        )
        dst.execute("COMMIT")
    finally:
        dst.close()
        src.close()


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, rec: Recovery) -> int:
    """Rows of `table` readable in `src`, scanned from both ends so that rows after a
    damaged page are still reached; rows already present are skipped."""
    try:
        have = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
    except sqlite3.DatabaseError as e:
        rec.unreadable[table] = str(e)
        return 0
    want = {r[1] for r in dst.execute(f"PRAGMA table_info({table})")}
    cols = [c for c in have if c in want]  # an older schema has fewer columns
    insert = (
        f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    )
    copied = 0
    for order in ("ASC", "DESC"):
        try:
            for row in src.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY rowid {order}"):
                copied += dst.execute(insert, row).rowcount
        except sqlite3.DatabaseError as e:
            rec.unreadable[table] = str(e)
    return copied
