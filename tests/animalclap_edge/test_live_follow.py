"""The live stream across the database's life: replaced by `run`'s recovery, deleted and
made again, not made yet, or made by an old release. Real servers on loopback, real
SQLite files, real HTTP, as in test_live.py (whose reader this reuses)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from animalclap_edge.cli import main
from animalclap_edge.health import backup_path_for
from animalclap_edge.live import LiveError, LiveServer
from animalclap_edge.recovery import open_store
from animalclap_edge.store import DetectionStore

from .factories import BUNDLE, RUN, insert_record, released_database
from .factories import detection as _det
from .test_live import TOKEN, Stream, _add, _dets, _get, _logged, _run_page, serving
from .waiting import wait_until


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return _new_db(tmp_path / "detections.db")


@pytest.fixture
def server(db: Path):
    with LiveServer(db, port=0, poll_s=0.05, keepalive_s=60) as s:
        yield s


def _new_db(path: Path) -> Path:
    with DetectionStore(path) as s:
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0", "rec-live", "plot-1")
    return path


def _detection_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute("SELECT detection_id FROM detections ORDER BY rowid")]


def _health(port: int) -> tuple[int, dict]:
    status, _, body = _get(port, "/health")
    return status, json.loads(body)


# -- the file at the path replaced ------------------------------------------------


def test_an_open_stream_follows_the_file_that_recovery_puts_in_place(server, db):
    """`run`'s recovery moves the damaged file aside and rebuilds one from the backup:
    the stream kept reading the old file for good (`id: 7`, then only keep-alives)."""
    _add(db, _dets(0, 3))
    with DetectionStore(db) as s:
        s.backup(backup_path_for(db))  # what the health monitor keeps beside it
    s = Stream(server.port)
    try:
        assert s.opening() == 3
        _add(db, _dets(3, 4))
        assert [i for i, _ in s.detections(4)] == [4, 5, 6, 7]
        # damage the file (its last page, past the backup's rows) as a failing card does
        size = db.stat().st_size
        with open(db, "r+b") as f:
            f.seek(size - 4096)
            f.write(b"\xff" * 4096)
        store, recovery = open_store(db, backup_path_for(db))  # what `run` does at start
        assert recovery is not None and ".corrupt-" in recovery.moved_to
        with store:
            store.add_detections(_dets(50, 2))  # the run goes on logging in the new file
        new = _logged(db)
        assert s.block() == {"id": "0"}  # the cursor of the old file means nothing here
        assert s.detections(len(new)) == new  # every row of the new file, from the first
        assert s.nothing_more(0.2)
    finally:
        s.close()


def test_health_forgets_a_database_error_once_the_database_reads_again(server, db):
    _add(db, _dets(0, 3))
    with DetectionStore(db) as s:
        s.backup(backup_path_for(db))
    with open(db, "r+b") as f:  # every page after the first: the tables are garbage
        f.seek(4096)
        f.write(b"\xff" * (db.stat().st_size - 4096))
    status, h = _health(server.port)
    assert status == 503 and "malformed" in h["error"]
    open_store(db, backup_path_for(db))[0].close()
    status, h = _health(server.port)
    assert status == 200 and h["detections"] == 3
    assert h["last_error"] is None  # it said "database: ... malformed" for good


def test_a_deleted_and_recreated_database_is_followed_and_old_ids_replay_it(server, db):
    _add(db, _dets(0, 8))
    s = Stream(server.port, "/events?since=all")
    try:
        assert [i for i, _ in s.detections(8)] == list(range(1, 9))
        last = s.raw_ids[-1]
        assert last == f"8-{_detection_ids(db)[-1][-8:]}"  # rowid, then its id's tail
        for p in db.parent.glob(db.name + "*"):
            p.unlink()
        assert s.block() == {"id": "0"}  # the file is gone: its rows with it
        _new_db(db)
        _add(db, _dets(100, 9))  # other detections, numbered 1-9 again
        assert s.detections(9) == _logged(db)
    finally:
        s.close()
    # a client that was away: its id names row 8 of the old file, which this file's
    # row 8 is not, so it gets this file from the first row instead of rows 9 on
    r = Stream(server.port, headers={"Last-Event-ID": last})
    try:
        assert r.opening() == 0
        assert r.detections(9) == _logged(db)
    finally:
        r.close()
    # the same id in this file resumes after its row; a bare rowid is taken as it is
    for cursor, after in ((r.raw_ids[4], 5), ("8", 8)):
        t = Stream(server.port, headers={"Last-Event-ID": cursor})
        try:
            assert t.opening() == after and t.start_raw == r.raw_ids[after - 1]
            assert t.detections(9 - after) == _logged(db, after=after)
        finally:
            t.close()


def test_rows_deleted_and_logged_again_between_two_polls_are_not_skipped(db):
    """Retention empties the table and new rows take its rowids 1, 2, ... again, all
    before the stream's next poll: `rowid > 5` found only rows 6-10 of the ten."""
    with LiveServer(db, port=0, poll_s=0.5, keepalive_s=60) as server:
        _add(db, _dets(0, 5))
        s = Stream(server.port, "/events?since=all")
        try:
            assert len(s.detections(5)) == 5
            with sqlite3.connect(db) as c:  # one transaction: a poll sees all or nothing
                c.execute("DELETE FROM detections")
                for d in _dets(100, 10):
                    insert_record(c, "detections", d)
                c.execute("UPDATE detections SET queued = 1")  # as the store logs them
            assert s.block() == {"id": "0"}
            assert s.detections(10) == _logged(db)
        finally:
            s.close()


