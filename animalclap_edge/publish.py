"""The MQTT uplink: drains the store's outbox, marks a message delivered on PUBACK.

A detection's or merged event's message is its own row in the store (queued when it
is logged: `store.DetectionStore.add_detections`, `add_events`), so nothing logged is
ever missing from the outbox. The publisher reads undelivered messages (events first, then
detections, each oldest first), publishes each at QoS 1 to
`<prefix>/<device>/detections` or `<prefix>/<device>/events`, and marks it delivered
only when the broker
acknowledges it with a success reason code (MQTT v5; a v3.1.1 broker cannot say
no); on a lost connection it reconnects with exponential backoff for as long as it
takes and sends what is still undelivered. Delivery is at least once; payloads
carry `detection_id` or `event_id`, so consumers de-duplicate to exactly once.

A message is published once per connection: one without an acknowledgement stays
in flight until the connection is lost, and is then published once more on the
next. A message the broker refuses (a PUBACK reason code, a disconnect while it was
the only one in flight, or one larger than the broker's advertised maximum packet
size) is set aside in the outbox after `max_attempts` refusals, so that one bad
message never blocks the rest; `publish --retry-set-aside` queues them again.

One sender per database: `UplinkLock` (an flock on `<db>.uplink.lock`, db_lock.py).

A retained `<prefix>/<device>/status` says "online"; the broker publishes the
last will "offline" there if the recorder vanishes. Heartbeats on
`<prefix>/<device>/health` carry the outbox backlog. paho-mqtt is imported only
when a publisher is made.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from animalclap_edge.config import EdgeConfig, MqttConfig
from animalclap_edge.records import is_event_id
from animalclap_edge.store import DetectionStore
from animalclap_edge.uplink import (  # PublishError... importable from here as before
    OutboxSender,
    PublishError,
    PublisherStats,
    UplinkBusy,
    UplinkLock,
    heartbeat_body,
)

__all__ = [
    "MqttPublisher",
    "PublishError",
    "PublisherStats",
    "UplinkBusy",
    "UplinkLock",
    "packet_size",
    "tls_context",
]

MQTT_INSTALL_HINT = "MQTT uplink needs paho-mqtt: pip install 'animalclap-edge[mqtt]'"
CONNACK_WAIT_S = 15.0  # a broker that accepts TCP but never answers CONNECT
# a broker's refusal of the credentials: MQTT 5 reason codes 0x86 and 0x87, 3.1.1's 4 and 5
_AUTH_REFUSALS = ("not authorized", "bad user name or password")


# OpenSSL's verify codes whose fix is not the CA: a recorder without a battery-backed
# clock boots in the past until NTP sets it, and every certificate looks not yet valid.
_CERT_FIXES = {
    9: "it is not valid yet by this recorder's clock: set the clock (NTP, or an RTC "
    "battery), since a recorder without one starts in the past",
    10: "it has expired, or this recorder's clock is ahead: renew the broker's certificate, "
    "or set the clock",
    62: "it does not name {host}: set messaging.mqtt.host to a name or address the "
    "certificate lists",
}
_CERT_FIXES[64] = _CERT_FIXES[62]  # an IP address the certificate does not list


def _accept_mosquitto_puback_codes() -> None:
    """mosquitto (2.0.11 tested) answers a PUBLISH over `message_size_limit` with a PUBACK
    carrying 0x95 "Packet too large", a code the MQTT 5 spec lists for CONNACK and
    DISCONNECT only. paho refuses that PUBACK as malformed and drops the connection
    ("Protocol error"), so the refusal's reason was lost and the message was sent
    again forever. Accepting 0x95 on PUBACK too only widens what paho decodes."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    names = dict(ReasonCode.names)
    entry = {k: list(v) for k, v in names.get(0x95, {}).items()}
    for packets in entry.values():
        if PacketTypes.PUBACK not in packets:
            packets.append(PacketTypes.PUBACK)
    names[0x95] = entry
    ReasonCode.names = MappingProxyType(names)


def packet_size(topic: str, payload: bytes, v5: bool) -> int:
    """Bytes of a QoS 1 PUBLISH (fixed header, topic, packet id, v5 properties length)."""
    rest = 2 + len(topic.encode("utf-8")) + 2 + (1 if v5 else 0) + len(payload)
    n = 1
    while rest >= 128**n:
        n += 1
    return 1 + n + rest


