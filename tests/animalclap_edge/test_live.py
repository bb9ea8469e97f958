"""The live SSE endpoint, for real: a server on a free loopback port over a database
written by DetectionStore from another thread, read with http.client. Every socket
has a timeout, so a bug fails a test instead of hanging the suite."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from animalclap_edge.cli import main
from animalclap_edge.config import ConfigError, config_from_dict
from animalclap_edge.live import LiveError, LiveListenError, LiveServer
from animalclap_edge.store import DetectionStore

from .factories import BUNDLE, RUN
from .factories import detection as _det
from .waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    p = tmp_path / "detections.db"
    with DetectionStore(p) as s:  # named: the stream's device must be the run's, not the host
        s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0", "rec-live", "plot-1")
    return p


@pytest.fixture
def server(db: Path):
    # keepalive far away: these tests count every block they read
    with LiveServer(db, port=0, poll_s=0.05, keepalive_s=60) as s:
        yield s


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "live.token"
    p.write_text(TOKEN + "\n")
    p.chmod(0o600)
    return p


def _dets(first: int, n: int) -> list:
    return [_det((first + i) * 72_000) for i in range(n)]


def _add(db: Path, dets: list) -> None:
    with DetectionStore(db) as s:
        s.add_detections(dets)


def _logged(db: Path, after: int = 0) -> list[tuple[int, str]]:
    """(rowid, the MQTT message) of every detection after `after`: what a stream must
    carry, byte for byte (the outbox builds its messages as pending_outbox returns them)."""
    with sqlite3.connect(db) as c:
        rows = c.execute(
            "SELECT rowid, detection_id FROM detections WHERE rowid > ? ORDER BY rowid", (after,)
        ).fetchall()
    with DetectionStore(db) as s:
        messages = dict(s.pending_outbox(1_000_000))
    return [(rowid, messages[det_id]) for rowid, det_id in rows]


def _rowid(stream_id: str) -> int:
    """The rowid of a stream id (`1042-3cca4270`, or `0`)."""
    return int(stream_id.partition("-")[0])


class Stream:
    """A minimal event-stream reader over http.client; ids are given as rowids, and
    `raw_ids` keeps each message's id as sent."""

    def __init__(self, port: int, path: str = "/events", headers=None, timeout: float = 5.0):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", path, headers=headers or {})
        self.sock = self.conn.sock  # http.client drops it once the response is read to close
        self.resp = self.conn.getresponse()
        self.start_id: int | None = None  # the bare `id:` every stream opens with
        self.start_raw = ""
        self.raw_ids: list[str] = []
        self.received_at: list[float] = []

    def block(self) -> dict[str, str]:
        """The next message (fields up to a blank line); {} at end of stream."""
        fields: dict[str, str] = {}
        while True:
            line = self.resp.readline()
            if not line:
                return fields
            line = line.decode().rstrip("\n")
            if not line:
                if fields:
                    return fields
                continue
            name, _, value = line.partition(":")
            fields[name or "comment"] = value.removeprefix(" ")

    def detections(
        self, n: int, timeout: float = 10.0, kind: str = "detection"
    ) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            assert time.monotonic() < deadline, f"got {len(out)} of {n} {kind}s"
            b = self.block()
            assert b, f"stream ended after {len(out)} of {n} {kind}s"
            assert b.get("event") in (None, kind), b  # one kind per stream
            if b.get("event") == kind:
                out.append((_rowid(b["id"]), b["data"]))
                self.raw_ids.append(b["id"])
                self.received_at.append(time.perf_counter())
            elif "id" in b and self.start_id is None:
                self.start_raw, self.start_id = b["id"], _rowid(b["id"])
        return out

    def opening(self) -> int:
        """Read the opening block; returns the id the stream starts after."""
        b = self.block()
        assert "retry" in b and "id" in b and "event" not in b, b
        self.start_raw, self.start_id = b["id"], _rowid(b["id"])
        return self.start_id

    def nothing_more(self, wait_s: float = 0.5) -> bool:
        self.sock.settimeout(wait_s)
        try:
            b = self.block()
        except TimeoutError:
            return True
        return not b  # end of stream also means nothing more

    def close(self) -> None:
        self.resp.close()
        self.conn.close()


def _get(port: int, path: str, headers=None) -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


# -- streaming -----------------------------------------------------------------


