"""A detection database as CSV, for the people who collect the SD cards.

The database is opened read-only (nothing on the card changes: no schema upgrade, no
checkpoint), rows are streamed (a season is millions of detections), and each table
comes out as one CSV that a spreadsheet or R reads as it is:
- `detections`, `events`, `recordings`: the rows as logged; the traits of each
  detection in columns of their own (`<trait>` and `<trait>_p`; labels of a
  multi-label trait joined by "|"), instead of one JSON text;
- `summary`: one row per UTC day (`day_utc`; `day_local` with an offset or zone) and label,
  with how many detections and recordings, the highest and mean probability, the
  first and last time, and whether every clock that day was trusted.
Every time is UTC to the millisecond; with an offset a local time is added beside it.
The offset is fixed hours, or a time zone (`local_zone`: Europe/Berlin), whose own
offset at each row's instant (summer time or not) that row's local time and day get.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import functools
import json
import os
import re
import sqlite3
import stat
import sys
import tempfile
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from types import ModuleType
from typing import IO, TypedDict, cast
from zoneinfo import ZoneInfo

from animalclap_edge import records
from animalclap_edge.outbox import DELIVERY_COLUMNS
from animalclap_edge.payloads import recorder_sql, runs_columns

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows: no descriptor paths to check
    fcntl = None

WHAT: tuple[str, ...] = (
    *("detections", "events", "recordings", "summary", "effort", "runs", "health"),
)
# Reports of the recorder itself, not of what it heard: no detection filter applies.
_NOT_DETECTIONS = ("recordings", "runs", "health")

# Each run with what it logged, and how it ended: finished (its source was done),
# stopped (Ctrl-C, SIGTERM: a service stopped, a shutdown) or failed with its error.
# A run with no end time was killed (power cut, kill -9) or is still running; its
# recordings say how far it got. Runs logged before schema 7 did not record how.
_RUNS = """
SELECT u.*,
       CASE WHEN u.finished_utc IS NULL
            THEN 'not finished: killed, power lost, or still running'
            ELSE coalesce({end_reason}, 'ended; how was not logged before 2026-11-27') END
           AS state,
       (SELECT count(*) FROM recordings r WHERE r.run_id = u.run_id) AS recordings,
       (SELECT round(coalesce(sum(r.duration_s), 0), 3) FROM recordings r
        WHERE r.run_id = u.run_id) AS audio_s,
       (SELECT count(*) FROM detections d WHERE d.run_id = u.run_id) AS detections
FROM runs u ORDER BY u.rowid
"""

# Per day (UTC, or local with --utc-offset: the window's wall time, in a time zone at
# the window's own instant; "undated" without one) and label. The column says which day it is: `day_utc` or `day_local`.
_SUMMARY = """
SELECT coalesce({day}, 'undated') AS {day_column},
       level, taxon, scientific_name, common_name,
       count(*) AS detections,
       count(DISTINCT recording_id) AS recordings,
       round(max(probability), 4) AS max_probability,
       round(avg(probability), 4) AS mean_probability,
       min(start_time_utc) AS first_utc,
       max(start_time_utc) AS last_utc,
       min(clock_trusted) AS clock_trusted
