"""The HTTP uplink against a real HTTP(S) server on a free loopback port (the standard
library's ThreadingHTTPServer), which answers as a test tells it: every logged message
must arrive by id, a bad one must be set aside alone, and a server fault must set
nothing aside."""

from __future__ import annotations

import contextlib
import io
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from animalclap_edge.config import ConfigError, HttpConfig, config_from_dict
from animalclap_edge.publish_http import HttpPublisher
from animalclap_edge.store import DetectionStore
from animalclap_edge.uplink import PublishError

from .factories import detection as _det
from .factories import event as _event
from .test_publish_tls import pki  # noqa: F401  (the CA, server and client certificates)
from .waiting import wait_until

# (kind, messages, headers) -> (status, extra headers); None: 200
Answerer = Callable[[str, list[dict], dict[str, str]], tuple[int, dict[str, str]] | None]


class Server:
    """A real HTTP server on 127.0.0.1 that keeps every POST it accepted."""

    def __init__(
        self, answer: Answerer | None = None, tls: ssl.SSLContext | None = None, port: int = 0
    ):
        self.answer = answer or (lambda kind, messages, headers: None)
        self.posts: list[tuple[str, list[dict], dict[str, str]]] = []  # accepted ones
        self.refused = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                said = server.answer(body["kind"], body["messages"], headers)
                status, extra = said or (200, {})
                if status < 300:
                    server.posts.append((body["kind"], body["messages"], headers))
                else:
                    server.refused += 1
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/ingest"

    def ids(self, kind: str = "detections") -> list[str]:
        key = "event_id" if kind == "events" else "detection_id"
        return [m[key] for k, msgs, _ in self.posts if k == kind for m in msgs]

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def sending(db: Path, url: str, **cfg) -> Iterator[tuple[HttpPublisher, list[str]]]:
    """A started HTTP publisher for `db`, and the lines it said; stopped after."""
    said: list[str] = []
    pub = HttpPublisher(
        db,
        HttpConfig(enabled=True, url=url, **cfg),
        device_id="rec-7",
        poll_s=0.05,
        max_backoff_s=0.2,
        say=said.append,
    ).start()
    try:
        yield pub, said
    finally:
        pub.stop()