def test_every_detection_arrives_once_in_order_with_its_rowid_and_outbox_payload(server, db):
    _add(db, _dets(0, 5))  # already there: a new client starts after them (since=now)
    s = Stream(server.port)
    try:
        assert s.opening() == 5
        committed: dict[str, float] = {}

        def writer():
            # batches of 1-5 rows, as the detector writes them, with pauses between
            with DetectionStore(db) as store:
                i = 5
                for size in [1, 3, 5, 2, 4, 1, 5, 5, 3, 2, 4, 1, 3, 5, 2, 4, 5, 1]:
                    batch = _dets(i, size)
                    store.add_detections(batch)
                    now = time.perf_counter()
                    committed.update({d.detection_id: now for d in batch})
                    i += size
                    time.sleep(0.01 * (size % 3))

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        got = s.detections(56)
        t.join(10)
        assert not t.is_alive()
        assert got == _logged(db, after=5)  # ids, order, payload bytes: all equal
        ids = [json.loads(data)["detection_id"] for _, data in got]
        assert len(set(ids)) == 56
        assert s.nothing_more()
        lat = [max(0.0, r - committed[i]) for r, i in zip(s.received_at, ids, strict=True)]
        print(
            f"\ncommit -> receipt over {len(lat)} detections (poll_s 0.05): median "
            f"{statistics.median(lat) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms"
        )
        assert max(lat) < 5.0
    finally:
        s.close()


def test_reconnect_with_last_event_id_gets_exactly_the_missed_ones(server, db):
    s = Stream(server.port)
    s.opening()
    _add(db, _dets(0, 10))
    first = s.detections(10)
    s.close()
    last = first[-1][0]
    _add(db, _dets(10, 15))  # while nobody is connected
    missed = _logged(db, after=last)
    assert len(missed) == 15
    for how in (
        {"headers": {"Last-Event-ID": str(last)}},
        {"path": f"/events?last_event_id={last}"},
    ):
        r = Stream(server.port, **how)
        try:
            assert r.opening() == last
            assert r.detections(15) == missed
            assert r.nothing_more()
        finally:
            r.close()
    # the header wins over the query (EventSource adds it to the URL it was given)
    r = Stream(server.port, "/events?since=all", headers={"Last-Event-ID": str(last + 5)})
    try:
        assert r.detections(10) == missed[5:]
    finally:
        r.close()


def test_a_stream_resumes_where_it_opened_even_if_nothing_arrived(server, db):
    _add(db, _dets(0, 3))
    s = Stream(server.port)
    start = s.opening()
    s.close()
    _add(db, _dets(3, 4))  # logged between the disconnect and the reconnect
    r = Stream(server.port, headers={"Last-Event-ID": str(start)})
    try:
        assert r.detections(4) == _logged(db, after=3)
    finally:
        r.close()


def test_since_all_and_since_a_rowid_and_bad_cursors(server, db):
    _add(db, _dets(0, 8))
    for path, after in (("/events?since=all", 0), ("/events?since=6", 6)):
        s = Stream(server.port, path)
        try:
            assert s.detections(8 - after) == _logged(db, after=after)
        finally:
            s.close()
    # a cursor beyond the newest row (a renumbering VACUUM) means "now", not a stall
    s = Stream(server.port, headers={"Last-Event-ID": "999"})
    try:
        assert s.opening() == 8
        _add(db, _dets(8, 1))
        assert s.detections(1) == _logged(db, after=8)
    finally:
        s.close()
    for bad in ("/events?since=yesterday", "/events?last_event_id=-3"):
        status, _, body = _get(server.port, bad)
        assert status == 400 and "stream id" in json.loads(body)["error"]


def test_kind_event_streams_the_merged_events_with_their_mqtt_payload(server, db):
    """A dashboard of song bouts, not windows: `?kind=event` carries the events table,
    with its own rowids as ids and the payload MQTT sends on .../events."""
    from .factories import event as _event

    _add(db, _dets(0, 4))
    with DetectionStore(db) as st:
        st.add_events([_event(0, 2), _event(0, 3, taxon="comfro")])

    def logged_events(after: int) -> list[tuple[int, str]]:
        with DetectionStore(db) as st:
            messages = dict(st.pending_outbox(1000))
        with sqlite3.connect(db) as c:
            rows = c.execute("SELECT rowid, event_id FROM events WHERE rowid > ?", (after,))
            return [(rowid, messages[i]) for rowid, i in rows.fetchall()]

    s = Stream(server.port, "/events?kind=event&since=all")
    try:
        assert s.detections(2, kind="event") == logged_events(0)
        _add(db, _dets(4, 3))  # detections are not this stream's
        with DetectionStore(db) as st:
            st.add_events([_event(288_000, 2)])
        assert s.detections(1, kind="event") == logged_events(2)
        assert json.loads(logged_events(2)[0][1])["device"] == "rec-live"
        assert s.nothing_more()
    finally:
        s.close()
    status, _, body = _get(server.port, "/events?kind=bout")
    assert status == 400 and "kind must be detection or event" in json.loads(body)["error"]