FROM detections {where}
GROUP BY {day_column}, level, taxon, scientific_name, common_name
ORDER BY {day_column}, detections DESC, taxon
"""


class ReportError(Exception):
    """The report cannot be written; `str(e)` says why and what to do."""


@contextlib.contextmanager
def reading(db: str | Path, table: str = "detections") -> Iterator[sqlite3.Connection]:
    """A read-only connection to a detection database that has `table`, closed on exit;
    an SQLite error while reading becomes a one-line `ReportError`."""
    conn = open_readonly(db, table)
    try:
        yield conn
    except sqlite3.Error as e:
        if _is_damage(e):
            raise damaged(Path(db), e) from e
        raise ReportError(f"{db}: cannot read the {table} ({e})") from e
    finally:
        conn.close()


def _is_damage(e: sqlite3.Error) -> bool:
    name = getattr(e, "sqlite_errorname", "")  # Python 3.11+
    if name:
        return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"
    return "malformed" in str(e) or "not a database" in str(e)


def damaged(db: Path, e: sqlite3.Error) -> ReportError:
    """One line for a damaged database: its online backup, and how to salvage the rest.

    A report only reads, so it cannot recover the file as `run` does at start
    (recovery.py: moved aside, rebuilt from the backup, every readable row copied in);
    it says where the backup is and how to have `run` do that on a copy."""
    from animalclap_edge.health import backup_path_for

    backup = backup_path_for(db)
    if backup.is_file():
        made = datetime.fromtimestamp(backup.stat().st_mtime, timezone.utc)
        first = f"report its online backup (of {made:%Y-%m-%d %H:%M} UTC): --db {backup}"
    else:
        first = f"it has no online backup beside it ({backup.name})"
    return ReportError(
        f"{db}: the database is damaged ({e}); {first}; to salvage every readable row, copy "
        f"{db.name} with its -wal and .backup to a writable folder and run `animalclap-edge "
        "run --db COPY --source EMPTY_FOLDER` there, which moves the damaged file aside and "
        "rebuilds it from the backup and the rows still readable (docs/reliability.md)"
    )


def _read_mode(path: Path) -> str:
    """How to open `path` without writing beside it.

    With no -wal file, every committed row is in the database file (the recorder
    closed it, or the card was pulled after a checkpoint): `immutable=1` reads it
    without creating the -wal and -shm files a WAL reader otherwise leaves on the card,
    and works on a write-protected card. An empty -wal on a read-only card is the same
    case. Otherwise a writer may be live, or rows wait in the WAL: `mode=ro` reads
    through it, as a second reader of a running recorder must."""
    wal = path.with_name(path.name + "-wal")
    if path.with_name(path.name + "-journal").exists():
        return "mode=ro"  # a rollback journal to replay first (not our WAL databases)
    if not wal.exists():
        return "immutable=1"
    if wal.stat().st_size == 0 and not os.access(path.parent, os.W_OK):
        return "immutable=1"
    return "mode=ro"


def card_notes(say: Callable[[str], None], db: Path, several: bool) -> Callable[[str], None]:
    """`say`, with each note naming its card when several are read together."""
    return (lambda note: say(f"{db}: {note}")) if several else say


def missing_wal_note(db: Path, conn: sqlite3.Connection) -> str:
    """What may be missing from a database whose newest run did not finish and whose
    -wal is not beside it ("" when nothing is): a card copied without its -wal. A
    recorder's newest rows wait in the -wal until a checkpoint moves them into the
    database file; a recorder that stops checkpoints and removes it, one cut off (power
    lost) or still running leaves it. SQLite cannot tell that a -wal is missing: it
    reads the file without those rows. (An older run cut off is no sign: the next run
    took its -wal in.)"""
    if db.with_name(db.name + "-wal").exists():
        return ""
    with open(db, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[18] != 2:  # file format 2: WAL mode
        return ""
    newest = conn.execute("SELECT finished_utc FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
    if newest is None or newest[0] is not None:
        return ""
    return (
        f"{db}: its newest run did not finish (power lost, or still running) and no "
        f"{db.name}-wal is beside it: if it was copied off the card, copy {db.name}-wal "
        "with it, or the rows logged last are missing"
    )


def retention_note(conn: sqlite3.Connection) -> str:
    """What retention deleted from this card, from its health log ("" when nothing):
    counts per day then miss those rows while the recordings behind them stay, so an
    old day reads as audio with nothing heard."""
    try:
        n_det, n_ev, last = conn.execute(
            "SELECT sum(json_extract(detail_json, '$.detections_deleted')), "
            "sum(json_extract(detail_json, '$.events_deleted')), max(time_utc) "
            "FROM health WHERE kind = 'retention'"
        ).fetchone()
    except sqlite3.OperationalError:  # no health table (schema < 3), or no JSON1
        return ""
    if not n_det and not n_ev:
        return ""
    return (
        f"storage.retention_days deleted {n_det or 0} detections and {n_ev or 0} events "
        f"from this card (the last on {last[:10]}; `report health` lists when): the oldest "
        "days count fewer than were heard, while their recordings still count as audio"
    )


def card_paths(db: str | Path | Sequence[str | Path]) -> list[Path]:
    """The databases a report reads, one or several cards; a ReportError for none, or
    for two files that hold the same run (refuse_one_card_twice)."""
    dbs = [Path(db)] if isinstance(db, str | Path) else [Path(d) for d in db]
    if not dbs:
        raise ReportError("no database given: give --db (once per card)")
    refuse_one_card_twice(dbs)
    return dbs


def open_readonly(db: str | Path, table: str = "detections") -> sqlite3.Connection:
    """A read-only connection to a detection database that has `table`, or a one-line
    `ReportError`."""
    path = Path(db)
    if path.is_dir():
        inside = path / "detections.db"  # the name a recorder gives it (storage.database)
        raise ReportError(
            f"--db {path}: is a folder, not a database; "
            + (
                f"the database in it is {inside}: give that"
                if inside.is_file()
                else "give the database file in it (a recorder names it detections.db)"
            )
        )
    if not path.is_file():
        raise ReportError(f"no database at {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if head and head != b"SQLite format 3\x00":
        raise ReportError(f"{path}: not a SQLite database (a recording or another file?)")
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?{_read_mode(path)}", uri=True)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as e:
        if _is_damage(e):
            raise damaged(path, e) from e
        raise ReportError(
            f"{path}: cannot read it ({e}); on a read-only card, copy the database and its "
            "-wal file to a folder you can write and report from there"
        ) from e
    if "detections" not in tables:
        conn.close()
        wal = path.with_name(path.name + "-wal")
        if not tables and not wal.exists():  # SQLite's header alone: all it holds is in a WAL
            raise ReportError(
                f"{path}: holds no tables, and no {wal.name} is beside it: a recorder that "
                f"lost power before its first checkpoint keeps everything in {wal.name}; "
                "if it was copied off the card, copy that file with it"
            )
        raise ReportError(f"{path}: not an AnimalCLAP detection database (no detections table)")
    if table not in tables:
        conn.close()
        raise ReportError(
            f"{path}: has no {table} table (written by an older release); report detections instead"
        )
    return conn


def out_error(out: Path, e: OSError) -> ReportError:
    """One line for an --out that cannot be written, naming a file in a folder's place."""
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                return ReportError(f"--out {out}: {parent} is a file, not a folder")
            break
    return ReportError(f"--out {out}: cannot write it ({e.strerror or e})")