class TlsSettings(Protocol):
    """An uplink section's TLS settings (config.MqttConfig, config.HttpConfig)."""

    TLS_FILES: ClassVar[tuple[str, ...]]

    @property
    def tls(self) -> bool: ...
    @property
    def ca_file(self) -> str | None: ...
    @property
    def cert_file(self) -> str | None: ...
    @property
    def key_file(self) -> str | None: ...


def tls_context(cfg: TlsSettings, section: str = "messaging.mqtt") -> ssl.SSLContext | None:
    """The TLS context of `cfg`'s connections, or None without TLS; built once at
    start (and by `config check`), so a file that cannot be used is a PublishError
    naming the setting (`section`.key; ssl's own words are "PEM lib"). A renewed
    certificate is read at the next start."""
    peer = "broker" if section.endswith("mqtt") else "server"
    if not cfg.tls:
        return None

    def why(e: OSError) -> str:
        if isinstance(e, ssl.SSLError):
            return f"unusable ({e.reason or e})"
        return (e.strerror or str(e)).lower()

    for setting in cfg.TLS_FILES:
        path = getattr(cfg, setting)
        if path and not Path(path).is_file():
            raise PublishError(f"{section}.{setting} {path}: no such file")
    from animalclap_edge.secret_files import key_file_problem

    # the private key, in key_file or with the certificate: checked before OpenSSL
    # reads it, which asks a terminal for an encrypted key's passphrase
    key = ("key_file", cfg.key_file) if cfg.key_file else ("cert_file", cfg.cert_file)
    if key[1] and (problem := key_file_problem(key[1], f"{section}.{key[0]}")):
        raise PublishError(problem)
    try:  # verifies the broker's certificate and host name; cafile: only that CA
        context = ssl.create_default_context(cafile=cfg.ca_file)
    except OSError as e:
        raise PublishError(
            f"{section}.ca_file {cfg.ca_file}: {why(e)}; it must be the PEM file "
            f"of the CA that signed the {peer}'s certificate"
        ) from None
    if cfg.cert_file:
        try:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        except OSError as e:
            with_key = f" / key_file {cfg.key_file}" if cfg.key_file else ""
            raise PublishError(
                f"{section}.cert_file {cfg.cert_file}{with_key}: {why(e)}; they must be "
                "a PEM client certificate and the private key that matches it"
            ) from None
    return context