def _logged(db: Path, detections: int, events: int = 0) -> list[str]:
    dets = [_det(i * 72_000) for i in range(detections)]
    with DetectionStore(db) as store:
        store.start_run("run-a", "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        store.add_detections(dets)
        store.add_events([_event(i * 720_000) for i in range(events)])
    return [d.detection_id for d in dets]


def _health(db: Path, kind: str) -> list[dict]:
    with DetectionStore(db) as store:
        return [r for r in store.health(0, 1000) if r["kind"] == kind]


@pytest.mark.timeout(60)
def test_every_message_arrives_by_id_in_batches_of_its_kind_with_the_token(tmp_path):
    db = tmp_path / "d.db"
    ids = _logged(db, 120, events=3)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    with Server() as server, sending(db, server.url, batch=50, token_file=str(token)) as (pub, _):
        assert wait_until(lambda: pub.backlog() == 0, 20)
        assert wait_until(lambda: any(k == "health" for k, _, _ in server.posts), 5)
    assert sorted(server.ids()) == sorted(ids)
    assert len(server.ids("events")) == 3
    kinds = [k for k, _, _ in server.posts]
    assert kinds.index("events") < kinds.index("detections")  # the summary first
    assert max(len(m) for k, m, _ in server.posts if k == "detections") == 50
    for _, _, headers in server.posts:
        assert headers["authorization"] == "Bearer s3cret"
        assert headers["content-type"] == "application/json"
    beat = next(m[0] for k, m, _ in server.posts if k == "health")
    assert beat["device"] == "rec-7" and beat["protocol"] == "http" and "backlog" in beat
    assert beat["role"] == "recorder" and beat["heartbeat_s"] == 60
    assert pub.stats.delivered == 123 and pub.summary().startswith("123 delivered")


@pytest.mark.timeout(60)
def test_a_server_down_then_up_loses_nothing_and_the_outage_is_logged_once(tmp_path):
    db = tmp_path / "d.db"
    ids = _logged(db, 30)
    with Server() as probe:
        url = probe.url  # a port that answers nothing once this server is closed
    with sending(db, url) as (pub, said):
        assert wait_until(lambda: pub.stats.connect_failures >= 3, 10)
        assert pub.backlog() == 30 and not pub.connected
        failed = _health(db, "uplink_connect_failed")
        assert len(failed) == 1 and "cannot reach" in failed[0]["detail"]["why"]
        assert sum("cannot reach" in line for line in said) == 1  # said once, not per try
        with Server(port=probe.port) as server:  # back on the port the recorder knows
            assert wait_until(lambda: pub.backlog() == 0, 20)
    assert sorted(set(server.ids())) == sorted(ids)
    assert len(_health(db, "uplink_connected")) == 1


@pytest.mark.timeout(60)
def test_one_message_the_server_refuses_is_set_aside_alone_and_the_rest_arrive(tmp_path):
    db = tmp_path / "d.db"
    ids = _logged(db, 40)
    bad = ids[17]

    def answer(kind, messages, headers):
        if any(m.get("detection_id") == bad for m in messages):
            return 422, {}
        return None

    with Server(answer) as server, sending(db, server.url, batch=16) as (pub, _):
        assert wait_until(lambda: pub.backlog() == 0, 20)
    assert sorted(server.ids()) == sorted(i for i in ids if i != bad)
    with DetectionStore(db) as store:
        assert store.set_aside_count() == 1
    aside = _health(db, "uplink_set_aside")
    assert [r["detail"]["detection_id"] for r in aside] == [bad]
    assert "HTTP 422" in aside[0]["detail"]["why"] and "3 refusals" in aside[0]["detail"]["why"]
    assert pub.stats.refused == 3 and pub.stats.connect_failures == 0


@pytest.mark.timeout(60)
def test_a_server_that_refuses_every_message_sets_none_aside(tmp_path):
    db = tmp_path / "d.db"
    _logged(db, 8)
    with (
        Server(lambda kind, messages, headers: (400, {})) as server,
        sending(db, server.url) as (pub, said),
    ):
        assert wait_until(lambda: pub.stats.connect_failures >= 2, 10)
    with DetectionStore(db) as store:
        assert store.set_aside_count() == 0 and store.backlog() == 8
    assert "refuses every message it is sent (HTTP 400)" in pub.stats.last_connect_error
    assert any("a fault of the server or of messaging.http.url" in line for line in said)


@pytest.mark.timeout(60)
def test_a_message_too_large_alone_is_set_aside_at_once(tmp_path):
    db = tmp_path / "d.db"
    ids = _logged(db, 4)

    def answer(kind, messages, headers):
        return (413, {}) if any(m.get("detection_id") == ids[0] for m in messages) else None

    with Server(answer) as server, sending(db, server.url) as (pub, _):
        assert wait_until(lambda: pub.backlog() == 0, 10)
    assert sorted(server.ids()) == sorted(ids[1:])
    assert pub.stats.set_aside == 1 and pub.stats.refused == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("status", "headers", "words"),
    [
        (401, {}, "this server wants a token: set messaging.http.token_file"),
        (404, {}, "check messaging.http.url"),
        (302, {"Location": "https://elsewhere.example/in"}, "it points to https://elsewhere"),
        (503, {"Retry-After": "1"}, "HTTP 503"),
    ],
)
def test_an_answer_no_message_is_at_fault_for_refuses_none_and_says_the_fix(
    tmp_path, status, headers, words
):
    db = tmp_path / "d.db"
    _logged(db, 5)
    with (
        Server(lambda kind, messages, h: (status, headers)) as server,
        sending(db, server.url) as (pub, said),
    ):
        assert wait_until(lambda: pub.stats.connect_failures >= 1, 10)
    assert words in pub.stats.last_connect_error
    assert pub.stats.refused == 0 and pub.stats.set_aside == 0 and not server.posts
    assert any(words in line for line in said)