# The paths that name a file descriptor rather than a file: what they point to (a pipe,
# the file a shell opened with > or >>, a socket, a terminal) is already open for us.
_FD_PATH = re.compile(
    r"/dev/std(?P<std>in|out|err)|/dev/fd/(?P<fd>\d+)"
    r"|/proc/(?P<pid>self|thread-self|\d+)(?:/task/\d+)?/fd/(?P<pfd>\d+)"
)
_STD_FD = {"in": 0, "out": 1, "err": 2}


def _fd_path(out: Path) -> tuple[Path, int | None] | None:
    """The hop of `out` (as given, then each link on the way, one at a time) that
    names a file descriptor, and the descriptor's number when it is this process's
    own (None for another process's); None when `out` is no such path. Decided
    before resolving: resolved, /dev/stdout is the pipe or the file it points to."""
    path = os.path.abspath(out)
    for _ in range(40):
        # a link among the folders (/dev/fd -> /proc/self/fd -> /proc/<pid>/fd) resolved
        here = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        for name in (path, here):
            m = _FD_PATH.fullmatch(name)
            if m and m["std"]:
                return Path(name), _STD_FD[m["std"]]
            if m and m["fd"]:
                return Path(name), int(m["fd"])
            if m:
                own = m["pid"] in ("self", "thread-self") or int(m["pid"]) == os.getpid()
                return Path(name), int(m["pfd"]) if own else None
        if not os.path.islink(here):
            return None
        path = os.path.abspath(os.path.join(os.path.dirname(here), os.readlink(here)))
    return None  # a link loop: said by out_target


def out_target(out: str | Path, suffixes: Sequence[str]) -> tuple[Path, bool]:
    """Where writing `out` goes, and whether it is a stream rather than a file; a
    one-line `ReportError` for an `out` that cannot take the report. Checked before
    the database is read.

    A stream is written straight into, whatever its name: a named pipe, a character
    device, a socket, or a path naming a file descriptor (/dev/stdout, /dev/stderr,
    /dev/fd/N, /proc/self/fd/N, /proc/<pid>/fd/N, or a link to one), whatever that
    descriptor points to (a pipe, a file the shell opened with > or >>, a terminal)."""
    given = Path(out)
    fd_path = _fd_path(given)
    if fd_path is not None:
        path, fd = fd_path
        if fd is not None:  # our own: it must be open for writing
            try:
                os.fstat(fd)  # closed: EBADF
                access = os.O_WRONLY if fcntl is None else fcntl.fcntl(fd, fcntl.F_GETFL)
            except OSError as e:
                raise ReportError(f"--out {given}: cannot write it ({e.strerror or e})") from None
            if (access & os.O_ACCMODE) not in (os.O_WRONLY, os.O_RDWR):
                raise ReportError(f"--out {given}: descriptor {fd} is not open for writing")
        return path, True
    try:
        # the target of a link (of every link on the way): a dangling one is created
        target = given.resolve() if given.is_symlink() else given
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except RuntimeError as e:  # a symlink loop
        raise ReportError(f"--out {given}: cannot follow the link ({e})") from None
    except OSError as e:
        raise out_error(given, e) from None
    if (mode is not None and stat.S_ISDIR(mode)) or not target.name:
        raise ReportError(f"--out {given}: is a folder; give a file name, e.g. report{suffixes[0]}")
    if mode is not None and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)):
        return target, True
    if mode is not None and not stat.S_ISREG(mode):
        raise ReportError(f"--out {given}: is neither a file nor a named pipe; give a file name")
    if target.suffix.lower() not in suffixes:
        raise ReportError(
            f"--out {given}: this report is written as {_either(suffixes)}; "
            f"name the file so, e.g. {target.stem}{suffixes[0]}"
        )
    return target, False


def _either(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class _TextArgs(TypedDict, total=False):
    """open's arguments for a text report (none for a binary one)."""

    encoding: str
    newline: str


@contextlib.contextmanager
def open_out(out: str | Path, suffixes: Sequence[str], binary: bool = False) -> Iterator[IO]:
    """`out` opened for writing the report, as the kind of file it is (`out_target`).

    A regular file (or a new path) gets the report whole or not at all: it is written
    to `<out>.part` and renamed over `out` only once complete. A symlink is followed and
    its target written that way, so the link stays a link. A stream (`out_target`) is
    written straight into: renaming a file over a named pipe would replace the pipe and
    leave its reader with nothing, and over the file /dev/stdout points to, drop what
    `>>` had kept. Our own descriptor (/dev/stdout, /dev/fd/N, ...) is written through
    a copy of it, so the file a shell opened with `>>` is appended to, not truncated."""
    target, stream = out_target(out, suffixes)
    wb = "wb" if binary else "w"
    text: _TextArgs = {} if binary else {"encoding": "utf-8", "newline": ""}
    if stream:
        fd_path = _fd_path(Path(out))
        try:
            if fd_path is not None and fd_path[1] is not None:
                sys.stdout.flush()  # what was printed before comes first
                sys.stderr.flush()
                fd = os.dup(fd_path[1])
            else:  # a pipe waits here for its reader; no O_TRUNC: another's >> file
                flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOCTTY", 0)
                fd = os.open(target, flags | getattr(os, "O_BINARY", 0))
            f = os.fdopen(fd, wb, **text)
        except OSError as e:
            raise out_error(Path(out), e) from None
        with f:
            yield f
        return
    part = target.with_name(target.name + ".part")  # a failed report leaves no half file
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        f = part.open(wb, **text)
    except OSError as e:
        raise out_error(Path(out), e) from None
    try:
        with f:
            yield f
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)