class MqttPublisher(OutboxSender):
    """The MQTT uplink (the module's docstring says how it sends)."""

    name = "mqtt"

    def __init__(
        self,
        db_path: str | Path,
        cfg: MqttConfig,
        device_id: str | None = None,
        batch: int = 100,
        role: str = "recorder",
        poll_s: float = 0.5,
        heartbeat_s: float = 60.0,
        max_backoff_s: float = 60.0,
        max_attempts: int = 3,
        say: Callable[[str], None] | None = None,
        keepalive_s: int = 30,
    ):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise PublishError(MQTT_INSTALL_HINT) from None
        _accept_mosquitto_puback_codes()
        self._mqtt = mqtt
        super().__init__(
            db_path,
            device_id or socket.gethostname(),
            max_backoff_s,
            max_attempts,
            say,
            role=role,
            heartbeat_s=heartbeat_s,
        )
        self.stats.protocol = "5"  # "3.1.1" after a broker that refuses v5
        self.cfg = cfg
        prefix = f"{cfg.topic_prefix}/{self.device}"
        self.topic, self.events_topic = f"{prefix}/detections", f"{prefix}/events"
        # the recorder's online/offline is `run`'s; a `publish` beside it (or a one-shot
        # upload) says its own, so that its stop does not mark a running recorder offline
        where = prefix if role == "recorder" else f"{prefix}/{role}"
        self.status_topic, self.health_topic = f"{where}/status", f"{prefix}/health"
        # batch: the most messages in flight (published, not yet acknowledged) at once
        self.batch, self.poll_s, self.keepalive_s = batch, poll_s, keepalive_s
        self._password = self._read_password()
        if warning := cfg.clear_text_password_warning():
            self._say(f"uplink: {warning}")
        self._tls = self._tls_context()
        if self._tls is not None:
            self._cert_end = self._warn_of_expiry(cfg, "messaging.mqtt")
        self._protocol = mqtt.MQTTv5
        self._protocol_just_changed = False  # retry at once, without the backoff
        self._connected = threading.Event()
        self._connack = threading.Event()  # CONNACK, refusal or close: the attempt is over
        self._refusal = ""  # why the broker refused this connection attempt
        self._accepted = False  # this client's CONNACK was a success
        self._max_packet = 0  # the broker's Maximum Packet Size (v5 CONNACK); 0: not said
        self._acks: dict[int, Any] = {}  # mid -> paho's ReasonCode, filled by paho's thread
        self._acked = threading.Condition()
        self._suspects: list[str] = []  # in flight when the last connection was lost
        self.client = self._make_client()

    @classmethod
    def from_config(cls, db_path: str | Path, cfg: EdgeConfig, **kw) -> MqttPublisher:
        """A publisher with `messaging.mqtt`'s settings under the recorder's name
        (`device.name`, or the host name); `kw` as the constructor's (role, say...)."""
        mq = cfg.messaging.mqtt
        return cls(
            db_path, mq, device_id=cfg.device.resolved_name(), heartbeat_s=mq.heartbeat_s, **kw
        )

    def _read_password(self) -> str | None:
        cfg = self.cfg
        if not (cfg.username and cfg.password_file):
            return None
        from animalclap_edge.secret_files import SecretFileError, read_secret

        try:
            return read_secret(cfg.password_file, "messaging.mqtt.password_file")
        except SecretFileError as e:
            raise PublishError(str(e)) from None

    def _tls_context(self):
        """The TLS context every connection uses, or None (`tls_context`)."""
        return tls_context(self.cfg)

    def _make_client(self):
        """A new paho client per connection: paho re-sends its own queue after a
        reconnect, and with it the one message a broker disconnects for, forever."""
        mqtt, cfg = self._mqtt, self.cfg
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            # one per process: `run` and `publish` on one recorder (or two recorders
            # cloned from one image) with one id threw each other off the broker every
            # second. The outbox is the session, so nothing needs a stable id.
            client_id=cfg.client_id or f"animalclap-{self.device}-{os.getpid()}",
            protocol=self._protocol,
            reconnect_on_failure=False,  # reconnects are ours (see above)
        )
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        if cfg.username:
            client.username_pw_set(cfg.username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        self._accepted, self._refusal, self._max_packet = False, "", 0
        self._connack.clear()
        with self._acked:
            self._acks.clear()

        def on_connect(c, userdata, flags, reason_code, properties):
            if not reason_code.is_failure:
                self._accepted = True
                self._max_packet = int(getattr(properties, "MaximumPacketSize", 0) or 0)
                c.publish(self.status_topic, "online", qos=1, retain=True)
                self._connected.set()
            else:
                self._refusal = f"broker refused the connection: {reason_code}"
            self._connack.set()

        def on_disconnect(c, userdata, flags, reason_code, properties):
            self._connected.clear()
            # after a refused CONNACK paho reports "Unspecified error" here: the
            # refusal ("Not authorized") is the reason, so it is kept
            if self._accepted and reason_code.is_failure:
                self.stats.last_error = f"disconnected: {reason_code}"
            elif not self._accepted and not self._refusal:
                self._refusal = f"connection closed before the broker accepted it: {reason_code}"
            self._connack.set()
            with self._acked:
                self._acked.notify_all()

        def on_publish(c, userdata, mid, reason_code, properties):
            # paho's thread, holding paho's locks: record only, never call paho here
            with self._acked:
                self._acks[mid] = reason_code
                self._acked.notify_all()

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        client.on_publish = on_publish
        return client

    # -- lifecycle ------------------------------------------------------------

    def describe(self) -> str:
        return f"mqtt {self.cfg.host}:{self.cfg.port} topics {self.topic}, {self.events_topic}"

    def start(self) -> MqttPublisher:
        """Take the database's uplink lock (UplinkBusy if another sender has it), then
        send in a background thread."""
        super().start()
        return self

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up now."""
        return self._connected.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._acked:  # the session's wait for acknowledgements ends now
            self._acked.notify_all()
        super().stop(timeout)

    def _summary_notes(self) -> list[str]:
        notes = super()._summary_notes()
        return notes + ([f"MQTT {self.stats.protocol}"] if self.stats.protocol != "5" else [])

    def run(self) -> None:
        """Connect (retrying with backoff), then drain the outbox until stopped."""
        backoff = 1.0
        with DetectionStore(self.db_path) as store:
            while not self._stop.is_set():
                if not self._connect():
                    if self.stats.protocol_note and self._protocol_just_changed:
                        continue  # the same broker at once, with 3.1.1
                    self._stop.wait(backoff)
                    backoff = min(self.max_backoff_s, backoff * 2)
                    continue
                backoff = 1.0
                try:
                    self._session(store)
                finally:
                    self._close()

    def _connect(self) -> bool:
        """One connection attempt with a new client; True when the broker accepted it."""
        self._protocol_just_changed = False
        self.client = client = self._make_client()
        host, port = self.cfg.host, self.cfg.port
        try:
            client.connect(host, port, keepalive=self.keepalive_s)
        except (OSError, ValueError) as e:  # refused, no route, DNS, TLS handshake
            self.failed(f"cannot reach {host}:{port}: {self._tls_hint(e)}")
            return False
        client.loop_start()
        self._connack.wait(CONNACK_WAIT_S)
        if self._accepted:
            self.connected_to(f"{host}:{port}")
            return True
        why = self._refusal or f"no answer from {host}:{port} within {CONNACK_WAIT_S:g} s"
        if any(words in why.lower() for words in _AUTH_REFUSALS):
            why += (
                f" (as messaging.mqtt.username {self.cfg.username!r} with the password in "
                f"password_file {self.cfg.password_file}: check both against the broker's "
                "accounts)"
                if self.cfg.username
                else " (no messaging.mqtt.username is set: this broker wants a user name "
                "and password_file)"
            )
        client.disconnect()
        client.loop_stop()
        if self._protocol == self._mqtt.MQTTv5 and "protocol version" in why.lower():
            # an old broker (mosquitto < 1.6): v3.1.1 cannot say why a message was
            # refused, so this is recorded and said, never taken silently
            self._protocol = self._mqtt.MQTTv311
            self._protocol_just_changed = True
            self.stats.protocol = "3.1.1"
            self.stats.protocol_note = f"{host}:{port} refused MQTT 5 ({why}); using 3.1.1"
            self._say(
                f"uplink: {self.stats.protocol_note}: a message the broker drops (over its "
                "size limit) can look delivered"
            )
            self._health("uplink_protocol_fallback", {"why": why, "protocol": "3.1.1"})
            return False
        if self._refusal.startswith("connection closed"):
            # paho reports only "Unspecified error" for a broker that ends the session
            # unanswered; two settings cause it that the broker cannot name
            if self._tls is None:
                why += " (a TLS port closes plain MQTT so: set tls: true?)"
            elif not self.cfg.cert_file:
                why += (
                    " (a TLS broker that requires a client certificate closes the "
                    "connection so: set messaging.mqtt.cert_file and key_file)"
                )
            else:
                why += (
                    self._expired_hint(self.cfg.cert_file)
                    if self._cert_expired()
                    else " (a TLS broker closes the connection so where it does not accept "
                    f"the client certificate in cert_file {self.cfg.cert_file}: is it "
                    "signed by a CA the broker trusts?)"
                )
        self.failed(why)
        return False

    def _tls_hint(self, e: Exception) -> str:
        """ssl's words for a failed handshake, with the setting that fixes it."""
        if isinstance(e, ssl.SSLCertVerificationError):
            fix = _CERT_FIXES.get(e.verify_code) or (
                "set messaging.mqtt.ca_file to the CA that signed it"
                if not self.cfg.ca_file
                else f"it was not signed by the CA in ca_file {self.cfg.ca_file}"
            )
            fix = fix.format(host=self.cfg.host)
            return f"TLS: the broker's certificate was not accepted ({e.verify_message}): {fix}"
        if self._tls is not None and (
            isinstance(e, ConnectionResetError) or "wrong version number" in str(e).lower()
        ):  # a plain broker resets a TLS handshake, or answers it in plain MQTT
            return f"{e} (TLS to a port without it: is {self.cfg.port} the broker's TLS port?)"
        if isinstance(e, ssl.SSLError) and self._cert_expired():  # refused in the handshake
            return f"{e}{self._expired_hint(self.cfg.cert_file)}"
        return str(e)

    def _close(self) -> None:
        client = self.client
        try:
            if self._stop.is_set() and self._connected.is_set():
                client.publish(self.status_topic, "offline", qos=1, retain=True).wait_for_publish(2)
        except (RuntimeError, ValueError):
            pass
        finally:
            client.disconnect()
            client.loop_stop()
            self._connected.clear()

    # -- one connection ---------------------------------------------------------

    def _session(self, store: DetectionStore) -> None:
        """Send until the connection is lost or the publisher stopped. A message is
        published once on this connection: paho keeps it until acknowledged, and a
        stalled network (TCP still open) must not queue copy after copy of it."""
        inflight: dict[int, str] = {}  # mid -> message id, in publish order
        self._hb: tuple[int, int | None] | None = None  # heartbeat mid, last event id
        suspects, probing = list(self._suspects), None  # sent alone, one at a time
        last_beat = 0.0
        while not self._stop.is_set() and self._connected.is_set():
            self._collect(store, inflight)
            if probing is not None and probing not in inflight.values():
                probing = None  # answered
            if suspects and probing is None and not inflight:
                # after a lost connection, what was in flight goes alone: a broker that
                # disconnects for one message (max_packet_size) names it so
                probing = self._next_suspect(store, suspects)
                if probing is not None:
                    self._publish(store, inflight, [probing])
            elif not suspects and probing is None and len(inflight) < self.batch:
                self._publish(store, inflight, self._pending(store, inflight))
            now = time.monotonic()
            if probing is None and self._hb is None and now - last_beat >= self.heartbeat_s:
                self._heartbeat(store)
                last_beat = now
            with self._acked:
                if not self._acks and self._connected.is_set() and not self._stop.is_set():
                    self._acked.wait(self.poll_s)
        self._collect(store, inflight)
        if probing is not None and probing in inflight.values() and not self._stop.is_set():
            why = f"the broker closed the connection while it was sent alone ({self.stats.last_error})"
            self.refused(store, probing, why)
        # published once more, one at a time, on the next connection
        self._suspects = list(dict.fromkeys(list(inflight.values()) + suspects))

    def _pending(self, store: DetectionStore, inflight: dict[int, str]) -> list[str]:
        busy = set(inflight.values())
        rows = store.pending_outbox(self.batch + len(busy))
        return [d for d, _ in rows if d not in busy][: self.batch - len(busy)]

    def _next_suspect(self, store: DetectionStore, suspects: list[str]) -> str | None:
        still = {d for d, _ in store.pending_payloads(suspects)}
        while suspects:
            d = suspects.pop(0)
            if d in still:
                return d
        return None

    def _publish(self, store: DetectionStore, inflight: dict[int, str], ids: list[str]) -> None:
        if not ids:
            return
        payloads = dict(store.pending_payloads(ids))
        v5 = self._protocol == self._mqtt.MQTTv5
        for msg_id in ids:
            if msg_id not in payloads:
                continue  # delivered or set aside meanwhile (another pass, retention)
            payload = payloads[msg_id].encode("utf-8")
            topic = self.events_topic if is_event_id(msg_id) else self.topic
            size = packet_size(topic, payload, v5)
            if self._max_packet and size > self._max_packet:
                # the broker said it disconnects for this: never sent, set aside at once
                self.set_aside(
                    store,
                    msg_id,
                    f"{size}-byte message over the broker's maximum packet size "
                    f"{self._max_packet} (raise max_packet_size on the broker)",
                )
                continue
            info = self.client.publish(topic, payload, qos=1)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                self.stats.last_error = f"publish: {self._mqtt.error_string(info.rc)}"
                break  # not connected: the rest waits for the next connection
            inflight[info.mid] = msg_id
            self.stats.published += 1

    def _collect(self, store: DetectionStore, inflight: dict[int, str]) -> None:
        """Mark the acknowledged messages delivered and count the refused ones."""
        with self._acked:
            acks, self._acks = self._acks, {}
        delivered = []
        for mid, reason in acks.items():
            if self._hb is not None and mid == self._hb[0]:
                if not reason.is_failure:  # the events it carried are sent: move on
                    self._health_after = self._hb[1]
                else:
                    self.stats.last_error = f"heartbeat refused: {reason}"
                self._hb = None
                continue
            msg_id = inflight.pop(mid, None)
            if msg_id is None:
                continue  # the retained status
            if reason.is_failure:
                self.refused(store, msg_id, f"the broker refused it: {reason}")
            else:
                delivered.append(msg_id)
        if delivered:
            self.delivered(store, delivered)

    def _heartbeat(self, store: DetectionStore) -> None:
        """Uplink state, the newest health snapshot, and the health events (source lost,
        reopened, database recovered...) logged since the last acknowledged heartbeat, at
        most 100. QoS 1, and the marker of the events sent moves on only when the broker
        acknowledges the heartbeat: a lost one is sent again with the next."""
        rows = self._health_rows(store)
        # cert_not_after: the client certificate's end, or None
        fields = self._heartbeat_fields(store)
        v5 = self._protocol == self._mqtt.MQTTv5
        while True:
            payload = json.dumps(heartbeat_body(fields, rows)).encode("utf-8")
            size = packet_size(self.health_topic, payload, v5)
            if not self._max_packet or size <= self._max_packet or not rows:
                break
            rows = rows[: len(rows) // 2]  # the rest goes with the next heartbeats
        upto = rows[-1]["id"] if rows else (self._health_after or 0)
        info = self.client.publish(self.health_topic, payload, qos=1)
        if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
            self._hb = (info.mid, upto)