@pytest.mark.timeout(60)
def test_https_with_a_private_ca_and_a_client_certificate(tmp_path, pki):  # noqa: F811
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pki / "server.crt", pki / "server.key")
    server_tls.load_verify_locations(pki / "ca.crt")
    server_tls.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    db = tmp_path / "d.db"
    ids = _logged(db, 6)
    key = tmp_path / "client.key"
    key.write_bytes((pki / "client.key").read_bytes())
    key.chmod(0o600)
    files = dict(ca_file=str(pki / "ca.crt"), cert_file=str(pki / "client.crt"), key_file=str(key))
    with Server(tls=server_tls) as server, sending(db, server.url, **files) as (pub, _):
        assert wait_until(lambda: pub.backlog() == 0, 20)
    assert sorted(server.ids()) == sorted(ids)
    # without ca_file the private CA is not trusted, and the fix is named
    files.pop("ca_file")
    with Server(tls=server_tls) as server, sending(db, server.url, **files) as (pub, _):
        assert wait_until(lambda: pub.stats.connect_failures >= 1, 10)
    assert "set messaging.http.ca_file" in pub.stats.last_connect_error


def test_a_token_file_others_can_read_is_refused_at_start(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret")
    token.chmod(0o644)
    with pytest.raises(PublishError, match=r"messaging.http.token_file .*token"):
        HttpPublisher(
            tmp_path / "d.db",
            HttpConfig(enabled=True, url="https://127.0.0.1:9/in", token_file=str(token)),
        )
    token.write_text("")
    token.chmod(0o600)
    with pytest.raises(PublishError, match="is empty; write the token into it"):
        HttpPublisher(
            tmp_path / "d.db",
            HttpConfig(enabled=True, url="https://127.0.0.1:9/in", token_file=str(token)),
        )


@pytest.mark.parametrize(
    ("messaging", "words"),
    [
        (
            {"mqtt": {"enabled": True}, "http": {"enabled": True, "url": "https://x/in"}},
            "mqtt and http are both enabled: one uplink per database",
        ),
        # a default url sent the token to a host nobody chose
        ({"http": {"enabled": True}}, "enabled is true but url is not set"),
        ({"http": {"url": "https://u:p@ss@x/in"}}, "'https://x' carries credentials"),
        ({"http": {"url": "https://x:99999/in"}}, "(a port from 1 to 65535)"),
        ({"http": {"url": "ftp://x/y"}}, "is not an http(s) URL"),
        ({"http": {"url": "http://x/y", "ca_file": "ca.pem"}}, "url is not https"),
    ],
)
def test_the_config_refuses_two_uplinks_and_a_wrong_url_in_one_line(messaging, words):
    with pytest.raises(ConfigError) as e:
        config_from_dict({"messaging": messaging}, "edge.yaml")
    assert words in str(e.value) and str(e.value).count("\n") == 0


def test_a_token_sent_in_clear_text_to_another_machine_is_warned_of():
    far = HttpConfig(url="http://203.0.113.5/in", token_file="t")
    assert "clear text" in (far.clear_text_password_warning() or "")
    assert (
        HttpConfig(url="http://127.0.0.1:8080/in", token_file="t").clear_text_password_warning()
        is None
    )
    assert (
        HttpConfig(url="https://203.0.113.5/in", token_file="t").clear_text_password_warning()
        is None
    )


@pytest.mark.timeout(60)
def test_runtime_starts_the_uplink_it_is_given_and_finishes_it(tmp_path):
    """A pipeline built by passing the uplink in: the config enables none."""
    from animalclap_edge.runtime import Runtime

    db = tmp_path / "d.db"
    ids = _logged(db, 12)
    err = io.StringIO()
    cfg = config_from_dict({"health": {"interval_s": 60}})
    with Server() as server:
        pub = HttpPublisher(db, HttpConfig(url=server.url), device_id="rec-7", poll_s=0.05)
        with Runtime(cfg, db, err, hop_s=1.0, sample_rate=48_000, uplink=pub) as rt:
            assert rt.uplink is pub
            assert wait_until(lambda: pub.backlog() == 0, 20)
        assert pub._thread is not None and not pub._thread.is_alive()
    assert sorted(server.ids()) == sorted(ids)
    assert f"uplink: http POST {server.url}" in err.getvalue()
    assert "uplink: 12 delivered; 0 still in the outbox" in err.getvalue()


@pytest.mark.timeout(60)
def test_publish_once_sends_the_backlog_over_http_and_returns(tmp_path, capsys):
    """`animalclap-edge publish --once` from a laptop or a cron job, with HTTP on."""
    from animalclap_edge.cli import main

    db = tmp_path / "d.db"
    ids = _logged(db, 20)
    with Server() as server:
        cfg = tmp_path / "edge.yaml"
        cfg.write_text(f"messaging:\n  http:\n    enabled: true\n    url: {server.url}\n")
        assert main(["publish", "--config", str(cfg), "--db", str(db), "--once"]) == 0
    err = capsys.readouterr().err
    assert f"uplink: http POST {server.url}" in err
    assert "uplink: 20 delivered; last error: none" in err
    assert sorted(server.ids()) == sorted(ids)
    # a `publish` beside `run` says so, as over MQTT's uploader/status
    assert {m[0]["role"] for k, m, _ in server.posts if k == "health"} == {"uploader"}
    off = tmp_path / "off.yaml"
    off.write_text("messaging:\n  http:\n    enabled: false\n")
    assert main(["publish", "--config", str(off), "--db", str(db), "--once"]) == 2
    assert "messaging.http.enabled: true" in capsys.readouterr().err


@pytest.mark.timeout(90)
def test_the_reference_receiver_keeps_each_message_once_when_a_card_is_sent_twice(tmp_path):
    """scripts/http_receiver.py, a field station's receiver, as a real process: a
    copy of a card sent after the card itself adds no row (at least once delivery,
    exactly once by id at the receiver), and a wrong token is refused, not kept."""
    import shutil
    import sqlite3
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "http_receiver.py"
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    station = tmp_path / "station.db"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--db", str(station), "--port", "0", "--host", "127.0.0.1",
         "--token-file", str(token)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        port = int(proc.stdout.readline().split()[-1])  # "listening on PORT"
        url = f"http://127.0.0.1:{port}/"
        db, copy = tmp_path / "card.db", tmp_path / "card-copy.db"
        ids = _logged(db, 30, events=2)
        shutil.copy(db, copy)
        for card in (db, copy):
            with sending(card, url, token_file=str(token), batch=8) as (pub, _):
                assert wait_until(lambda: pub.backlog() == 0, 20)
        bad = tmp_path / "bad-token"
        bad.write_text("guess\n")
        bad.chmod(0o600)
        with sending(copy, url, token_file=str(bad)) as (pub, _):
            assert wait_until(lambda: pub.stats.connect_failures >= 1, 10)
        assert "HTTP 401" in pub.stats.last_connect_error
        assert "messaging.http.token_file" in pub.stats.last_connect_error
    finally:
        proc.terminate()
        proc.wait(10)
    with sqlite3.connect(station) as con:
        kept = con.execute("SELECT kind, id FROM messages").fetchall()
        beats = con.execute("SELECT count(*) FROM heartbeats").fetchone()[0]
    assert sorted(i for k, i in kept if k == "detections") == sorted(ids)
    assert len([i for k, i in kept if k == "events"]) == 2
    assert beats >= 2  # one per card at least


def test_config_check_names_a_missing_token_file_and_a_clear_text_token(tmp_path, capsys):
    from animalclap_edge.cli import main

    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        "messaging:\n  http:\n    enabled: true\n    url: http://203.0.113.5/in\n"
        f"    token_file: {tmp_path / 'missing'}\n"
    )
    assert main(["config", "check", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"messaging.http.token_file {tmp_path / 'missing'}: no such file" in err
    token = tmp_path / "missing"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    assert main(["config", "check", str(cfg)]) == 0
    assert (
        "sends the bearer token to http://203.0.113.5/in in clear text" in capsys.readouterr().err
    )


@pytest.mark.timeout(60)
def test_a_heartbeat_too_large_goes_with_half_its_health_events(tmp_path):
    db = tmp_path / "d.db"
    _logged(db, 1)
    with DetectionStore(db) as store:
        for i in range(40):
            store.add_health("source_lost", "mic", {"n": i})

    def answer(kind, messages, headers):
        return (413, {}) if kind == "health" and len(messages[0]["events"]) > 10 else None

    with Server(answer) as server, sending(db, server.url) as (pub, _):
        assert wait_until(lambda: any(k == "health" for k, _, _ in server.posts), 10)
    beat = next(m[0] for k, m, _ in server.posts if k == "health")
    assert 1 <= len(beat["events"]) <= 10  # the 40 and more, halved until it took them
    assert "heartbeat refused" not in pub.stats.last_error


def test_an_expired_client_certificate_is_said_at_start(tmp_path, pki):  # noqa: F811
    key = tmp_path / "expired.key"
    key.write_bytes((pki / "expired.key").read_bytes())
    key.chmod(0o600)
    said: list[str] = []
    cfg = HttpConfig(
        enabled=True,
        url="https://127.0.0.1:9/in",
        cert_file=str(pki / "expired.crt"),
        key_file=str(key),
    )
    pub = HttpPublisher(tmp_path / "d.db", cfg, say=said.append)
    assert any(
        f"WARNING: messaging.http.cert_file {pki / 'expired.crt'} expired on" in line
        and "the server will refuse" in line
        for line in said
    ), said
    assert pub.cert_not_after is not None and pub.cert_not_after.endswith("Z")


@pytest.mark.timeout(60)
def test_each_heartbeat_has_its_own_idempotency_key_and_the_last_says_the_end(tmp_path):
    """One key for every heartbeat of the fleet had a gateway that honours the header
    keep the first alone; a run over files sent one heartbeat, at start, saying 0."""
    db = tmp_path / "d.db"
    _logged(db, 7)
    with Server() as server, sending(db, server.url) as (pub, _):
        assert wait_until(lambda: pub.backlog() == 0, 10)
    beats = [(m[0], h["idempotency-key"]) for k, m, h in server.posts if k == "health"]
    assert len(beats) == 2  # at start, and at the end
    assert beats[0][1] != beats[1][1]
    assert beats[-1][0]["delivered"] == 7 and beats[-1][0]["backlog"] == 0


@pytest.mark.timeout(90)
def test_every_outage_is_said_at_its_start_and_its_end(tmp_path):
    """The journal said the first outage alone, then "connected" through every later
    one, and never when a later one ended."""
    db = tmp_path / "d.db"
    _logged(db, 3)
    with Server() as probe:
        port, url = probe.port, probe.url  # nothing listens there once it is closed

    def more(first: int) -> None:
        with DetectionStore(db) as store:
            store.add_detections([_det(i * 72_000) for i in range(first, first + 3)])

    # ExitStack: the server outlives the uplink's last heartbeat
    with contextlib.ExitStack() as last, sending(db, url) as (pub, said):
        assert wait_until(lambda: pub.stats.connect_failures >= 1, 10)  # outage 1
        with Server(port=port):
            assert wait_until(lambda: pub.backlog() == 0, 20)
        more(10)  # outage 2: the server went down again
        assert wait_until(lambda: pub.stats.connect_failures >= 3, 20)
        again = last.enter_context(Server(port=port))
        assert wait_until(lambda: pub.backlog() == 0, 20)
        assert wait_until(lambda: sum("connected" in line for line in said) == 2, 5)
    assert len(again.ids()) == 3
    assert sum("cannot reach" in line for line in said) == 2, said
    assert [line.split(" to ")[0] for line in said if "connected" in line] == [
        "uplink: connected",
        "uplink: connected again",
    ]


@pytest.mark.timeout(90)
def test_a_server_refusing_everything_is_tried_with_one_message_not_the_whole_batch(tmp_path):
    """On a metered link a try cost 99 POSTs for a batch of 50."""
    db = tmp_path / "d.db"
    _logged(db, 50)
    refusing = [True]
    sizes: list[int] = []

    def answer(kind, messages, headers):
        if kind == "detections":
            sizes.append(len(messages))
        return (422, {}) if refusing[0] and kind == "detections" else None

    with Server(answer) as server, sending(db, server.url) as (pub, _):
        assert wait_until(lambda: pub.stats.connect_failures >= 1, 20)
        first_try = len(sizes)  # the first try split the batch down to single messages
        assert wait_until(lambda: pub.stats.connect_failures >= 3, 20)
        later = sizes[first_try:]
        assert first_try > 50 and later and set(later) == {1}, later[:10]
        refusing[0] = False
        assert wait_until(lambda: pub.backlog() == 0, 20)
    assert len(set(server.ids())) == 50
    with DetectionStore(db) as store:
        assert store.set_aside_count() == 0


@pytest.mark.timeout(90)
def test_a_413_lowers_the_batch_so_later_batches_are_not_split_again(tmp_path):
    db = tmp_path / "d.db"
    ids = _logged(db, 200)

    def answer(kind, messages, headers):
        return (413, {}) if len(messages) > 5 else None

    with Server(answer) as server, sending(db, server.url, batch=50) as (pub, said):
        assert wait_until(lambda: pub.backlog() == 0, 30)
    assert sorted(set(server.ids())) == sorted(ids)
    assert server.refused < 25  # a split from 50 for each batch: about 15 a batch of 50
    assert any("batches of at most 25 from now on" in line for line in said)


def test_retry_after_as_an_http_date_is_honoured():
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    from animalclap_edge.publish_http import _seconds_until

    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    assert 15 < _seconds_until(soon) <= 20
    assert _seconds_until("7") == 7 and _seconds_until("soon") == 0


@pytest.mark.timeout(60)
def test_https_to_a_plain_port_says_so(tmp_path):
    db = tmp_path / "d.db"
    _logged(db, 1)
    with Server() as plain:
        url = plain.url.replace("http://", "https://")
        with sending(db, url) as (pub, _):
            assert wait_until(lambda: pub.stats.connect_failures >= 1, 10)
    assert "is this the server's https port?" in pub.stats.last_connect_error


@pytest.mark.timeout(60)
def test_an_uplink_of_ones_own_needs_a_name_and_a_run(tmp_path):
    """README's recipe: subclass OutboxSender, write `run`; Runtime takes it."""
    from animalclap_edge.runtime import Runtime
    from animalclap_edge.uplink import OutboxSender

    class FileUplink(OutboxSender):
        name = "file"

        def run(self) -> None:
            with DetectionStore(self.db_path) as store, open(tmp_path / "sent.jsonl", "a") as f:
                while not self.stopping:
                    rows = store.pending_outbox(20)
                    f.writelines(payload + "\n" for _, payload in rows)
                    f.flush()
                    self.delivered(store, [i for i, _ in rows])
                    self.wait(0.05)

    db = tmp_path / "d.db"
    ids = _logged(db, 30)
    err = io.StringIO()
    up = FileUplink(db, "rec-7", max_backoff_s=60, max_attempts=3, say=None)
    with Runtime(config_from_dict({}), db, err, hop_s=1.0, sample_rate=48_000, uplink=up):
        assert wait_until(lambda: up.backlog() == 0, 10)
    sent = [json.loads(line)["detection_id"] for line in (tmp_path / "sent.jsonl").open()]
    assert sorted(sent) == sorted(ids)
    assert "uplink: file uplink" in err.getvalue() and "30 delivered" in err.getvalue()
    assert up.heartbeat(DetectionStore(db))[0]["protocol"] == "file"


@pytest.mark.timeout(90)
def test_bad_messages_at_the_head_are_set_aside_and_the_good_behind_them_arrive(tmp_path):
    """A server that wants start_time_utc, and 50 detections logged before the clock
    was set: the 10 good ones behind them waited for ever (a review found it)."""
    db = tmp_path / "d.db"
    ids = _logged(db, 60)
    bad = set(ids[:50])

    def answer(kind, messages, headers):
        return (422, {}) if any(m.get("detection_id") in bad for m in messages) else None

    with Server(answer) as server, sending(db, server.url) as (pub, _):
        assert wait_until(lambda: pub.backlog() == 0, 60)
    assert sorted(set(server.ids())) == sorted(ids[50:])
    with DetectionStore(db) as store:
        assert store.set_aside_count() == 50


@pytest.mark.timeout(60)
def test_a_server_refusing_everything_sets_aside_no_message_that_comes_alone(tmp_path):
    """A live recorder has one message at a time: each was refused three times in
    0.15 s and set aside; its heartbeats' 2xx also ended and began the outage anew."""
    db = tmp_path / "d.db"
    _logged(db, 1)

    def answer(kind, messages, headers):
        return None if kind == "health" else (400, {})

    with Server(answer) as server, sending(db, server.url, heartbeat_s=5) as (pub, said):
        assert wait_until(lambda: pub.stats.connect_failures >= 3, 20)
        with DetectionStore(db) as store:
            store.add_detections([_det(5 * 72_000)])  # a second, alone as well
        assert wait_until(lambda: sum(k == "health" for k, _, _ in server.posts) >= 2, 10)
    with DetectionStore(db) as store:
        assert store.set_aside_count() == 0 and store.backlog() == 2
    assert pub.stats.refused == 0
    assert not any("connected" in line for line in said)  # no outage ended by a heartbeat


@pytest.mark.timeout(60)
def test_an_answer_that_is_not_http_does_not_end_the_uplink(tmp_path):
    """An SSH port's banner (a url with the wrong port) raised out of urllib and ended
    the sending thread unseen; the backlog grew until a restart."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def banner() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)  # the request, then an answer that is not HTTP
                conn.sendall(b"SSH-2.0-OpenSSH_8.9\r\n")

    threading.Thread(target=banner, daemon=True).start()
    db = tmp_path / "d.db"
    _logged(db, 2)
    try:
        with sending(db, f"http://127.0.0.1:{port}/in") as (pub, _):
            assert wait_until(lambda: pub.stats.connect_failures >= 2, 10)
            assert pub._thread is not None and pub._thread.is_alive()
    finally:
        listener.close()
    assert "SSH-2.0" in pub.stats.last_connect_error


@pytest.mark.timeout(60)
def test_a_heartbeat_the_server_fails_does_not_hold_the_detections_back(tmp_path):
    db = tmp_path / "d.db"
    ids = _logged(db, 5)

    def answer(kind, messages, headers):
        return (500, {}) if kind == "health" else None

    with Server(answer) as server, sending(db, server.url) as (pub, _):
        assert wait_until(lambda: pub.backlog() == 0, 10)
    assert sorted(server.ids()) == sorted(ids)


def test_a_token_file_of_two_lines_is_refused_before_it_reaches_a_header(tmp_path):
    """Its second line made the header invalid, and the error quoted the token into
    the journal and the health table."""
    token = tmp_path / "token"
    token.write_text("s3cret\nexpires 2027-01\n")
    token.chmod(0o600)
    cfg = HttpConfig(enabled=True, url="https://127.0.0.1:9/in", token_file=str(token))
    with pytest.raises(PublishError, match="more than one line") as e:
        HttpPublisher(tmp_path / "d.db", cfg)
    assert "s3cret" not in str(e.value)


@pytest.mark.timeout(90)
def test_one_message_too_large_for_any_batch_leaves_the_batch_at_what_fits(tmp_path):
    db = tmp_path / "d.db"
    ids = _logged(db, 250)
    big = ids[7]

    def answer(kind, messages, headers):
        return (413, {}) if any(m.get("detection_id") == big for m in messages) else None

    with Server(answer) as server, sending(db, server.url, batch=50) as (pub, _):
        assert wait_until(lambda: pub.backlog() == 0, 30)
    assert sorted(set(server.ids())) == sorted(i for i in ids if i != big)
    assert pub._batch_size() >= 25  # it fell to 1 for the rest of the run
    with DetectionStore(db) as store:
        assert store.set_aside_count() == 1


def test_the_start_line_names_the_proxy_without_its_password(tmp_path, monkeypatch):
    for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://user:secret@proxy.station.lan:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    far = HttpPublisher(tmp_path / "d.db", HttpConfig(url="https://ingest.example/in"))
    assert far.describe() == (
        "http POST https://ingest.example/in through the proxy http://proxy.station.lan:3128"
    )
    near = HttpPublisher(tmp_path / "d.db", HttpConfig(url="https://localhost:8443/in"))
    assert near.describe() == "http POST https://localhost:8443/in"  # no_proxy
