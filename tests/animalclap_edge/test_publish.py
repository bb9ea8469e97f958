"""The MQTT uplink against a real broker (mosquitto on a free loopback port), stopped
mid-run: every logged detection must arrive, by id, once the broker is back."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from animalclap_edge.config import MqttConfig
from animalclap_edge.store import DetectionStore

from .factories import detection as _det  # one Detection factory for the runtime tests
from .factories import event as _event
from .waiting import wait_until

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
pytestmark = [
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (apt install mosquitto)"),
    pytest.mark.skipif(
        importlib.util.find_spec("paho") is None, reason="paho-mqtt not installed ([mqtt] extra)"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, folder: Path, extra: str = ""):
        self.folder, self.extra = folder, extra
        self.conf = folder / "mosquitto.conf"
        self._configure(_free_port())
        self.proc: subprocess.Popen | None = None
        self._started = False

    def _configure(self, port: int) -> None:
        self.port = port
        # Run as root (CI), mosquitto drops to the 'mosquitto' user, cannot write its
        # persistence file into this folder, and the consumer's session (and what was
        # queued for it) is silently gone after a restart: stay the user we are.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}listener {port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.folder}/\n{self.extra}"
        )

    def start(self) -> None:
        """Start mosquitto and wait for its listener. The port was free when picked, not
        held: if another process took it meanwhile, mosquitto exits, and (first start
        only: a restart must keep the port its clients know) another port is tried."""
        for _ in range(3):
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                except OSError:
                    time.sleep(0.05)
                    continue
                # another listener on the port answers too: ours is the one still up
                # once mosquitto has had time to fail its bind and exit
                time.sleep(0.3)
                if self.proc.poll() is None:
                    self._started = True
                    return
            code = self.proc.poll()
            if code is None or self._started:
                break
            self._configure(_free_port())  # exited at once: the port was taken
        raise RuntimeError(f"mosquitto did not start on port {self.port} (exit {self.proc.poll()})")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)  # saves its persistence file
            self.proc.wait(10)
            self.proc = None


class Subscriber:
    """A consumer with a persistent session: what is published while it is away waits."""

    def __init__(self, port: int, topic: str | list[str]):
        import paho.mqtt.client as mqtt

        self.ids: list[str] = []  # detection_id or event_id of each message, as received
        self.topics: dict[str, str] = {}  # id -> the topic it came on
        self.payloads: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.subscribed = threading.Event()  # the broker holds our subscription
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-consumer", clean_session=False
        )

        def on_connect(c, u, f, rc, p):
            c.subscribe([(t, 1) for t in ([topic] if isinstance(topic, str) else topic)])

        def on_message(c, u, msg):
            body = json.loads(msg.payload)
            with self.lock:
                i = body["event_id"] if "event_id" in body else body["detection_id"]
                self.ids.append(i)
                self.topics[i], self.payloads[i] = msg.topic, msg.payload

        def on_subscribe(c, u, mid, reason_codes, p):
            self.subscribed.set()

        self.client.on_connect, self.client.on_message = on_connect, on_message
        self.client.on_subscribe = on_subscribe
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def unique(self) -> set[str]:
        with self.lock:
            return set(self.ids)


def _shut(*parts) -> None:
    """Stop publishers, proxies, subscribers and brokers, in the order given."""
    for part in parts:
        (part.stop if hasattr(part, "stop") else part.close)()


def _logged(db: Path, n: int) -> Path:
    """A database holding `n` detections of one run, none delivered yet."""
    with DetectionStore(db) as store:
        store.start_run("run-a", "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        store.add_detections([_det(i * 72_000) for i in range(n)])
    return db


@pytest.mark.parametrize("outage_s", [3.0, pytest.param(150.0, marks=pytest.mark.slow)])
def test_every_detection_arrives_once_by_id_across_a_broker_outage(tmp_path, outage_s):
    from animalclap_edge.publish import MqttPublisher

    broker = Broker(tmp_path)
    broker.start()
    db = _logged(tmp_path / "d.db", 50)
    sub = Subscriber(broker.port, "animalclap/rec1/detections")
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port)
    pub = MqttPublisher(db, cfg, device_id="rec1", poll_s=0.1, max_backoff_s=2).start()
    try:
        assert wait_until(lambda: len(sub.unique()) == 50, 30), len(sub.unique())
        broker.stop()  # the network goes away; the recorder keeps logging
        for k in range(5):  # 10 detections at a time, spread over the outage
            with DetectionStore(db) as store:
                store.add_detections([_det(i * 72_000) for i in range(50 + 10 * k, 60 + 10 * k)])
            time.sleep(outage_s / 5)
        with DetectionStore(db) as store:
            assert len(store.pending_outbox(1000)) == 50  # nothing marked while down
        broker.start()
        with DetectionStore(db) as store:
            assert wait_until(lambda: not store.pending_outbox(1000), 60)
        assert wait_until(lambda: len(sub.unique()) == 100, 30), len(sub.unique())
    finally:
        _shut(pub, sub, broker)
    with DetectionStore(db) as store:
        expected = {d.detection_id for d in store.detections()}
    assert sub.unique() == expected
    assert pub.stats.connects >= 2 and pub.stats.delivered == 100
    print(
        f"outage {outage_s:g} s: received {len(sub.ids)} messages for {len(expected)} "
        f"detections, {len(sub.ids) - len(sub.unique())} duplicates, "
        f"{len(expected - sub.unique())} lost"
    )


def test_events_arrive_on_their_own_topic_beside_the_detections(tmp_path):
    """A dashboard wants the merged events (one per song bout, with its span), not only
    every window: they go to <prefix>/<device>/events, first, with the payload stored."""
    from animalclap_edge.publish import MqttPublisher
    from animalclap_edge.store import message_payload

    broker = Broker(tmp_path)
    broker.start()
    db = _logged(tmp_path / "d.db", 6)
    events = [_event(0, 3), _event(288_000, 2, taxon="comfro")]
    with DetectionStore(db) as store:
        store.add_events(events)
        host = socket.gethostname()  # the run's device: no device.name given
        want = {e.event_id: message_payload(e, host, "").encode() for e in events}
    topics = ["animalclap/rec1/detections", "animalclap/rec1/events"]
    sub = Subscriber(broker.port, topics)
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port)
    pub = None
    try:
        assert sub.subscribed.wait(10)
        pub = MqttPublisher(db, cfg, device_id="rec1", poll_s=0.1).start()
        assert wait_until(lambda: len(sub.unique()) == 8, 30), sub.unique()
        with DetectionStore(db) as store:
            assert wait_until(lambda: store.backlog() == 0, 10)
    finally:
        _shut(*([pub] if pub else []), sub, broker)
    got = {i: t for i, t in sub.topics.items() if t.endswith("/events")}
    assert set(got) == set(want) and all(sub.payloads[i] == want[i] for i in want)
    assert sum(t.endswith("/detections") for t in sub.topics.values()) == 6
    assert set(sub.ids[:2]) == set(want)  # the events went first
    assert pub.stats.delivered == 8


def test_an_unreachable_broker_is_retried_and_counted(tmp_path):
    from animalclap_edge.publish import MqttPublisher

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    db = _logged(tmp_path / "d.db", 1)
    pub = MqttPublisher(
        db, MqttConfig(host="127.0.0.1", port=port), device_id="rec1", max_backoff_s=0.5
    )
    pub.start()
    try:
        assert wait_until(lambda: pub.stats.connect_failures >= 2, 10)
        assert "cannot reach 127.0.0.1" in pub.stats.last_connect_error
    finally:
        pub.stop()
    with DetectionStore(db) as store:
        assert len(store.pending_outbox()) == 1  # still waiting, not lost


def test_heartbeats_carry_the_health_events_and_the_newest_snapshot(tmp_path):
    import paho.mqtt.client as mqtt

    from animalclap_edge.publish import MqttPublisher

    broker = Broker(tmp_path)
    broker.start()
    db = tmp_path / "d.db"
    with DetectionStore(db) as store:
        store.add_health("source_lost", "mic:usb", {"why": "device disconnected"})
        store.add_health("snapshot", "runtime", {"disk_percent": 40.0})
    beats: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="health-consumer")
    subscribed = threading.Event()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("animalclap/rec1/health", qos=0)
    sub.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
    sub.on_message = lambda c, u, msg: beats.append(json.loads(msg.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    # subscribed before the first heartbeat, which carries the events once: a fixed
    # 0.5 s was not always enough on a loaded machine
    assert subscribed.wait(10)
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port)
    pub = MqttPublisher(db, cfg, device_id="rec1", poll_s=0.1, heartbeat_s=0.3).start()
    try:
        assert wait_until(lambda: any(b["events"] for b in beats), 20), beats
        first = next(b for b in beats if b["events"])
        assert [e["kind"] for e in first["events"]] == ["source_lost"]
        assert first["snapshot"]["detail"] == {"disk_percent": 40.0}
        with DetectionStore(db) as store:
            store.add_health("source_reopened", "mic:usb", {"opens": 2})

        def sent(kind: str) -> int:
            return sum(e["kind"] == kind for b in list(beats) for e in b["events"])

        assert wait_until(lambda: sent("source_reopened") == 1, 20)
        n = len(beats)
        assert wait_until(lambda: len(beats) > n + 2, 20)
        # each event is sent once: later beats carry nothing new
        assert sent("source_reopened") == 1 and sent("source_lost") == 1
    finally:
        pub.stop()
        sub.loop_stop()
        sub.disconnect()
        broker.stop()


def test_cli_publish_once_sends_the_backlog_and_exits(tmp_path, capsys):
    """`animalclap-edge publish --once`: what a card's database never delivered goes up,
    then the command returns (a cron job or a one-off upload from a laptop)."""
    from animalclap_edge.cli import main

    broker = Broker(tmp_path)
    broker.start()
    db = _logged(tmp_path / "d.db", 20)
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        f"messaging:\n  mqtt:\n    enabled: true\n    host: 127.0.0.1\n    port: {broker.port}\n"
    )
    sub = Subscriber(broker.port, "animalclap/+/detections")
    try:
        assert sub.subscribed.wait(10)  # or a message published before would be dropped
        assert main(["publish", "--config", str(cfg), "--db", str(db), "--once"]) == 0
        assert wait_until(lambda: len(sub.unique()) == 20, 30), len(sub.unique())
    finally:
        _shut(sub, broker)
    err = capsys.readouterr().err
    assert f"uplink: mqtt 127.0.0.1:{broker.port} topics animalclap/" in err
    assert "uplink: 20 delivered; last error: none" in err
    with DetectionStore(db) as store:
        assert store.pending_outbox(100) == []
        assert sub.unique() == {d.detection_id for d in store.detections()}
    # a dead broker: --once gives up when told, with the backlog kept, instead of
    # hanging until killed (a cron job would pile up)
    dead = _logged(tmp_path / "dead.db", 5)
    assert main(["publish", "--config", str(cfg), "--db", str(dead), "--once",
                 "--give-up-after", "2"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "gave up after 2 s with 5 messages left" in err
    assert "retrying with backoff up to 2 s" in err  # not 60 s of a 2 s attempt
    with DetectionStore(dead) as store:
        assert len(store.pending_outbox(100)) == 5
    assert main(["publish", "--config", str(cfg), "--db", str(tmp_path / "none.db")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"animalclap-edge: error: no database at {tmp_path / 'none.db'}"
    )
    off = tmp_path / "off.yaml"
    off.write_text("messaging:\n  mqtt:\n    enabled: false\n")
    assert main(["publish", "--config", str(off), "--db", str(dead), "--once"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"MQTT is off in {off}" in err and "nothing was sent" in err
    with DetectionStore(dead) as store:
        assert len(store.pending_outbox(100)) == 5


def test_an_error_before_the_broker_came_up_is_not_read_as_going_on(tmp_path, capsys):
    """After the broker came up and everything went, `publish` ended with "last error:
    cannot reach ...", which read as a failure still going on (found by a dashboard
    builder): it now says the uplink was connected again when it ended."""
    import threading

    from animalclap_edge.cli import main

    broker = Broker(tmp_path)
    db = _logged(tmp_path / "d.db", 5)
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        f"messaging:\n  mqtt:\n    enabled: true\n    host: 127.0.0.1\n    port: {broker.port}\n"
    )
    late = threading.Timer(1.5, broker.start)  # the network comes up after the upload began
    late.start()
    try:
        args = ["publish", "--config", str(cfg), "--db", str(db), "--once"]
        assert main([*args, "--give-up-after", "60"]) == 0
    finally:
        late.join()
        broker.stop()
    err = capsys.readouterr().err.strip().splitlines()
    (summary,) = [line for line in err if line.startswith("uplink: 5 delivered; last error: ")]
    (connection,) = [line for line in err if line.startswith("uplink: last connection error: ")]
    for line in (summary, connection):
        assert "cannot reach 127.0.0.1:" in line, err
        assert line.endswith("(connected again when it ended)"), err


def test_two_processes_of_one_recorder_stay_connected_side_by_side(tmp_path):
    """`run` and `publish` on one recorder shared the client id animalclap-<host>: the
    broker closed one connection for the other every second (found in a walkthrough).
    Two real processes, one broker, default client ids."""
    broker = Broker(tmp_path)
    broker.start()
    # one database each: one database has one sender (its uplink lock)
    dbs = [_logged(tmp_path / f"d{k}.db", 1) for k in range(2)]
    script = (
        "import sys, time\n"
        "from animalclap_edge.config import MqttConfig\n"
        "from animalclap_edge.publish import MqttPublisher\n"
        f"pub = MqttPublisher(sys.argv[1], MqttConfig(host='127.0.0.1', port={broker.port}),"
        " max_backoff_s=1)\n"
        "pub.start(); t = time.monotonic()\n"
        # connected first (a slow start on a busy machine is no failure), then watched
        "while pub.stats.connects < 1 and time.monotonic() - t < 30: time.sleep(0.05)\n"
        "time.sleep(4); pub.stop(); print(pub.stats.connects)\n"
    )
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, text=True
            )
            for db in dbs
        ]
        connects = [int(p.communicate(timeout=60)[0].split()[-1]) for p in procs]
    finally:
        broker.stop()
    assert connects == [1, 1]  # each connected once and stayed


def test_an_uploader_beside_the_recorder_says_its_own_state(tmp_path):
    """`publish` stopping published a retained "offline" on the recorder's status topic
    while `run` was still up (found in review)."""
    from animalclap_edge.publish import MqttPublisher

    db = _logged(tmp_path / "d.db", 1)
    cfg = MqttConfig(host="127.0.0.1", port=1)
    recorder = MqttPublisher(db, cfg, device_id="rec1")
    uploader = MqttPublisher(db, cfg, device_id="rec1", role="uploader")
    assert recorder.status_topic == "animalclap/rec1/status"
    assert uploader.status_topic == "animalclap/rec1/uploader/status"
    assert uploader.topic == recorder.topic == "animalclap/rec1/detections"


# -- a broker that refuses, a network that stalls, two senders ------------------------

BIG_TRAITS = json.dumps({f"trait_{k:02d}": {"value": "x" * 40, "p": 0.5} for k in range(22)})


def _big(i: int):
    """A detection whose message is ~2 KB (22 traits), as the walkthrough's were."""
    return _det(i * 72_000, traits_json=BIG_TRAITS)