def write_report(
    db: str | Path | Sequence[str | Path],
    what: str,
    out: IO[str],
    min_probability: float | None = None,
    taxa: Sequence[str] = (),
    utc_offset_h: LocalTime = None,
    say: Callable[[str], None] = lambda note: None,
    trusted_clock_only: bool = False,
) -> int:
    """Write table `what` (one of WHAT) of `db`, one database or several (the cards of
    several recorders), to `out` as one CSV; returns the rows written. Every row starts
    with the recorder's `device` and `site` (`recorder_columns`). `say` is given what a
    person should know about the selection (`taxon_filter`).

    `min_probability` and `taxa` (taxon codes or scientific names, any case) keep
    the detections (and events, by their highest probability) that match. With
    `utc_offset_h` (hours, or a time zone name: `local_zone`), each time gets a local
    one beside it (`start_time_local`, ...) with the offset of its own instant, and
    summary and effort count local days (`day_local` instead of `day_utc`), each row
    by its own local time. `trusted_clock_only` leaves out the rows whose clock was
    not trusted."""
    zone = local_zone(utc_offset_h)
    if what not in WHAT:
        raise ReportError(f"unknown report {what!r}: choose one of {', '.join(WHAT)}")
    if what in _NOT_DETECTIONS and (min_probability is not None or taxa):
        raise ReportError(
            "--min-probability and --taxon select detections: use them with "
            + _either([*(w for w in WHAT if w not in _NOT_DETECTIONS), "activity"])
        )
    if what in ("runs", "health") and trusted_clock_only:
        raise ReportError(
            f"--trusted-clock selects detections and recordings by their clock; `{what}` "
            "rows are timed by the recorder's own clock as it ran: leave it out"
        )
    dbs = card_paths(db)
    table = {"events": "events", "runs": "runs", "health": "health"}.get(what, "detections")

    @contextlib.contextmanager
    def card(path: Path) -> Iterator[tuple[list[str], Iterator[Sequence[object]]]]:
        """One card's header and rows, its connection open while they are read."""
        conn = open_readonly(path, table)
        try:
            told = card_notes(say, path, len(dbs) > 1)
            if wal_note := missing_wal_note(path, conn):
                say(wal_note)
            if what not in _NOT_DETECTIONS and (aged := retention_note(conn)):
                told(aged)
            header, rows = _table(conn, what, min_probability, taxa, zone, told, trusted_clock_only)
            yield recorder_columns(conn, what, header, _read(path, table, rows))
        except sqlite3.Error as e:
            raise _read_error(path, table, e) from e
        finally:
            conn.close()

    if len(dbs) == 1:
        with card(dbs[0]) as (header, rows):
            return _write_csv(out, header, rows)
    return _cards_in_one_table(dbs, card, out)


def refuse_one_card_twice(dbs: Sequence[Path]) -> None:
    """ReportError where two of `dbs` are one card: the same path, or files that hold
    the same run (a copy, or the card's own detections.db.backup, which a glob such as
    cards/*/detections.db* picks up): each of its rows was counted twice."""
    if len(set(dbs)) < len(dbs):
        twice = next(d for d in dbs if dbs.count(d) > 1)
        raise ReportError(f"--db {twice} is given twice: each card once")
    if len(dbs) < 2:
        return
    seen: dict[str, Path] = {}
    for db in dbs:
        conn = open_readonly(db)
        try:
            runs = [r[0] for r in conn.execute("SELECT run_id FROM runs")]
        except sqlite3.Error as e:
            raise _read_error(db, "runs", e) from e
        finally:
            conn.close()
        for run in runs:
            if run in seen:
                raise ReportError(
                    f"--db {seen[run]} and --db {db} hold the same run ({run[:8]}): one card "
                    "given twice (a copy, or its .backup); give each card once"
                )
            seen[run] = db


def _read(path: Path, table: str, rows: Iterator[Sequence[object]]) -> Iterator[Sequence[object]]:
    """A card's rows, a read error in them named by its card."""
    try:
        yield from rows
    except sqlite3.Error as e:
        raise _read_error(path, table, e) from e


