"""The MQTT uplink: drains the store's outbox, marks a message delivered on PUBACK.

Detections enter the outbox in the same transaction as the detections table
(`store.DetectionStore.add_detections`), so nothing logged is ever missing from
it. The publisher reads undelivered rows oldest first, publishes each at QoS 1
to `<prefix>/<device>/detections`, and marks it delivered only when the broker
acknowledges it; on a lost connection it reconnects with exponential backoff for
as long as it takes and sends what is still undelivered. Delivery is at least
once; payloads carry `detection_id`, so consumers de-duplicate to exactly once.

A retained `<prefix>/<device>/status` says "online"; the broker publishes the
last will "offline" there if the recorder vanishes. Heartbeats on
`<prefix>/<device>/health` carry the outbox backlog. paho-mqtt is imported only
when a publisher is made.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from animalclap_edge.config import MqttConfig
from animalclap_edge.store import DetectionStore

MQTT_INSTALL_HINT = "MQTT uplink needs paho-mqtt: pip install 'animalclap-edge[mqtt]'"


class PublishError(RuntimeError):
    """The uplink cannot be set up; the message says why."""


@dataclass
class PublisherStats:
    delivered: int = 0
    published: int = 0  # publish calls, including re-sends after a lost connection
    connects: int = 0
    connect_failures: int = 0
    last_error: str = ""  # the latest problem of any kind
    last_connect_error: str = ""  # why the latest connection attempt failed


class MqttPublisher:
    def __init__(
        self,
        db_path: str | Path,
        cfg: MqttConfig,
        device_id: str | None = None,
        batch: int = 100,
        role: str = "recorder",
        ack_timeout_s: float = 10.0,
        poll_s: float = 0.5,
        heartbeat_s: float = 60.0,
        max_backoff_s: float = 60.0,
    ):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise PublishError(MQTT_INSTALL_HINT) from None
        self._mqtt = mqtt
        self.cfg, self.db_path = cfg, Path(db_path)
        self.device = device_id or socket.gethostname()
        prefix = f"{cfg.topic_prefix}/{self.device}"
        self.topic = f"{prefix}/detections"
        # the recorder's online/offline is `run`'s; a `publish` beside it (or a one-shot
        # upload) says its own, so that its stop does not mark a running recorder offline
        where = prefix if role == "recorder" else f"{prefix}/{role}"
        self.status_topic, self.health_topic = f"{where}/status", f"{prefix}/health"
        self.batch, self.ack_timeout_s, self.poll_s = batch, ack_timeout_s, poll_s
        self.heartbeat_s, self.max_backoff_s = heartbeat_s, max_backoff_s
        self._health_after: int | None = None  # last health row sent; None: none yet
        self.stats = PublisherStats()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = self._make_client()

    def _make_client(self):
        mqtt, cfg = self._mqtt, self.cfg
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            # one per process: `run` and `publish` on one recorder (or two recorders
            # cloned from one image) with one id threw each other off the broker every
            # second. The outbox is the session, so nothing needs a stable id.
            client_id=cfg.client_id or f"animalclap-{self.device}-{os.getpid()}",
        )
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        if cfg.username:
            password = None
            if cfg.password_file:
                try:
                    password = Path(cfg.password_file).read_text(encoding="utf-8").strip()
                except OSError as e:
                    raise PublishError(
                        f"messaging.mqtt.password_file {cfg.password_file}: {e.strerror or e}"
                    ) from None
            client.username_pw_set(cfg.username, password)
        if cfg.tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=int(self.max_backoff_s))

        def on_connect(c, userdata, flags, reason_code, properties):
            if not reason_code.is_failure:
                self.stats.connects += 1
                c.publish(self.status_topic, "online", qos=1, retain=True)
                self._connected.set()
            else:
                self.stats.last_error = f"broker refused: {reason_code}"

        def on_disconnect(c, userdata, flags, reason_code, properties):
            self._connected.clear()
            if reason_code.is_failure:
                self.stats.last_error = f"disconnected: {reason_code}"

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        return client

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> MqttPublisher:
        self._thread = threading.Thread(target=self.run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            if self._connected.is_set():
                self.client.publish(
                    self.status_topic, "offline", qos=1, retain=True
                ).wait_for_publish(2)
        except (RuntimeError, ValueError):
            pass
        finally:
            self.client.disconnect()
            self.client.loop_stop()

    def backlog(self) -> int:
        with DetectionStore(self.db_path) as store:
            return store.backlog()

    def finish(self, timeout_s: float = 10.0) -> int:
        """Give the uplink up to timeout_s to empty the outbox, then stop; returns what is left."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.backlog():
            time.sleep(0.2)
        self.stop()
        return self.backlog()

    def run(self) -> None:
        """Connect (retrying with backoff), then drain the outbox until stopped."""
        backoff, last_beat = 1.0, 0.0
        self.client.loop_start()  # paho's network thread; it also reconnects
        first = True
        with DetectionStore(self.db_path) as store:
            while not self._stop.is_set():
                if first:
                    try:
                        self.client.connect(self.cfg.host, self.cfg.port, keepalive=30)
                        first = False
                    except OSError as e:
                        self.stats.connect_failures += 1
                        why = f"cannot reach {self.cfg.host}:{self.cfg.port}: {e}"
                        self.stats.last_error = self.stats.last_connect_error = why
                        self._stop.wait(backoff)
                        backoff = min(self.max_backoff_s, backoff * 2)
                        continue
                if not self._connected.wait(self.poll_s):
                    continue
                backoff = 1.0
                sent = self.drain_once(store)
                now = time.monotonic()
                if now - last_beat >= self.heartbeat_s:
                    self._heartbeat(store)
                    last_beat = now
                if not sent:
                    self._stop.wait(self.poll_s)

    def drain_once(self, store: DetectionStore) -> int:
        """Publish one batch of undelivered messages; mark the acknowledged ones."""
        pending = store.pending_outbox(self.batch)
        if not pending:
            return 0
        infos = []
        for det_id, payload in pending:
            infos.append((det_id, self.client.publish(self.topic, payload, qos=1)))
            self.stats.published += 1
        acked = []
        deadline = time.monotonic() + self.ack_timeout_s
        for det_id, info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as e:  # not connected / queue refused
                self.stats.last_error = f"publish: {e}"
                break
            if not info.is_published():
                break  # connection lost mid-batch: the rest is sent again later
            acked.append(det_id)
        self.stats.delivered += store.mark_delivered(acked)
        return len(acked)

    def _heartbeat(self, store: DetectionStore) -> None:
        """Uplink state, the newest health snapshot, and the health events (source lost,
        reopened, database recovered...) logged since the last heartbeat, at most 100.
        QoS 0: a heartbeat that is lost is replaced by the next; the events stay on the
        card in the health table."""
        if self._health_after is None:  # first beat since start: the newest 100
            rows = store.health(0, 100, newest=True)
        else:
            rows = store.health(self._health_after, 100)
        if rows:
            self._health_after = rows[-1]["id"]
        elif self._health_after is None:
            self._health_after = 0
        snapshot = next((r for r in reversed(rows) if r["kind"] == "snapshot"), None)
        health = {
            "device": self.device,
            "backlog": store.backlog(),
            "delivered": self.stats.delivered,
            "connects": self.stats.connects,
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "snapshot": snapshot,
            "events": [r for r in rows if r["kind"] != "snapshot"],
        }
        self.client.publish(self.health_topic, json.dumps(health), qos=0)