def _mixed(db: Path, big_at: tuple[int, ...], n: int) -> list[str]:
    """`n` detections, those at `big_at` ~2 KB and the rest ~0.5 KB; their ids in order."""
    dets = [_big(i) if i in big_at else _det(i * 72_000) for i in range(n)]
    with DetectionStore(db) as store:
        store.start_run("run-a", "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        store.add_detections(dets)
    return [d.detection_id for d in dets]


class Proxy:
    """A TCP proxy in front of the broker. `flowing.clear()` stops forwarding with both
    connections left open (a stalled link); with refuse_v5 it answers an MQTT 5 CONNECT
    as a broker without v5 does (CONNACK 0x01, unacceptable protocol version)."""

    def __init__(self, upstream: int, refuse_v5: bool = False):
        self.upstream, self.refuse_v5, self.refused_v5 = upstream, refuse_v5, 0
        self.flowing = threading.Event()
        self.flowing.set()
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c: socket.socket) -> None:
        first = b""
        if self.refuse_v5:
            first = c.recv(65536)  # the CONNECT, one segment on loopback
            i = 1
            while first[i] & 0x80:  # remaining length: a varint
                i += 1
            if first[i + 1 + 6] == 5:  # after it: 00 04 'MQTT', then the protocol level
                self.refused_v5 += 1
                c.sendall(b"\x20\x02\x00\x01")
                c.close()
                return
        try:
            u = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            c.close()
            return
        if first:
            u.sendall(first)
        for a, b in ((c, u), (u, c)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.flowing.set()
        self.srv.close()


def _health_kinds(db: Path) -> list[dict]:
    with DetectionStore(db) as store:
        return [r for r in store.health(0, 1000) if r["source"] == "mqtt"]


def test_a_message_over_the_brokers_size_limit_is_refused_not_delivered(tmp_path, capsys):
    """mosquitto `message_size_limit 1000` with ~2 KB messages: `publish --once` said "20
    delivered" and the subscriber got nothing (v3.1.1: PUBACK, then dropped). MQTT 5
    reads the PUBACK's reason code: refused messages are set aside after 3 refusals,
    never marked delivered, and the small ones still go."""
    from animalclap_edge.cli import main

    broker = Broker(tmp_path, "message_size_limit 1000\n")
    broker.start()
    db = tmp_path / "d.db"
    ids = _mixed(db, big_at=(0, 3), n=6)
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        f"messaging:\n  mqtt:\n    enabled: true\n    host: 127.0.0.1\n    port: {broker.port}\n"
    )
    sub = Subscriber(broker.port, "animalclap/+/detections")
    try:
        assert sub.subscribed.wait(10)
        rc = main(["publish", "--config", str(cfg), "--db", str(db), "--once",
                   "--give-up-after", "30"])  # fmt: skip
        small = {ids[i] for i in (1, 2, 4, 5)}
        assert wait_until(lambda: sub.unique() == small, 10), sub.unique()
    finally:
        _shut(sub, broker)
    err = capsys.readouterr().err
    assert rc == 1, err  # not everything reached the broker
    assert "uplink: 4 delivered;" in err and "Packet too large" in err
    assert "2 message(s) set aside" in err
    with DetectionStore(db) as store:
        assert store.backlog() == 0 and store.set_aside_count() == 2
        aside = store.set_aside_messages()
        assert [a[0] for a in aside] == [ids[0], ids[3]]
        assert all("Packet too large" in a[2] and "3 refusals" in a[2] for a in aside)
        assert not store.any_delivered() or store.pending_payloads([ids[0]]) == []
    assert [e["detail"]["detection_id"] for e in _health_kinds(db)] == [ids[0], ids[3]]
    # queued again once the limit is raised: sent
    (tmp_path / "b2").mkdir()
    broker = Broker(tmp_path / "b2")  # no limit
    broker.start()
    cfg.write_text(
        f"messaging:\n  mqtt:\n    enabled: true\n    host: 127.0.0.1\n    port: {broker.port}\n"
    )
    try:
        assert main(["publish", "--config", str(cfg), "--db", str(db), "--once",
                     "--retry-set-aside", "--give-up-after", "30"]) == 0  # fmt: skip
    finally:
        broker.stop()
    assert "uplink: 2 set-aside message(s) queued again" in capsys.readouterr().err
    with DetectionStore(db) as store:
        assert store.set_aside_count() == 0 and store.backlog() == 0