def _cards_in_one_table(dbs: list[Path], card: Callable, out: IO[str]) -> int:
    """The rows of every card under one header, reading one card at a time: a column a
    card lacks (an older release's schema, a bundle without some trait) is left empty
    in its rows. The header is known only when every card has been read, so the rows
    wait in a temporary CSV; holding every card open until then ran into the limit of
    open files at a few hundred cards (three files each, with a -wal). The temporary,
    as large as the report, lies beside a report written to a file, on the disk that
    has to hold the report anyway; TMPDIR may be a RAM disk (tmpfs) of a few GB."""
    name = getattr(out, "name", None)  # a file's path; a stream's is its descriptor
    beside = Path(name).parent if isinstance(name, str) and Path(name).is_file() else None
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="", dir=beside) as spool:
        writer = csv.writer(spool, lineterminator="\n")
        cards = []  # (card's own header, rows it wrote)
        for path in dbs:
            with card(path) as (own, rows):
                n = 0
                for row in rows:
                    writer.writerow(row)
                    n += 1
            cards.append((own, n))
        header = list(dict.fromkeys(c for own, _ in cards for c in own))  # in order, once
        spool.seek(0)
        back = csv.reader(spool)

        def rows() -> Iterator[Sequence[object]]:
            for own, n in cards:
                at = [own.index(c) if c in own else None for c in header]
                for _ in range(n):
                    row = next(back)
                    yield row if own == header else ["" if i is None else row[i] for i in at]

        return _write_csv(out, header, rows())


def _read_error(db: Path, table: str, e: sqlite3.Error) -> ReportError:
    if _is_damage(e):
        return damaged(db, e)
    return ReportError(f"{db}: cannot read the {table} ({e})")


def _table(
    conn: sqlite3.Connection,
    what: str,
    min_probability: float | None,
    taxa: Sequence[str],
    zone: tzinfo | None,
    say: Callable[[str], None],
    trusted_clock_only: bool,
) -> tuple[list[str], Iterator[Sequence[object]]]:
    """The header and rows of report `what` of one database."""
    if what in ("runs", "health"):
        return _log(conn, what, zone)
    # a row whose time came from a file's mtime or an unset clock
    trusted = ["clock_trusted = 1"] if trusted_clock_only else []
    p_col = "max_probability" if what == "events" else "probability"
    clauses, args = detection_filters(p_col, min_probability)
    more, more_args, notes = taxon_filter(conn, taxa)
    for note in notes:
        say(note)
    clauses, args = clauses + more + trusted, args + more_args
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    if what == "effort":
        from animalclap_edge.effort import effort_table

        return effort_table(conn, where, args, zone, trusted_clock_only)
    if what == "summary" and zone is None:
        sql = _SUMMARY.format(
            where=where, day="substr(start_time_utc, 1, 10)", day_column="day_utc"
        )
        cursor = conn.execute(sql, args)
    elif what == "summary" and zone is not None:  # each row's own local day (DST)
        day, _ = local_day_and_hour(conn, zone)
        sql = _SUMMARY.format(where=where, day=day, day_column="day_local")
        cursor = conn.execute(sql, args)
    else:
        cursor = conn.execute(
            f"SELECT {_columns(conn, what)} FROM {what} {where} ORDER BY rowid", args
        )
    header = [d[0] for d in cursor.description]
    rows: Iterator[Sequence[object]] = cursor
    if what == "detections" and "traits_json" in header:
        header, rows = _traits_in_columns(conn, header, cursor)
    return times_in_one_format(what, header, rows, zone)


def _columns(conn: sqlite3.Connection, table: str) -> str:
    """A table's columns for its report: a detection's or an event's are its own,
    without the state of its message (the uplink's, in the row since schema 9)."""
    if table not in ("detections", "events"):
        return "*"
    cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    return ", ".join(c for c in cols if c not in DELIVERY_COLUMNS)


def _log(
    conn: sqlite3.Connection, what: str, zone: tzinfo | None
) -> tuple[list[str], Iterator[Sequence[object]]]:
    """`runs` (each run, whether it finished, and what it logged) or `health` (source
    lost and reopened, disk, temperature, snapshots: detail_json as logged)."""
    if what == "runs":  # a card's database may predate runs.end_reason
        has_end = "end_reason" in runs_columns(conn)
        sql = _RUNS.format(end_reason="u.end_reason" if has_end else "NULL")
    else:
        sql = "SELECT * FROM health ORDER BY health_id"
    cursor = conn.execute(sql)
    header = [d[0] for d in cursor.description]
    return times_in_one_format(what, header, cursor, zone)


# Reports whose rows each belong to one run; the others (summary, effort, health) are
# of the database as a whole.
_PER_RUN = ("detections", "events", "recordings", "runs")


def recorder_columns(
    conn: sqlite3.Connection, what: str, header: list[str], rows: Iterator[Sequence[object]]
) -> tuple[list[str], Iterator[Sequence[object]]]:
    """`device` and `site` first in every row, so that the reports of many cards are one
    table: a row's run's (`runs.device`, `runs.site`: the config's device.name or the
    host name, and device.site), or for summary, effort and health those of every run of
    the database, joined by "|" where they differ. Runs logged before 2026-11-28 (schema
    8) recorded only the host name, which stands for the device, and no site."""
    device, site = recorder_sql(runs_columns(conn))
    runs = {
        r[0]: (r[1], r[2])
        for r in conn.execute(f"SELECT run_id, {device}, {site} FROM runs ORDER BY rowid")
    }
    keep = [i for i, c in enumerate(header) if c not in ("device", "site")]
    columns = ["device", "site", *(header[i] for i in keep)]
    if what in _PER_RUN:
        run_at = header.index("run_id")

        def label(row: Sequence[object]) -> tuple[str, str]:
            return runs.get(row[run_at], ("", ""))
    else:
        whole = tuple("|".join(dict.fromkeys(r[k] for r in runs.values())) for k in (0, 1))

        def label(row: Sequence[object]) -> tuple[str, str]:
            return whole  # type: ignore[return-value]

    def labelled() -> Iterator[Sequence[object]]:
        for row in rows:
            yield [*label(row), *(row[i] for i in keep)]

    return columns, labelled()