def test_an_open_stream_follows_retention_emptying_the_table(server, db):
    s = Stream(server.port)
    try:
        s.opening()
        _add(db, _dets(0, 5))
        assert [i for i, _ in s.detections(5)] == [1, 2, 3, 4, 5]
        with sqlite3.connect(db) as c:  # what retention does when everything expired
            c.execute("PRAGMA foreign_keys = ON")
            c.execute("DELETE FROM detections")
        assert s.block() == {"id": "0"}  # the cursor follows, so a reconnect resumes right
        _add(db, _dets(100, 3))  # SQLite numbers these 1, 2, 3 again
        assert s.detections(3) == _logged(db) and [i for i, _ in _logged(db)] == [1, 2, 3]
    finally:
        s.close()


def test_a_client_that_disconnects_does_not_break_the_others(server, db):
    a, b = Stream(server.port), Stream(server.port)
    try:
        a.opening(), b.opening()
        assert wait_until(lambda: server.clients == 2)
        _add(db, _dets(0, 3))
        assert a.detections(3) == b.detections(3) == _logged(db)
        a.sock.shutdown(2)  # abruptly, mid-stream
        a.close()
        assert wait_until(lambda: server.clients == 1, 3.0), "the server kept the closed stream"
        _add(db, _dets(3, 20))
        assert b.detections(20) == _logged(db, after=3)
        c = Stream(server.port, headers={"Last-Event-ID": "0"})
        try:
            assert c.detections(23) == _logged(db)  # the replay from the start
        finally:
            c.close()
    finally:
        b.close()


def _blocked_in_send(server: LiveServer) -> bool:
    frames = sys._current_frames()
    for thread in list(server._conns.values()):
        stack = traceback.extract_stack(frames[thread.ident]) if thread.ident in frames else []
        if any(f.name == "_stream" for f in stack) and stack[-1].name in ("write", "sendall"):
            return True
    return False


def test_stop_returns_promptly_and_closes_every_client(db):
    before = threading.active_count()
    server = LiveServer(db, port=0, poll_s=0.25, keepalive_s=60).start()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    idle.connect()  # connected, request never sent: a handler waits on it
    streams = [Stream(server.port) for _ in range(3)]
    for s in streams:
        s.opening()
    assert wait_until(lambda: server.clients == 3)
    # Small send buffers: the streams nobody reads block in a send, the hardest case.
    for sock in list(server._conns):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    _add(db, _dets(0, 2000))
    assert wait_until(lambda: _blocked_in_send(server)), "no stream got stuck in a send"
    t0 = time.monotonic()
    server.stop()
    took = time.monotonic() - t0
    assert took < 2.0, f"stop() took {took:.2f} s"
    for s in streams:  # each sees its stream end (after what was already in flight)
        s.sock.settimeout(5)
        while s.block():
            pass
        s.close()
    idle.close()
    assert server.clients == 0 and not server._conns
    assert wait_until(lambda: threading.active_count() <= before, 2.0), threading.enumerate()
    server.stop()  # twice is harmless


def test_a_stop_right_after_the_last_commit_still_sends_it(db):
    """A run commits its last batch a few ms before it stops its live server; with a
    0.25 s poll the streams ended before polling again, and clients missed it (a
    dashboard walkthrough: 21 of 477 detections, until it reconnected)."""
    server = LiveServer(db, port=0, poll_s=0.25, keepalive_s=60).start()
    try:
        stream = Stream(server.port)
        stream.opening()
        assert wait_until(lambda: server.clients == 1)
        _add(db, _dets(0, 3))
        assert len(stream.detections(3)) == 3  # the stream is polling
        time.sleep(0.05)  # inside its 0.25 s wait for the client
        _add(db, _dets(3, 2))
        server.stop()
        got = stream.detections(2, timeout=5)
        assert [d for _, d in got] == [d for _, d in _logged(db)[3:]]
        assert stream.block() == {}  # and then the stream ends
        stream.close()
    finally:
        server.stop()


def test_too_many_clients_get_503(db):
    with LiveServer(db, port=0, poll_s=0.05, max_clients=1) as server:
        s = Stream(server.port)
        try:
            s.opening()
            status, _, body = _get(server.port, "/events")
            assert status == 503 and "too many" in json.loads(body)["error"]
        finally:
            s.close()