def test_a_message_over_max_packet_size_is_set_aside_and_the_rest_goes_on(tmp_path):
    """mosquitto `max_packet_size 1000`: it disconnects a client for every larger packet,
    and the publisher resent the oldest message forever (status flapping). MQTT 5 CONNACK
    says the limit: the message is set aside unsent, the connection stays up."""
    from animalclap_edge.publish import MqttPublisher

    broker = Broker(tmp_path, "max_packet_size 1000\n")
    broker.start()
    db = tmp_path / "d.db"
    ids = _mixed(db, big_at=(0,), n=5)
    said: list[str] = []
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port)
    sub = Subscriber(broker.port, "animalclap/rec1/detections")
    pub = MqttPublisher(db, cfg, device_id="rec1", poll_s=0.1, say=said.append)
    try:
        assert sub.subscribed.wait(10)
        pub.start()
        assert wait_until(lambda: sub.unique() == set(ids[1:]), 20), sub.unique()
        time.sleep(1)
    finally:
        _shut(pub, sub, broker)
    assert pub.stats.connects == 1 and pub.stats.set_aside == 1
    with DetectionStore(db) as store:
        ((det_id, _, why),) = store.set_aside_messages()
    assert det_id == ids[0] and "maximum packet size 1000" in why
    assert any(ids[0] in line and "set aside" in line for line in said), said