# -- no database yet ----------------------------------------------------------------


def test_a_server_waits_for_the_database_that_run_will_create(tmp_path, capfd):
    db = tmp_path / "card" / "detections.db"  # a fresh card: not even the folder
    with LiveServer(db, port=0, poll_s=0.05, keepalive_s=60) as server:
        err = capfd.readouterr().err
        assert err.count("\n") == 1 and f"no database at {db} yet" in err
        assert "waiting for `animalclap-edge run` to create it" in err
        status, h = _health(server.port)
        assert status == 503 and h["state"] == "waiting" and str(db) in h["error"]
        s = Stream(server.port)
        try:
            assert s.opening() == 0
            assert wait_until(lambda: server.clients == 1) and not db.exists()  # creates nothing
            _new_db(db)
            _add(db, _dets(0, 3))
            assert s.detections(3) == _logged(db)  # logged after the client came
        finally:
            s.close()
        status, h = _health(server.port)
        assert status == 200 and h["state"] == "serving" and h["detections"] == 3
        assert capfd.readouterr().err == ""  # said once


def test_cli_serve_starts_before_the_first_run_and_refuses_a_folder(tmp_path, capsys):
    db = tmp_path / "detections.db"
    with serving(db) as (proc, port):
        assert _health(port)[0] == 503
        _new_db(db)
        assert _health(port)[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        err = proc.stderr.read()
        assert f"live: no database at {db} yet: waiting for `animalclap-edge run`" in err
    # a folder names the database a recorder keeps in it, there or not
    assert main(["serve", "--db", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{tmp_path} is a folder, not a database" in err
    assert f"the database in it is {db}: give that" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LiveError, match=f"a recorder names it {empty / 'detections.db'}"):
        LiveServer(empty, port=0)


# -- a database from before events ------------------------------------------------------


def test_a_database_older_than_events_serves_detections_and_says_why_no_events(tmp_path):
    db = tmp_path / "detections.db"
    c = released_database(db, 1)
    insert_record(c, "detections", _det(0))
    c.commit()
    c.close()
    with LiveServer(db, port=0, poll_s=0.05, keepalive_s=60) as server:
        status, h = _health(server.port)
        assert status == 200 and h["detections"] == 1
        assert h["events"] is None and h["newest_event_id"] is None
        assert "predates merged events" in h["events_note"]
        status, _, body = _get(server.port, "/events?kind=event")
        error = json.loads(body)["error"]
        assert status == 503 and "predates merged events (no events table" in error
        assert "no such table" not in error
        s = Stream(server.port, "/events?since=all")  # its detections stream as ever
        try:
            assert json.loads(s.detections(1)[0][1])["detection_id"] == _det(0).detection_id
        finally:
            s.close()


# -- bad cursors ----------------------------------------------------------------------


def test_a_bad_cursor_is_refused_naming_what_is_accepted(server):
    for path, words in (
        ("/events?since=bogus", "since must be now, all, or a stream id"),
        ("/events?last_event_id=12-x", "Last-Event-ID must be a stream id"),
        ("/events?since=99999999999999999999", "since must be now, all, or a stream id"),
    ):
        status, _, body = _get(server.port, path)
        error = json.loads(body)["error"]
        assert status == 400 and words in error and "1042-3cca4270" in error, error


# -- the page -----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed: runs the page")
def test_the_page_shows_why_the_server_refused_the_stream(db, tmp_path):
    token = tmp_path / "live.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    with LiveServer(db, port=0, poll_s=0.05, max_clients=1, token_file=token) as server:
        page = _get(server.port, f"/?token={TOKEN}")[2].decode()
        script = page.split("<script>")[1].split("</script>")[0]
        base = f"http://127.0.0.1:{server.port}/"
        s = Stream(server.port, f"/events?token={TOKEN}")  # the one client allowed
        try:
            s.opening()
            shown = _run_page(script, f"?token={TOKEN}", "detection", [], base, refuse=True)
            assert shown["state"] == "refused: 503 too many live clients (1) (reload to try again)"
        finally:
            s.close()
        shown = _run_page(script, "?token=wrong", "detection", [], base, refuse=True)
        assert shown["state"] == (
            "refused: 401 a valid token is required (Authorization: Bearer, or ?token=) "
            "(reload to try again)"
        )


def test_the_page_csp_hashes_are_those_of_its_script_and_style(server):
    _, headers, body = _get(server.port, "/")
    page = body.decode()
    script = page.split("<script>")[1].split("</script>")[0]
    style = page.split("<style>")[1].split("</style>")[0]

    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    csp = headers["Content-Security-Policy"]
    assert f"script-src {sha(script)};" in csp and f"style-src {sha(style)};" in csp
    assert "unsafe-inline" not in csp