# -- health and the page ---------------------------------------------------------


def test_health(server, db):
    status, headers, body = _get(server.port, "/health")
    h = json.loads(body)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert h["database"] == str(db) and h["detections"] == 0 and h["newest_id"] is None
    assert h["clients"] == 0 and h["token_required"] is False
    _add(db, _dets(0, 4))
    s = Stream(server.port)
    try:
        s.opening()
        h = json.loads(_get(server.port, "/health")[2])
        assert h["detections"] == 4 and h["newest_id"] == 4 and h["clients"] == 1
        assert h["newest_created_utc"] == "2024-05-01T04:00:00.000+00:00"
        assert h["events"] == 0 and h["newest_event_id"] is None
        from .factories import event as _event

        with DetectionStore(db) as st:
            st.add_events([_event(0, 2), _event(0, 2, taxon="comfro")])
        h = json.loads(_get(server.port, "/health")[2])
        assert h["events"] == 2 and h["newest_event_id"] == 2 and h["detections"] == 4
    finally:
        s.close()
    assert _get(server.port, "/nope")[0] == 404


def test_page_is_self_contained(server):
    status, headers, body = _get(server.port, "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "new EventSource(" in page and "http" not in page.split("<script>")[1]
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"


# The page's script under node, with the few DOM calls it makes recorded and an
# EventSource that records its URL; the messages given are dispatched to its listener.
# With `refuse`, the EventSource fails as on an HTTP error, and the page's fetch goes to
# the real server at `base`; the state line is shown once the page has its answer.
_PAGE_HARNESS = r"""
const vm = require("vm");
const [script, search, kind, messages, base, refuse] =
  JSON.parse(require("fs").readFileSync(0, "utf8"));
const byId = {};
const el = (tag) => ({
  tag, children: [], textContent: "", href: "",
  appendChild(c) { this.children.push(c); },
  prepend(c) { this.children.unshift(c); },
  get rows() { return this.children; },
  deleteRow(i) { this.children.splice(i, 1); },
});
class FakeEventSource {
  constructor(url) { this.url = url; this.on = {}; this.readyState = 1; FakeEventSource.last = this; }
  addEventListener(k, f) { this.on[k] = f; }
}
FakeEventSource.CLOSED = 2;
const document = { getElementById: (id) => (byId[id] ||= el(id)), createElement: el };
vm.runInNewContext(script, {
  document, location: { search }, EventSource: FakeEventSource, URLSearchParams,
  AbortController, fetch: (url, options) => fetch(new URL(url, base), options),
});
const es = FakeEventSource.last;
for (const [id, data] of messages) es.on[kind]({ lastEventId: String(id), data });
const text = (e) => e.children.map((c) => String(c.textContent));
const show = () => console.log(JSON.stringify({
  url: es.url, listens: Object.keys(es.on), title: byId.title.textContent,
  heads: text(byId.head), rows: byId.rows.children.map(text), other: byId.other.href,
  state: byId.state.textContent,
}));
if (!refuse) {
  show();
} else {
  es.readyState = FakeEventSource.CLOSED;
  es.onerror();
  const until = Date.now() + 5000;
  const wait = () => byId.state.textContent.includes("asking") && Date.now() < until
    ? setTimeout(wait, 10) : show();
  wait();
}
"""


def _run_page(script: str, search: str, kind: str, messages, base: str = "", refuse=False):
    feed = json.dumps([script, search, kind, messages, base, refuse])
    out = subprocess.run(["node", "-e", _PAGE_HARNESS], input=feed, capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed: runs the page")
@pytest.mark.parametrize("kind", ["detection", "event"])
def test_the_page_shows_the_stream_it_asks_for(server, db, kind):
    """The page (`/`, or `/?kind=event` for the merged events) opens the stream of its
    kind, keeping the token, and shows each message as a row, newest first, its time
    marked when the recorder's clock was not trusted."""
    from .factories import event as _event

    trusted = {"clock_trusted": True, "start_time_utc": "2024-05-01T03:59:58.500+00:00"}
    _add(db, [_det(0, **trusted), _det(72_000)])
    with DetectionStore(db) as st:
        st.add_events([_event(0, 2, **trusted), _event(0, 3, taxon="comfro")])
    page = _get(server.port, "/")[2].decode()
    script = page.split("<script>")[1].split("</script>")[0]
    s = Stream(server.port, f"/events?kind={kind}&since=all")
    try:
        messages = s.detections(2, kind=kind)
    finally:
        s.close()
    search = f"?kind={kind}&token=t0k" if kind == "event" else "?token=t0k"
    sent = [[raw, data] for raw, (_, data) in zip(s.raw_ids, messages, strict=True)]
    shown = _run_page(script, search, kind, sent)
    assert shown["url"] == f"events?kind={kind}&token=t0k" and shown["listens"] == [kind]
    assert len(shown["rows"]) == 2 and all(len(r) == len(shown["heads"]) for r in shown["rows"])
    newest = json.loads(messages[-1][1])
    if kind == "event":
        assert shown["title"] == "Live events" and "windows" in shown["heads"]
        assert shown["rows"][0][:6] == [str(messages[-1][0]),
                                        newest["created_utc"] + " (clock not trusted)",
                                        "Eurasian Blackbird", "Turdus merula", "species", "3"]  # fmt: skip
        assert shown["rows"][0][-1] == "0.0-6.0 s"
        assert shown["other"] == "?kind=detection&token=t0k"
    else:
        assert shown["title"] == "Live detections" and shown["heads"][5] == "p"
        assert shown["rows"][0][5] == f"{newest['probability']:.2f}"
        assert shown["rows"][0][:2] == ["2", newest["created_utc"] + " (clock not trusted)"]
        assert shown["rows"][0][-1] == "1.5-4.5 s"
        assert shown["other"] == "?kind=event&token=t0k"
    assert shown["rows"][1][:2] == ["1", trusted["start_time_utc"]]  # trusted: no mark


# -- security --------------------------------------------------------------------


def test_token_required_and_wrong_token_gets_401(db, token_file):
    with LiveServer(db, port=0, poll_s=0.05, token_file=token_file) as server:
        p = server.port
        for path in ("/", "/health", "/events", "/nope"):
            status, headers, _ = _get(p, path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
        assert _get(p, "/health", {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
        assert _get(p, "/health", {"Authorization": f"Basic {TOKEN}"})[0] == 401
        assert _get(p, "/health?token=wrong")[0] == 401
        assert _get(p, f"/health?token={TOKEN}x")[0] == 401
        assert _get(p, "/health?token=%C3%A9")[0] == 401  # non-ASCII: refused, not a crash
        assert _get(p, "/health", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert _get(p, "/health", {"Authorization": f"bearer {TOKEN}"})[0] == 200
        assert json.loads(_get(p, f"/health?token={TOKEN}")[2])["token_required"] is True
        # EventSource cannot set headers: the query token opens a stream
        s = Stream(p, f"/events?token={TOKEN}")
        try:
            s.opening()
            _add(db, _dets(0, 2))
            assert s.detections(2) == _logged(db)
        finally:
            s.close()
        # with a token the Host header is not restricted (it is exposed on purpose)
        assert _get(p, "/health", {"Authorization": f"Bearer {TOKEN}", "Host": "rec.lan"})[0] == 200


def test_without_a_token_the_host_header_must_be_loopback(server):
    # DNS rebinding: a web page whose name now resolves to 127.0.0.1 sends its own Host
    assert _get(server.port, "/health", {"Host": "evil.example:8765"})[0] == 403
    for host in ("localhost:8765", "127.0.0.1", "[::1]:8765", "LOCALHOST"):
        assert _get(server.port, "/health", {"Host": host})[0] == 200, host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "recorder.lan"])
def test_non_loopback_bind_without_token_is_refused(db, host):
    with pytest.raises(LiveError) as ei:
        LiveServer(db, host=host, port=0)
    msg = str(ei.value)
    assert "\n" not in msg and "token" in msg and "127.0.0.1" in msg


def test_non_loopback_bind_with_token_is_accepted(db, token_file):
    s = LiveServer(db, host="0.0.0.0", port=0, token_file=token_file)
    assert s.token_required  # not started: the test does not expose anything


def test_config_refuses_exposed_host_without_token_file():
    with pytest.raises(ConfigError) as ei:
        config_from_dict({"messaging": {"live": {"host": "0.0.0.0"}}}, "edge.yaml")
    assert ei.value.problems == [
        "edge.yaml: messaging.live: host '0.0.0.0' is not a loopback address: set "
        "token_file (a file only its owner can read) or use host 127.0.0.1"
    ]
    ok = config_from_dict({"messaging": {"live": {"host": "0.0.0.0", "token_file": "/t"}}})
    assert ok.messaging.live.port == 8765 and ok.messaging.live.poll_s == 0.25


def test_token_file_problems_are_one_line_each(db, tmp_path):
    def refused(path) -> str:
        with pytest.raises(LiveError) as ei:
            LiveServer(db, port=0, token_file=path)
        assert "\n" not in str(ei.value)
        return str(ei.value)

    assert "no such file" in refused(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    assert "is empty" in refused(empty)
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    assert "fewer than 16" in refused(short)
    for i, bad in enumerate(["two words but long enough", "base64+with/slash=", "é" * 20]):
        f = tmp_path / f"bad{i}"
        f.write_text(bad + "\n")
        f.chmod(0o600)
        assert "only letters, digits and - _ . ~" in refused(f), bad
    shared = tmp_path / "shared"
    shared.write_text(TOKEN)
    shared.chmod(0o644)
    assert f"chmod 600 {shared}" in refused(shared)
    assert "not a regular file" in refused(tmp_path)


def test_database_must_be_a_detection_database(tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(LiveError, match="not a detection database"):
        LiveServer(other, port=0)


def test_a_database_that_went_away_is_a_503_not_a_dropped_connection(server, db):
    for p in db.parent.glob(db.name + "*"):
        p.unlink()
    status, _, body = _get(server.port, "/health")
    assert status == 503 and "no database at" in json.loads(body)["error"]
    s = Stream(server.port)  # a stream waits for the next one
    try:
        assert s.opening() == 0 and s.nothing_more(0.2)
    finally:
        s.close()
    assert not db.exists()  # and it was not created again


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_the_stream_never_writes_to_the_database(server, db):
    _add(db, _dets(0, 3))
    before = _dump(db)
    s = Stream(server.port, "/events?since=all")
    try:
        s.detections(3)
        _get(server.port, "/health")
    finally:
        s.close()
    assert _dump(db) == before  # every table, row and schema object, as it was
    # and the server's connections could not have written: they are readers
    conn = server._connect()
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute(
                "INSERT INTO health (time_utc, kind, source, detail_json) VALUES ('t', 'k', 's', '{}')"
            )
    finally:
        conn.close()


# -- CLI -------------------------------------------------------------------------


@contextlib.contextmanager
def serving(db: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """`animalclap-edge serve --db DB` on a free port: the process and the port it
    printed; killed on the way out if it is still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "animalclap_edge", "serve", "--db", str(db), "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "serve printed nothing"
        line = proc.stdout.readline()
        assert line.startswith("live: http://127.0.0.1:"), line
        yield proc, int(line.split("http://127.0.0.1:")[1].split("/")[0])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_serve_prints_the_url_serves_and_stops_cleanly(db, sig):
    with serving(db) as (proc, port):
        s = Stream(port)
        s.opening()
        status, _, body = _get(port, "/health")
        assert status == 200 and json.loads(body)["clients"] == 1
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        assert "live: stopped" in proc.stderr.read()
        s.close()


def test_cli_serve_refuses_an_exposed_address_without_a_token(db, tmp_path, capsys):
    assert main(["serve", "--db", str(db), "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("animalclap-edge: error: live: refusing to listen on 0.0.0.0")
    assert "\n" not in err
    loose = tmp_path / "t"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    assert main(["serve", "--db", str(db), "--token-file", str(loose), "--port", "0"]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_a_taken_port_leaves_the_recorder_recording(tiny_bundle, realaudio, tmp_path, capsys):
    """`serve` on the same port, or any other program: the live view is optional, so
    `run` says why it is missing and records, instead of recording nothing."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        cfg = tmp_path / "edge.yaml"
        cfg.write_text(f"messaging:\n  live:\n    enabled: true\n    port: {port}\n")
        clip = next(iter(sorted(realaudio.glob("srkw*.wav"))))
        db = tmp_path / "d.db"
        argv = ["run", "--bundle", str(tiny_bundle), "--source", str(clip), "--db", str(db)]
        assert main([*argv, "--config", str(cfg), "--quiet"]) == 0
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert f"WARNING: live: cannot listen on 127.0.0.1:{port}" in err
    assert "recording goes on without the live view" in err
    with DetectionStore(db) as s:
        assert [r.status for r in s.recordings()] == ["ok"]
        assert "live_unavailable" in [h["kind"] for h in s.health()]


# -- pages of other origins (CORS) ---------------------------------------------


def _options(port: int, path: str, origin: str) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(
            "OPTIONS",
            path,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        r = c.getresponse()
        r.read()
        return r.status, dict(r.getheaders())
    finally:
        c.close()


def test_a_dashboard_of_a_named_origin_may_read_the_stream_and_no_other_page(db, token_file):
    """A web dashboard served from elsewhere could not read the stream at all: the
    browser drops a cross-origin response without Access-Control-Allow-Origin."""
    dash, other = "https://dashboard.example.org", "https://evil.example"
    with LiveServer(db, port=0, poll_s=0.05, token_file=token_file, cors_origins=[dash]) as s:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, headers, _ = _get(s.port, "/health", {**auth, "Origin": dash})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == dash
        assert headers["Vary"] == "Origin"
        status, headers, _ = _get(s.port, "/health", {**auth, "Origin": other})
        assert status == 200 and "Access-Control-Allow-Origin" not in headers
        # the preflight of fetch() with Authorization: answered for the named origin only
        status, headers = _options(s.port, "/events", dash)
        assert status == 204 and headers["Access-Control-Allow-Origin"] == dash
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        assert _options(s.port, "/events", other)[0] == 403
        # EventSource from the dashboard (token in the query): the stream carries the header
        stream = Stream(s.port, f"/events?token={TOKEN}", {"Origin": dash})
        try:
            assert stream.resp.getheader("Access-Control-Allow-Origin") == dash
            stream.opening()
            _add(db, _dets(0, 1))
            assert stream.detections(1) == _logged(db)
        finally:
            stream.close()


def test_any_origin_needs_a_token():
    """'*' without a token: any page the recorder's user visits could read where the
    rare species are, from 127.0.0.1."""
    with pytest.raises(ConfigError) as ei:
        config_from_dict({"messaging": {"live": {"cors_origins": ["*"]}}}, "edge.yaml")
    assert "cors_origins '*' lets any web page read the stream: set token_file" in str(ei.value)
    with pytest.raises(ConfigError) as ei:  # every wrong origin named, not the first alone
        config_from_dict(
            {"messaging": {"live": {"cors_origins": ["https://a.org/dash/", "localhost:3000"]}}}
        )
    assert [line.split(": ")[1] for line in str(ei.value).splitlines()] == [
        "messaging.live.cors_origins[0]",
        "messaging.live.cors_origins[1]",
    ]
    assert "is not an origin: write scheme://host" in str(ei.value)
    ok = {"cors_origins": ["*", "http://[::1]:3000"], "token_file": "/t"}
    assert config_from_dict({"messaging": {"live": ok}}).messaging.live.cors_origins[0] == "*"


def test_a_server_refuses_any_origin_without_a_token(db):
    with pytest.raises(LiveError, match="cors_origins '\\*' without a token"):
        LiveServer(db, port=0, cors_origins=["*"])


# -- clients that misbehave ------------------------------------------------------


def _closed_by_server(sock: socket.socket, wait_s: float) -> bool:
    """Whether the server closed `sock` (EOF or reset) within wait_s; reads what came."""
    sock.settimeout(wait_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def _raw(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    """What the server answers to `data`, sent as is, until it closes the connection."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                out += chunk
    return out


@pytest.mark.timeout(60)
def test_a_request_must_arrive_whole_within_the_socket_timeout(db):
    """A client that sends a header byte every 0.2 s reset a per-recv timeout each time,
    and held its thread for as long as it went on (1,000 of them: 168 threads)."""
    with LiveServer(db, port=0, poll_s=0.05, socket_timeout_s=1.0) as server:
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            closed_at = None
            while closed_at is None and time.monotonic() - t0 < 6.0:
                try:
                    sock.sendall(b"a")
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = time.monotonic()
                    break
                if _closed_by_server(sock, 0.2):
                    closed_at = time.monotonic()
        assert closed_at is not None, "the trickling client was never dropped"
        assert closed_at - t0 < 3.0, f"dropped after {closed_at - t0:.1f} s, not about 1 s"
        assert wait_until(lambda: not server._conns, 2.0), "its thread is still held"
        # a client that sends nothing is dropped as before
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            t0 = time.monotonic()
            assert _closed_by_server(sock, 4.0) and time.monotonic() - t0 < 3.0
        assert _get(server.port, "/health")[0] == 200  # and a brisk one is served


@pytest.mark.timeout(60)
def test_connections_beyond_the_cap_are_refused_at_once_without_a_thread(db):
    with LiveServer(db, port=0, poll_s=0.05, keepalive_s=60, max_requests=4) as server:
        streams = [Stream(server.port) for _ in range(2)]  # streams have their own cap
        idle: list[socket.socket] = []
        try:
            for s in streams:
                s.opening()
            for _ in range(4):
                idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            assert wait_until(lambda: len(server._conns) == 6)
            threads = threading.active_count()
            for _ in range(10):
                t0 = time.monotonic()
                answer = _raw(server.port, b"GET /health HTTP/1.0\r\n\r\n")
                assert time.monotonic() - t0 < 1.0
                # the 503, unless the close overtook the request (then a reset)
                assert answer == b"" or answer.startswith(b"HTTP/1.0 503 "), answer[:200]
                if answer:
                    assert b'"too many connections (4)"' in answer
            assert threading.active_count() <= threads, "a refused connection got a thread"
            idle.pop().close()
            assert wait_until(lambda: len(server._conns) == 5)
            assert _get(server.port, "/health")[0] == 200
            _add(db, _dets(0, 1))
            assert [s.detections(1) for s in streams] == [_logged(db)] * 2
        finally:
            for sock in idle:
                sock.close()
            for s in streams:
                s.close()


@pytest.mark.timeout(60)
def test_the_listen_backlog_holds_a_burst_of_connections(server):
    """With socketserver's backlog of 5, 100 clients connecting at once to /health got
    24 timeouts: the kernel drops the SYNs beyond the queue, and clients retry 1 s later.
    With the accepting thread held up, the kernel completes the queue's connections."""
    server._httpd.shutdown()  # no accept() from now on: connections queue in the kernel
    clients = [socket.socket() for _ in range(70)]
    try:
        for c in clients:
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", server.port))
        time.sleep(0.3)  # far below the 1 s before a dropped SYN is sent again
        _, writable, _ = select.select([], clients, [], 0)
        done = [c for c in writable if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
        assert len(done) >= 64, f"{len(done)} of 70 connected"
    finally:
        for c in clients:
            c.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /health HTTP/x.y\r\n\r\n", 400),
        (b"GET /health HTTP/2.0\r\n\r\n", 505),
        (b"GET /" + b"a" * (65537 - 5), 414),  # exactly what the server reads: no reset
        (b"GET /health HTTP/1.0\r\n" + b"X-A: b\r\n" * 101, 431),
        (b"GET /health HTTP/1.0\r\nX-A: " + b"b" * 65537, 431),
        (b"GET http://[oops/health HTTP/1.0\r\n\r\n", 400),  # urlsplit: ValueError
    ],
    ids=["garbage", "bad-version", "http2", "long-url", "101-headers", "long-header", "bad-url"],
)
def test_a_malformed_request_gets_its_status_and_cannot_set_last_error(
    db, token_file, capsys, request_bytes, status
):
    """The replies to a request refused before its headers were read crashed on the
    missing headers (AttributeError), so the client got no answer, and an unauthenticated
    client wrote the server's last_error (shown by /health) and its stderr."""
    with LiveServer(db, port=0, poll_s=0.05, token_file=token_file) as server:
        answer = _raw(server.port, request_bytes)
        assert answer.startswith(f"HTTP/1.0 {status} ".encode()), answer[:200]
        assert server.last_error == ""
        health = json.loads(_get(server.port, "/health", {"Authorization": f"Bearer {TOKEN}"})[2])
        assert health["last_error"] is None
    assert capsys.readouterr().err == ""


def _resolving(monkeypatch, name: str, address: str) -> None:
    """`name` resolves to `address`, as a resolver answering it would (the one stand-in:
    no test can make a real resolver answer a LAN address)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real(address if host == name else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.timeout(60)
def test_a_localhost_name_is_listened_on_without_a_token_only_where_it_is_loopback(
    db, token_file, monkeypatch
):
    """*.localhost passes as loopback by its name, so no token was needed; but binding
    resolved the name again, and a resolver answering a LAN address exposed the stream."""
    _resolving(monkeypatch, "rec.localhost", "192.0.2.7")
    # LiveListenError: `run` goes on recording without its live view, as for a taken port
    with pytest.raises(LiveListenError, match=r"resolves to 192\.0\.2\.7, not a loopback"):
        LiveServer(db, host="rec.localhost", port=0).start()
    # the address checked is the one bound: here a loopback one, other than 127.0.0.1
    _resolving(monkeypatch, "rec.localhost", "127.0.0.2")
    with LiveServer(db, host="rec.localhost", port=0) as server:
        assert server._httpd.server_address[0] == "127.0.0.2"
        answer = _raw(
            server.port, b"GET /health HTTP/1.0\r\nHost: rec.localhost\r\n\r\n", "127.0.0.2"
        )
        assert answer.startswith(b"HTTP/1.0 200 ")
    # with a token the name may resolve anywhere: it is exposed on purpose
    _resolving(monkeypatch, "rec.localhost", "127.0.0.3")
    with LiveServer(db, host="rec.localhost", port=0, token_file=token_file) as server:
        assert server._httpd.server_address[0] == "127.0.0.3"