def test_a_broker_without_mqtt5_is_used_with_311_said_and_disconnects_are_counted(tmp_path):
    """A broker that refuses MQTT 5: 3.1.1 is used, and that is said and logged. With
    3.1.1 no limit is advertised; a message the broker disconnects for is, after the
    lost connection, sent alone, and set aside after 3 such disconnects."""
    from animalclap_edge.publish import MqttPublisher

    broker = Broker(tmp_path, "max_packet_size 1000\n")
    broker.start()
    proxy = Proxy(broker.port, refuse_v5=True)
    db = tmp_path / "d.db"
    ids = _mixed(db, big_at=(1,), n=5)
    said: list[str] = []
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=proxy.port)
    sub = Subscriber(broker.port, "animalclap/rec1/detections")
    pub = MqttPublisher(db, cfg, device_id="rec1", poll_s=0.1, max_backoff_s=0.5, say=said.append)
    try:
        assert sub.subscribed.wait(10)
        pub.start()
        want = {i for k, i in enumerate(ids) if k != 1}
        assert wait_until(lambda: sub.unique() == want, 40), sub.unique()
        with DetectionStore(db) as store:
            assert wait_until(lambda: store.set_aside_count() == 1, 20)
            ((det_id, _, why),) = store.set_aside_messages()
    finally:
        _shut(pub, proxy, sub, broker)
    assert proxy.refused_v5 == 1 and pub.stats.protocol == "3.1.1"
    assert det_id == ids[1] and "sent alone" in why and "3 refusals" in why
    assert any("refused MQTT 5" in line for line in said), said
    kinds = [e["kind"] for e in _health_kinds(db)]
    assert kinds == ["uplink_protocol_fallback", "uplink_set_aside"]
    # No duplicates from probing. QoS 1 is at least once: ids[0], published just before
    # the message the broker disconnects for, may come twice when the disconnect cuts
    # its PUBACK (here: the proxy tears both ways down on the broker's reset); no other.
    twice = [i for i, n in Counter(sub.ids).items() if n > 1]
    assert set(twice) <= {ids[0]} and len(sub.ids) <= len(sub.unique()) + 1, sub.ids


