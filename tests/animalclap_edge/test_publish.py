"""The MQTT uplink against a real broker (mosquitto on a free loopback port), stopped
mid-run: every logged detection must arrive, by id, once the broker is back."""

from __future__ import annotations

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
from pathlib import Path

import pytest

from animalclap_edge.config import MqttConfig
from animalclap_edge.store import DetectionStore

from .factories import detection as _det  # one Detection factory for the runtime tests

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
pytestmark = [
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (apt install mosquitto)"),
    pytest.mark.skipif(
        importlib.util.find_spec("paho") is None, reason="paho-mqtt not installed ([mqtt] extra)"
    ),
]


class Broker:
    def __init__(self, folder: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = folder / "mosquitto.conf"
        # Run as root (CI), mosquitto drops to the 'mosquitto' user, cannot write its
        # persistence file into this folder, and the consumer's session (and what was
        # queued for it) is silently gone after a restart: stay the user we are.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {folder}/\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)  # saves its persistence file
            self.proc.wait(10)
            self.proc = None


class Subscriber:
    """A consumer with a persistent session: what is published while it is away waits."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.ids: list[str] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()  # the broker holds our subscription
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-consumer", clean_session=False
        )

        def on_connect(c, u, f, rc, p):
            c.subscribe(topic, qos=1)

        def on_message(c, u, msg):
            with self.lock:
                self.ids.append(json.loads(msg.payload)["detection_id"])

        def on_subscribe(c, u, mid, reason_codes, p):
            self.subscribed.set()

        self.client.on_connect, self.client.on_message = on_connect, on_message
        self.client.on_subscribe = on_subscribe
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def unique(self) -> set[str]:
        with self.lock:
            return set(self.ids)


def _logged(db: Path, n: int) -> Path:
    """A database holding `n` detections of one run, none delivered yet."""
    with DetectionStore(db) as store:
        store.start_run("run-a", "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        store.add_detections([_det(i * 72_000) for i in range(n)])
    return db


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


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
        assert _wait(lambda: len(sub.unique()) == 50, 30), len(sub.unique())
        broker.stop()  # the network goes away; the recorder keeps logging
        for k in range(5):  # 10 detections at a time, spread over the outage
            with DetectionStore(db) as store:
                store.add_detections([_det(i * 72_000) for i in range(50 + 10 * k, 60 + 10 * k)])
            time.sleep(outage_s / 5)
        with DetectionStore(db) as store:
            assert len(store.pending_outbox(1000)) == 50  # nothing marked while down
        broker.start()
        with DetectionStore(db) as store:
            assert _wait(lambda: not store.pending_outbox(1000), 60)
        assert _wait(lambda: len(sub.unique()) == 100, 30), len(sub.unique())
    finally:
        pub.stop()
        sub.client.loop_stop()
        sub.client.disconnect()
        broker.stop()
    with DetectionStore(db) as store:
        expected = {d.detection_id for d in store.detections()}
    assert sub.unique() == expected
    assert pub.stats.connects >= 2 and pub.stats.delivered == 100
    print(
        f"outage {outage_s:g} s: received {len(sub.ids)} messages for {len(expected)} "
        f"detections, {len(sub.ids) - len(sub.unique())} duplicates, "
        f"{len(expected - sub.unique())} lost"
    )


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
        assert _wait(lambda: pub.stats.connect_failures >= 2, 10)
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
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("animalclap/rec1/health", qos=0)
    sub.on_message = lambda c, u, msg: beats.append(json.loads(msg.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    time.sleep(0.5)  # subscribed before the first heartbeat
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port)
    pub = MqttPublisher(db, cfg, device_id="rec1", poll_s=0.1, heartbeat_s=0.3).start()
    try:
        assert _wait(lambda: any(b["events"] for b in beats), 20), beats
        first = next(b for b in beats if b["events"])
        assert [e["kind"] for e in first["events"]] == ["source_lost"]
        assert first["snapshot"]["detail"] == {"disk_percent": 40.0}
        with DetectionStore(db) as store:
            store.add_health("source_reopened", "mic:usb", {"opens": 2})

        def sent(kind: str) -> int:
            return sum(e["kind"] == kind for b in list(beats) for e in b["events"])

        assert _wait(lambda: sent("source_reopened") == 1, 20)
        n = len(beats)
        assert _wait(lambda: len(beats) > n + 2, 20)
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
        assert _wait(lambda: len(sub.unique()) == 20, 30), len(sub.unique())
    finally:
        sub.client.loop_stop()
        sub.client.disconnect()
        broker.stop()
    err = capsys.readouterr().err
    assert f"uplink: mqtt 127.0.0.1:{broker.port} topic animalclap/" in err
    assert "uplink: 20 delivered; last error: none" in err
    with DetectionStore(db) as store:
        assert store.pending_outbox(100) == []
        assert sub.unique() == {d.detection_id for d in store.detections()}
    # a dead broker: --once gives up when told, with the backlog kept, instead of
    # hanging until killed (a cron job would pile up)
    dead = _logged(tmp_path / "dead.db", 5)
    assert main(["publish", "--config", str(cfg), "--db", str(dead), "--once",
                 "--give-up-after", "2"]) == 1  # fmt: skip
    assert "gave up after 2 s with 5 messages left" in capsys.readouterr().err
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


def test_two_processes_of_one_recorder_stay_connected_side_by_side(tmp_path):
    """`run` and `publish` on one recorder shared the client id animalclap-<host>: the
    broker closed one connection for the other every second (found in a walkthrough).
    Two real processes, one broker, default client ids."""
    broker = Broker(tmp_path)
    broker.start()
    db = _logged(tmp_path / "d.db", 1)
    script = (
        "import sys, time\n"
        "from animalclap_edge.config import MqttConfig\n"
        "from animalclap_edge.publish import MqttPublisher\n"
        f"pub = MqttPublisher({str(db)!r}, MqttConfig(host='127.0.0.1', port={broker.port}),"
        " max_backoff_s=1)\n"
        "pub.start(); time.sleep(4); pub.stop(); print(pub.stats.connects)\n"
    )
    try:
        procs = [
            subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
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