def _write_csv(out: IO[str], header: list[str], rows: Iterator[Sequence[object]]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    return n


def utc_ms(value: str) -> str:
    """An ISO 8601 time with its offset, as UTC to the millisecond with the offset
    written out: `2024-05-14T05:30:01.500+00:00`. Raises ValueError for anything else.

    The store writes what the clock gave, `...:00+00:00` for a whole second and
    `...:01.500000+00:00` otherwise; a column with both makes `pandas.to_datetime`
    fail, so a report writes one format (the one `created_utc` is logged in).
    Milliseconds are truncated, as `created_utc`'s are, so a time never moves to the
    next day (which the summary's day would then contradict)."""
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError("no UTC offset")
    return records.utc_ms(t)


# What --utc-offset takes: hours added to UTC (a number, or its text as the command
# line gives it), an IANA time zone name ("Europe/Berlin"), a tzinfo, or None (UTC only).
LocalTime = float | str | tzinfo | None

_ZONE_EXAMPLE = "hours such as 2, -5 or 5.5, or a time zone name such as Europe/Berlin"


def local_zone(utc_offset: LocalTime) -> tzinfo | None:
    """The zone local times are in, from --utc-offset: None for UTC only; hours (a
    number, or text that Python's float() reads, as the option took before) give a
    fixed offset; any other text names an IANA time zone, whose offset (daylight
    saving time or not) each time then gets at its own instant. A one-line
    `ReportError` names a value that is neither."""
    if utc_offset is None or isinstance(utc_offset, tzinfo):
        return utc_offset
    hours: float
    if isinstance(utc_offset, str):
        text = utc_offset.strip()
        try:
            hours = float(text)
        except ValueError:
            return _named_zone(text, utc_offset)
    else:
        hours = float(utc_offset)
    if not -14 <= hours <= 14:
        raise ReportError(f"--utc-offset must be between -14 and 14 hours, got {hours:g}")
    return timezone(timedelta(hours=hours))


def _named_zone(name: str, given: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # not found, not a key, a folder (Europe)
        pass
    known = zoneinfo.available_timezones()
    if not known:
        raise ReportError(
            f"--utc-offset {given!r}: this computer has no time zone database to look the "
            "name up in (pip install tzdata); or give hours, e.g. --utc-offset 2"
        )
    low, lower = name.lower(), {k.lower(): k for k in known}
    close = (
        [lower[low]]  # europe/berlin: names are case-sensitive
        if low in lower
        else sorted(k for k in known if k.lower().rpartition("/")[2] == low)  # Berlin
        or [lower[c] for c in difflib.get_close_matches(low, lower, n=1)]  # Europe/Berln
    )
    hint = f"; did you mean {' or '.join(close[:2])}?" if close else ""
    raise ReportError(
        f"--utc-offset {given!r}: neither hours nor a time zone name known here: give "
        f"{_ZONE_EXAMPLE}{hint}"
    )


def zone_label(zone: tzinfo | None) -> str:
    """How a figure names the zone of its times: UTC, UTC+2 h, Europe/Berlin."""
    if zone is None:
        return "UTC"
    if isinstance(zone, ZoneInfo):
        return zone.key
    offset = zone.utcoffset(None)
    hours = 0.0 if offset is None else offset.total_seconds() / 3600
    return "UTC" if hours == 0 else f"UTC{hours:+g} h"


def local_time(zone: tzinfo, value: object) -> str | None:
    """The local ISO 8601 time in `zone` of a stored UTC time, with the offset that
    zone had at that instant (`2026-10-25T02:30:00+02:00`, an hour later `...+01:00`);
    None where SQLite's strftime gives NULL: no time, or not a time."""
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        return None
    # a time without an offset is UTC, as SQLite's date functions take it
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(zone).isoformat()


def local_day_and_hour(conn: sqlite3.Connection, zone: tzinfo) -> tuple[str, str]:
    """SQL of a detection's local day (YYYY-MM-DD, NULL without a time) and hour of
    day (0-23) in `zone`, each row at its own instant, to group by on `conn`.

    A fixed offset is SQLite's own modifier ('+2.0000 hours'), fast and the same for
    every row. A time zone's offset changes with daylight saving time, which SQLite
    does not know: `conn` gets the SQL function local_time(t) (`local_time`), and a
    season across a change counts each row by the clock of its own day."""
    if isinstance(zone, timezone):
        hours = zone.utcoffset(None).total_seconds() / 3600
        shift = f"'{hours:+.4f} hours'"
        return (
            f"strftime('%Y-%m-%d', start_time_utc, {shift})",
            f"CAST(strftime('%H', start_time_utc, {shift}) AS INTEGER)",
        )

    @functools.lru_cache(maxsize=4096)  # a window's rows, one per label, share a time
    def local(value: object) -> str | None:
        return local_time(zone, value)

    conn.create_function("local_time", 1, local, deterministic=True)
    return (
        "substr(local_time(start_time_utc), 1, 10)",
        "CAST(substr(local_time(start_time_utc), 12, 2) AS INTEGER)",
    )


# The times that get a local one beside them with --utc-offset.
_LOCAL = {
    "start_time_utc": "start_time_local",
    "started_utc": "started_local",
    "finished_utc": "finished_local",
    "time_utc": "time_local",
    "first_utc": "first_local",
    "last_utc": "last_local",
}


def times_in_one_format(
    what: str, header: list[str], rows: Iterator[Sequence[object]], utc_offset_h: LocalTime
) -> tuple[list[str], Iterator[Sequence[object]]]:
    """Every time column (`*_utc`; not the summary's day) through `utc_ms`, and with
    `utc_offset_h` (`local_zone`) a local time after each of `_LOCAL`, in ISO 8601
    with its offset (`2024-05-14T07:30:00.000+02:00`), so the offset travels with the
    value: in a time zone, the offset of that time's own instant (+01:00 in winter)."""
    at = [i for i, c in enumerate(header) if c.endswith("_utc") and not c.startswith("day")]
    zone = local_zone(utc_offset_h)
    local = [i for i in at if zone is not None and header[i] in _LOCAL]
    columns = [c for i, c in enumerate(header) for c in ([c, _LOCAL[c]] if i in local else [c])]

    def convert() -> Iterator[Sequence[object]]:
        for row in rows:
            row = list(row)
            for i in at:
                if row[i] is None:
                    continue
                try:
                    # a str but in a damaged database: fromisoformat's TypeError is caught
                    row[i] = utc_ms(cast(str, row[i]))
                except (TypeError, ValueError) as e:
                    raise ReportError(
                        f"{what} row {row[0]}: {header[i]} {row[i]!r} is not an ISO 8601 time "
                        f"with its UTC offset ({e}); the database may be damaged"
                    ) from None
            for i in reversed(local):  # from the right: the indexes before stay valid
                # None or utc_ms's str: every local column is one of `at`
                t = cast("str | None", row[i])
                row.insert(
                    i + 1,
                    None
                    if t is None
                    else datetime.fromisoformat(t)
                    .astimezone(zone)
                    .isoformat(timespec="milliseconds"),
                )
            yield row

    return columns, convert()


def detection_filters(p_col: str, min_probability: float | None) -> tuple[list[str], list[object]]:
    """SQL conditions (to join with AND) and their parameters for --min-probability;
    `taxon_filter` makes --taxon's, from the labels in the database."""
    clauses: list[str] = []
    args: list[object] = []
    if min_probability is not None:
        if not 0.0 <= min_probability <= 1.0:
            raise ReportError(f"--min-probability must be between 0 and 1, got {min_probability:g}")
        clauses.append(f"{p_col} >= ?")
        args.append(min_probability)
    return clauses, args


def detection_selection(
    conn: sqlite3.Connection,
    db: Path,
    min_probability: float | None,
    taxa: Sequence[str],
    say: Callable[[str], None],
) -> tuple[list[str], list[object]]:
    """SQL conditions on `detections` and their parameters for --min-probability and
    --taxon, after saying the taxon notes and a missing -wal to `say`."""
    clauses, args = detection_filters("probability", min_probability)
    more, more_args, notes = taxon_filter(conn, taxa)
    for note in filter(None, [missing_wal_note(db, conn), retention_note(conn), *notes]):
        say(note)
    return [*clauses, *more], [*args, *more_args]


def clean_taxa(taxa: Sequence[str]) -> list[str]:
    """The --taxon values without the spaces a copy from a spreadsheet brings."""
    names = [t.strip() for t in taxa]
    if any(not n for n in names):
        raise ReportError("--taxon is empty: give a taxon code or scientific name")
    return names


def taxon_filter(
    conn: sqlite3.Connection, taxa: Sequence[str]
) -> tuple[list[str], list[object], list[str]]:
    """SQL conditions and parameters keeping the rows of `taxa` (in detections or
    events), and one note per name that needs one, read against the labels detected.

    A genus keeps its species too: the database records no taxonomy, but a species'
    scientific name starts with its genus. A family, order or class keeps only its
    back-off rows (the database does not say which family a species is in), and says
    so, unless `taxa` is a `TaxonSelection` with a catalogue: then it keeps the
    catalogue's species under it too. A name the database does not hold is said, with
    the closest names it does."""
    from animalclap_edge.taxon_selection import TaxonSelection, place

    if not taxa:
        return [], [], []
    catalogue = taxa.catalogue if isinstance(taxa, TaxonSelection) else None
    source = taxa.source if isinstance(taxa, TaxonSelection) else ""
    known = conn.execute(
        "SELECT DISTINCT level, taxon, scientific_name FROM detections"
    ).fetchall()  # one row per label: at most the catalogue and its higher taxa
    by_lower = {n.lower(): n for _, taxon, sci in known for n in (taxon, sci)}
    parts: list[str] = []
    args: list[object] = []
    notes: list[str] = []
    for name in clean_taxa(taxa):
        low = name.lower()
        placed = place(name, catalogue) if catalogue is not None else None
        if placed is not None and placed.level != "genus":  # a genus: by its binomials
            sql, placed_args = placed.sql()
            parts.append(sql)
            args += placed_args
            mine = {s.lower() for s in placed.species}
            here = sorted({sci for lv, _, sci in known if lv == "species" and sci.lower() in mine})
            notes.append(
                f"--taxon {name}: a{'n' if placed.level == 'order' else ''} {placed.level} "
                f"in {source}, whose {len(placed.species)} species under it are kept with "
                f"the back-off rows of it and the taxa under it; {len(here)} of them in "
                "this database"
                + (f": {', '.join(here[:8])}" if here else "")
                + (", ..." if len(here) > 8 else "")
            )
            continue
        levels = sorted({lv for lv, taxon, sci in known if low in (taxon.lower(), sci.lower())})
        species = sorted(
            {sci for lv, _, sci in known if lv == "species" and sci.lower().startswith(low + " ")}
        )
        if not levels and not species:
            close = [by_lower[c] for c in difflib.get_close_matches(low, by_lower, n=3)]
            higher = (
                "; the database records no taxonomy above the genus, so a family, order or "
                f"class is known only by its back-off rows (unknown {name}), and it holds "
                "none: give its species or genera with --taxon"
                + (
                    f" ({source} has no taxon of that name either)"
                    if catalogue is not None
                    else ", or --catalogue (the bundle or its catalogue CSV) to place it"
                )
                if " " not in name  # one word: a genus it does not hold, or a higher taxon
                else ""
            )
            notes.append(
                f"--taxon {name!r} matches nothing in this database"
                + (f"; close names in it: {', '.join(close)}" if close else "")
                + higher
                + " (`report summary` lists its taxa)"
            )
            continue
        parts.append("lower(taxon) = ? OR lower(scientific_name) = ?")
        args += [low, low]
        if species:
            parts.append("level = 'species' AND substr(lower(scientific_name), 1, ?) = ?")
            args += [len(low) + 1, low + " "]
            notes.append(
                f"--taxon {name}: a genus; its species in this database are kept with its "
                f"back-off rows: {', '.join(species)}"
            )
        above_genus = [lv for lv in levels if lv in ("family", "order", "class")]
        if above_genus:
            notes.append(
                f"--taxon {name}: a {above_genus[0]}; the database does not record which "
                f"{above_genus[0]} a species belongs to, so only its back-off rows (unknown "
                f"{name}) are kept: "
                + (
                    f"{source} does not name it either; name its species with --taxon"
                    if catalogue is not None
                    else "give --catalogue (the bundle or its catalogue CSV) to keep its "
                    "species too, or name them with --taxon"
                )
            )
    # nothing matched: no row (each name was said above)
    return [("(" + " OR ".join(f"({p})" for p in parts) + ")") if parts else "0"], args, notes


def _traits_in_columns(
    conn: sqlite3.Connection,
    header: list[str],
    rows: sqlite3.Cursor,
) -> tuple[list[str], Iterator[list[object]]]:
    """Replace the traits_json column by two per trait: its value(s) and probability.

    The trait columns are the same for every card and every filter, so that the CSVs
    of several cards concatenate: the traits of the schema this release ships, and any
    other trait some detection of the database carries (a bundle with its own
    schema), all in name order. The database does not record a bundle's schema, only
    each detection's traits; taking the names from the rows a filter kept gave an empty
    card 17 columns and a full one 61, and a filter changed which ones appeared."""
    from animalclap_edge.contracts.traits import TraitSchema

    seen = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT j.key FROM detections d, json_each(d.traits_json) j "
            # a damaged row is named when its turn comes, not failed on here
            "WHERE json_valid(d.traits_json) AND json_type(d.traits_json) = 'object'"
        )
    }
    names = sorted(seen | {t.name for t in TraitSchema.default().traits})
    at = header.index("traits_json")
    columns = header[:at] + [c for n in names for c in (n, f"{n}_p")] + header[at + 1 :]

    def flat() -> Iterator[list[object]]:
        for row in rows:
            try:
                cells = _trait_cells(json.loads(row[at] or "{}"), names)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ReportError(
                    f"detection {row[0]}: its traits_json is not what the runtime writes "
                    f"({type(e).__name__}: {e}); the database may be damaged"
                ) from e
            yield [*row[:at], *cells, *row[at + 1 :]]

    return columns, flat()


def _trait_cells(traits: dict, names: list[str]) -> list[object]:
    cells: list[object] = []
    for n in names:
        t = traits.get(n)
        if t is None:
            cells += ["", ""]
        elif "values" in t:  # multi-label: the labels kept, each with its p
            cells += ["|".join(t["values"]), "|".join(str(t["p"][v]) for v in t["values"])]
        else:
            cells += [t["value"], t["p"]]
    return cells