def test_a_stalled_link_with_tcp_open_does_not_multiply_messages(tmp_path):
    """A network stall with the TCP connection still open: every ack timeout re-published
    the batch and paho queued each copy (5 copies per message in a walkthrough). A
    message is published once per connection."""
    from animalclap_edge.publish import MqttPublisher

    broker = Broker(tmp_path)
    broker.start()
    proxy = Proxy(broker.port)
    db = _logged(tmp_path / "d.db", 0)
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=proxy.port)
    sub = Subscriber(broker.port, "animalclap/rec1/detections")
    pub = MqttPublisher(db, cfg, device_id="rec1", poll_s=0.1)
    try:
        assert sub.subscribed.wait(10)
        pub.start()
        assert wait_until(lambda: pub.stats.connects == 1, 10)
        proxy.flowing.clear()  # stalled: nothing passes, both connections stay open
        with DetectionStore(db) as store:
            store.add_detections([_det(i * 72_000) for i in range(20)])
        time.sleep(12)  # past the 10 s after which the batch was published again
        proxy.flowing.set()
        with DetectionStore(db) as store:
            assert wait_until(lambda: store.backlog() == 0, 20)
            expected = {d.detection_id for d in store.detections()}
        assert wait_until(lambda: sub.unique() == expected, 10)
        time.sleep(1)
    finally:
        _shut(pub, proxy, sub, broker)
    assert len(sub.ids) == 20, f"{len(sub.ids)} messages for 20 detections"
    assert pub.stats.published == 20 and pub.stats.connects == 1


def test_one_sender_per_database(tmp_path, capsys):
    """`run` with MQTT on and `publish` on the same database each sent every message."""
    from animalclap_edge.cli import main
    from animalclap_edge.config import EdgeConfig
    from animalclap_edge.publish import MqttPublisher, UplinkBusy, UplinkLock
    from animalclap_edge.runtime import Runtime

    db = _logged(tmp_path / "d.db", 3)
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=1)
    held = UplinkLock(db)
    held.acquire()
    try:
        with pytest.raises(UplinkBusy, match=f"another uplink \\(pid {os.getpid()}\\)"):
            MqttPublisher(db, cfg).start()
        yaml = tmp_path / "edge.yaml"
        yaml.write_text("messaging:\n  mqtt:\n    enabled: true\n    port: 1\n")
        # publish waits for the other sender; --once gives up when told
        assert main(["publish", "--config", str(yaml), "--db", str(db), "--once",
                     "--give-up-after", "1.5"]) == 1  # fmt: skip
        err = capsys.readouterr().err
        assert f"another uplink (pid {os.getpid()}) is sending for {db}; waiting" in err
        assert "3 messages still to send" in err
        # run records without its own uplink, and says so
        full = EdgeConfig.model_validate({"messaging": {"mqtt": {"enabled": True, "port": 1}}})
        rt = Runtime(full, db, sys.stderr, hop_s=1.0, sample_rate=48000).start()
        assert rt.uplink is None
        rt.close()
        err = capsys.readouterr().err
        assert "records without its own uplink" in err and err.count("another uplink") == 1
    finally:
        held.release()
    second = MqttPublisher(db, cfg)
    second.lock.acquire()  # free once the holder let go
    second.lock.release()


def test_connection_problems_are_said_once_and_kept(tmp_path):
    """`run` never said why MQTT delivered nothing (bad host, closed port); wrong
    credentials read "disconnected: Unspecified error"."""
    from animalclap_edge.publish import MqttPublisher

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = _logged(tmp_path / "d.db", 1)
    said: list[str] = []
    pub = MqttPublisher(
        db, MqttConfig(host="127.0.0.1", port=port), max_backoff_s=0.3, say=said.append
    ).start()
    try:
        assert wait_until(lambda: pub.stats.connect_failures >= 3, 10)
    finally:
        pub.stop()
    assert len(said) == 1 and f"cannot reach 127.0.0.1:{port}" in said[0], said
    assert f"last connection error: cannot reach 127.0.0.1:{port}" in pub.summary()

    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "rec", "right"], check=True)
    broker = Broker(tmp_path, f"allow_anonymous false\npassword_file {pw}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true\n", ""))
    broker.start()
    (tmp_path / "wrong").write_text("wrong\n")
    (tmp_path / "wrong").chmod(0o600)
    cfg = MqttConfig(
        host="127.0.0.1", port=broker.port, username="rec", password_file=str(tmp_path / "wrong")
    )
    said.clear()
    pub = MqttPublisher(db, cfg, max_backoff_s=0.3, say=said.append).start()
    try:
        assert wait_until(lambda: pub.stats.connect_failures >= 2, 10)
    finally:
        pub.stop()
        broker.stop()
    assert pub.stats.last_connect_error == (
        "broker refused the connection: Not authorized (as messaging.mqtt.username 'rec' "
        f"with the password in password_file {tmp_path / 'wrong'}: check both against the "
        "broker's accounts)"
    )
    assert "Not authorized" in pub.stats.last_error and "Unspecified" not in said[0]
    # in the card's health log too, each reason once however many attempts failed: a
    # recorder whose password was rotated went quiet after one line on stderr
    failed = [r for r in _health_kinds(db) if r["kind"] == "uplink_connect_failed"]
    assert [r["detail"]["why"].split(":")[0] for r in failed] == [
        "cannot reach 127.0.0.1",
        "broker refused the connection",
    ]


@pytest.mark.timeout(30)
def test_a_password_file_others_can_read_or_that_is_no_file_is_refused_in_one_line(tmp_path):
    """A password file of mode 666 was sent; a named pipe hung `publish` for good,
    /dev/zero filled memory, bytes that are not UTF-8 gave a traceback."""
    import os

    from animalclap_edge.publish import MqttPublisher, PublishError

    open_to_all, fifo, latin = tmp_path / "pw", tmp_path / "pw.fifo", tmp_path / "pw.latin"
    open_to_all.write_text("secret\n")
    os.chmod(open_to_all, 0o666)
    os.mkfifo(fifo, 0o600)
    latin.write_bytes("pässword".encode("latin-1"))
    latin.chmod(0o600)
    empty = tmp_path / "pw.empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    cases = [
        (open_to_all, "is open to other users (mode 666); run: chmod 600"),
        (fifo, "not a regular file"),
        (Path("/dev/zero"), "not a regular file"),
        (latin, "not UTF-8 text"),
        (empty, "is empty; write the password into it"),
    ]
    db = _logged(tmp_path / "d.db", 1)
    for path, why in cases:
        cfg = MqttConfig(host="127.0.0.1", username="rec", password_file=str(path))
        with pytest.raises(PublishError) as e:
            MqttPublisher(db, cfg)
        assert str(e.value).startswith(f"messaging.mqtt.password_file {path}: {why}"), e.value


def test_heartbeat_events_move_on_only_when_the_broker_acknowledged_them(tmp_path):
    """The heartbeat went at QoS 0 and its "last sent" marker moved before anything was
    acknowledged: a refused or lost heartbeat lost its events. A broker ACL refuses the
    health topic first, then allows it (SIGHUP reloads it): the events still arrive."""
    import paho.mqtt.client as mqtt

    from animalclap_edge.publish import MqttPublisher

    acl = tmp_path / "acl"
    acl.write_text("topic readwrite animalclap/rec1/status\ntopic read #\n")
    broker = Broker(tmp_path, f"acl_file {acl}\n")
    broker.start()
    db = tmp_path / "d.db"
    with DetectionStore(db) as store:
        store.add_health("source_lost", "mic:usb", {"why": "device disconnected"})
    beats: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="health-consumer")
    subscribed = threading.Event()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("animalclap/rec1/health", qos=1)
    sub.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
    sub.on_message = lambda c, u, msg: beats.append(json.loads(msg.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    assert subscribed.wait(10)  # before the heartbeat the broker is told to allow
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port)
    pub = MqttPublisher(db, cfg, device_id="rec1", poll_s=0.1, heartbeat_s=0.3).start()
    try:
        assert wait_until(lambda: "Not authorized" in pub.stats.last_error, 10), pub.stats
        time.sleep(1)  # more heartbeats, each refused
        assert beats == [] and pub._health_after is None
        acl.write_text("topic readwrite animalclap/#\n")
        broker.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: any(b["events"] for b in beats), 10)
    finally:
        pub.stop()
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
    events = [e["kind"] for b in beats for e in b["events"]]
    assert events == ["source_lost"]
    assert beats[-1]["protocol"] == "5" and "last_connect_error" in beats[-1]
    # the sender's clock says whether it can be trusted, as detections' times do
    from animalclap_edge.sources.clock import system_clock_synchronized

    assert beats[-1]["utc_synchronized"] is system_clock_synchronized()[0]


def test_run_publishes_under_the_configured_recorder_name_at_its_heartbeat(tmp_path):
    """Recorders cloned from one image share a host name, the only name their topics
    had; the heartbeat's 60 s was fixed, whatever a metered link cost."""
    import paho.mqtt.client as mqtt

    from animalclap_edge.config import EdgeConfig
    from animalclap_edge.runtime import Runtime

    broker = Broker(tmp_path)
    broker.start()
    beats: list[str] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="name-consumer")
    subscribed = threading.Event()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("animalclap/+/health", qos=0)
    sub.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
    sub.on_message = lambda c, u, msg: beats.append(msg.topic)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    cfg = EdgeConfig.model_validate(
        {
            "device": {"name": "rec-ridge-07"},
            "messaging": {"mqtt": {"enabled": True, "port": broker.port, "heartbeat_s": 5}},
        }
    )
    rt = None
    try:
        assert subscribed.wait(10)
        rt = Runtime(cfg, tmp_path / "d.db", sys.stderr, hop_s=1.0, sample_rate=48000).start()
        assert wait_until(lambda: beats, 20)
        assert beats[0] == "animalclap/rec-ridge-07/health"
        assert rt.uplink.heartbeat_s == 5.0
    finally:
        if rt is not None:
            rt.close()
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
