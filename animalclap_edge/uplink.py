"""The uplink role: what sends the store's outbox off the recorder, and what every
uplink shares.

An uplink drains the outbox (`store.DetectionStore.pending_outbox`) in a background
thread, marks a message delivered only when the far end acknowledged it, sets aside a
message refused `max_attempts` times in a row, and sends heartbeats with the health
events logged since the last one. `publish.MqttPublisher` (MQTT) and
`publish_http.HttpPublisher` (HTTP POST) are the two; `Runtime(uplink=...)` takes any
object of the `Uplink` shape.

One uplink per database: the outbox keeps one delivered mark per message, so a second
sender would either send everything twice or leave what the first marked unsent
elsewhere. `UplinkLock` (an flock on `<db>.uplink.lock`) holds that across processes
and the config refuses two enabled uplinks.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone  # not datetime.UTC: 3.11+, JetPack 6 has 3.10
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from animalclap_edge.db_lock import DbLock
from animalclap_edge.records import is_event_id
from animalclap_edge.sources.clock import system_clock_synchronized
from animalclap_edge.store import DetectionStore, StoreError

if TYPE_CHECKING:
    from animalclap_edge.config import EdgeConfig

HEALTH_EVENTS_MAX = 100  # health events per heartbeat
STILL_FAILING_EVERY_S = 3600.0  # a connection failing since start is said again this often


class PublishError(RuntimeError):
    """The uplink cannot be set up; the message says why."""


class UplinkBusy(PublishError):
    """Another process holds this database's uplink lock."""

    def __init__(self, db: Path, pid: int):
        self.pid = pid
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"another uplink ({who}) is sending for {db}")


class UplinkLock(DbLock):
    """One sender per outbox: two (`run` with MQTT on, and `publish` beside it) each
    sent every message (found in a walkthrough)."""

    role = "uplink"

    def busy(self, pid: int) -> Exception:
        return UplinkBusy(self.db, pid)

    def cannot(self, why: str) -> Exception:
        return PublishError(
            f"{self.path}: cannot create the uplink lock ({why}); the database's folder "
            "must be writable to send from it"
        )


@dataclass
class PublisherStats:
    delivered: int = 0
    published: int = 0  # messages sent, including re-sends after a lost connection
    connects: int = 0
    connect_failures: int = 0
    refused: int = 0  # refusals: PUBACK reason codes or HTTP 4xx, disconnects while sent alone
    set_aside: int = 0  # messages given up on by this publisher (kept in the outbox)
    last_error: str = ""  # the latest problem of any kind
    last_connect_error: str = ""  # why the latest connection attempt failed
    protocol: str = "5"  # MQTT: "5" or "3.1.1" (a broker that refused v5); HTTP: "http"
    protocol_note: str = ""  # why not v5


class Uplink(Protocol):
    """What `Runtime` and `animalclap-edge publish` need of an uplink."""

    name: str  # "mqtt", "http": the source of its rows in the health table
    stats: PublisherStats
    max_backoff_s: float  # the longest wait between failed attempts

    def describe(self) -> str:
        """Where it sends, for the line said at start."""
        ...

    def start(self) -> Uplink:
        """Take the database's uplink lock (UplinkBusy if another sender has it), then
        send in the background."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the far end answered the latest attempt."""
        ...

    def backlog(self) -> int: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def finish(self, timeout_s: float = 10.0) -> int:
        """Up to timeout_s to empty the outbox, then stop; returns what is left."""
        ...

    def summary(self) -> str:
        """One line: delivered, set aside, and the last connection error if any."""
        ...


def uplink_from_config(
    db_path: str | Path,
    cfg: EdgeConfig,
    role: str = "recorder",
    say: Callable[[str], None] | None = None,
) -> Uplink | None:
    """The uplink `cfg.messaging` enables (None when none is): its module, and with it
    paho-mqtt for MQTT, is imported only then."""
    which = cfg.messaging.uplink
    if which == "mqtt":
        from animalclap_edge.publish import MqttPublisher

        return MqttPublisher.from_config(db_path, cfg, role=role, say=say)
    if which == "http":
        from animalclap_edge.publish_http import HttpPublisher

        return HttpPublisher.from_config(db_path, cfg, role=role, say=say)
    return None


class OutboxSender:
    """The bookkeeping every uplink shares: its lock and thread, refusals and setting
    aside, failed attempts said and logged once per outage, and the heartbeat. A
    subclass sets `name` and writes `run`, its thread's body, with these:

    - `store.pending_outbox(n)`: (message id, payload JSON) still to send, events first;
      `self.delivered(store, ids)` once the far end has them;
    - `self.connected_to(where)` after an answer, `self.failed(why)` after none (an
      outage is said once at its start and once at its end, logged once per reason);
    - `self.refused(store, id, why)` for one message the far end will not take (set
      aside after `max_attempts` in a row), `self.set_aside(store, id, why)` at once;
    - `self.heartbeat(store)` -> (body, marker): the state and the health events since
      the last acknowledged one; `self.heartbeat_sent(marker)` once acknowledged;
    - `self.stopping`, and `self.wait(s)` (True when stopped meanwhile).

    `max_backoff_s`: the longest wait between failed attempts; `max_attempts`:
    refusals in a row before a message is set aside."""

    name = "uplink"

    def __init__(
        self,
        db_path: str | Path,
        device: str,
        max_backoff_s: float,
        max_attempts: int,
        say: Callable[[str], None] | None,
        role: str = "recorder",
        heartbeat_s: float = 60.0,
    ):
        # role: "recorder" (`run`) or "uploader" (`publish`), as heartbeats say it
        self.db_path, self.device, self.role = Path(db_path), device, role
        self.heartbeat_s = heartbeat_s
        self.max_backoff_s, self.max_attempts = max_backoff_s, max_attempts
        self._say = say or (lambda message: None)
        self._said_failing_at = 0.0  # when a failing connection was last said
        self._failures_logged: set[str] = set()  # reasons in the health log this outage
        self._outage = (0, 0.0)  # (connect_failures, monotonic time) when this one began
        self._health_after: int | None = None  # last health row acknowledged; None: none yet
        self.stats = PublisherStats(protocol=self.name)
        self._cert_end: datetime | None = None  # the client certificate's end, when TLS
        self.lock = UplinkLock(self.db_path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """The sending thread's body: send until `stopping`."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where it sends, for the line said at start."""
        return f"{self.name} uplink"

    @property
    def connected(self) -> bool:
        """Whether the far end answered the latest attempt."""
        return self.stats.connects > 0 and not self._failures_logged

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, less if stopped meanwhile; True when stopped."""
        return self._stop.wait(seconds)

    def summary(self) -> str:
        """One line: delivered, set aside, and the last connection error if any."""
        s = self.stats
        parts = [f"{s.delivered} delivered", *self._summary_notes()]
        if s.last_connect_error:
            parts.append(f"last connection error: {s.last_connect_error}")
        return ", ".join(parts)

    def _summary_notes(self) -> list[str]:
        """The summary's middle: what this uplink adds to its delivered count."""
        return [f"{self.stats.set_aside} set aside"] if self.stats.set_aside else []

    def start(self) -> OutboxSender:
        """Take the database's uplink lock (UplinkBusy if another sender has it), then
        run `run` in a daemon thread."""
        self.lock.acquire()
        self._thread = threading.Thread(
            target=self._sending, name=f"{self.name}-uplink", daemon=True
        )
        self._thread.start()
        return self

    def _sending(self) -> None:
        """`run` until stopped, the lock released when it ends. An exception `run` did
        not expect ended the thread unseen (an SSH port's banner to an HTTP client),
        and the backlog grew until a restart: said, logged, and `run` again after a
        wait."""
        backoff = 1.0
        try:
            while not self.stopping:
                try:
                    self.run()
                    return
                except Exception as e:  # any: the uplink must go on
                    why = f"{type(e).__name__}: {e}"[:300]
                    self.stats.last_error = why
                    self._say(f"uplink: {self.name} failed ({why}); starting it again")
                    with contextlib.suppress(sqlite3.Error, StoreError):
                        self._health("uplink_failed", {"why": why})
                    self.wait(backoff)
                    backoff = min(self.max_backoff_s, backoff * 2)
        finally:
            self.lock.release()  # here, not in stop(): a thread still sending holds it

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop and wait up to `timeout`; it releases the lock as it
        ends (now, if it never started)."""
        self._stop.set()
        if self._thread is None:
            self.lock.release()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._say(
                f"uplink: {self.name} still sending after {timeout:g} s; the uplink lock "
                "is released when it ends"
            )

    def backlog(self) -> int:
        """Messages still to send (neither delivered nor set aside)."""
        with DetectionStore(self.db_path) as store:
            return store.backlog()

    def finish(self, timeout_s: float = 10.0) -> int:
        """Up to timeout_s to empty the outbox, then stop; returns what is left."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.backlog():
            time.sleep(0.2)
        self.stop()
        return self.backlog()

    def _warn_of_expiry(self, cfg: Any, section: str) -> datetime | None:
        """Say at start which certificate of `cfg` (`section`'s TLS settings) has expired
        or ends within WARN_DAYS (a recorder left out for months outlives one); returns
        the client certificate's end, for the heartbeat and the connection errors."""
        from animalclap_edge.certs import cert_end, expiry_note

        ends = {}
        for setting in ("cert_file", "ca_file"):
            path = getattr(cfg, setting)
            ends[setting] = end = cert_end(path) if path else None
            if end is not None and (note := expiry_note(setting, path, end, section=section)):
                self._say(f"uplink: WARNING: {note}")
        return ends["cert_file"]

    @property
    def cert_not_after(self) -> str | None:
        """The client certificate's end, ISO 8601 UTC, as the heartbeat carries it."""
        return None if self._cert_end is None else self._cert_end.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _cert_expired(self) -> bool:
        return self._cert_end is not None and self._cert_end <= datetime.now(timezone.utc)

    def _expired_hint(self, cert_file: str | None) -> str:
        return f" (the client certificate in cert_file {cert_file} expired on {self.cert_not_after}: renew it)"

    def connected_to(self, where: str) -> None:
        """After an answer: count a connection; the end of an outage is logged and said once: a journal
        that said only the first outage read "connected" through every later one."""
        if self._failures_logged:  # the outage logged ends: the next one is logged again
            self._failures_logged.clear()
            self._health("uplink_connected", {"attempts": self.stats.connect_failures})
            failed = self.stats.connect_failures - self._outage[0]
            lasted = time.monotonic() - self._outage[1]
            again = " again" if self.stats.connects else ""
            self._say(
                f"uplink: connected{again} to {where} after {failed} failed attempt(s) in "
                f"{lasted:.0f} s"
            )
        self.stats.connects += 1

    def failed(self, why: str) -> None:
        """After no answer: an outage begins (said and logged) or goes on."""
        self.stats.connect_failures += 1
        self.stats.last_error = self.stats.last_connect_error = why
        now = time.monotonic()
        if not self._failures_logged:  # an outage begins: said; its other attempts are not
            self._outage = (self.stats.connect_failures - 1, now)
            self._say(
                f"uplink: {why}; retrying with backoff up to {self.max_backoff_s:g} s "
                "(detections stay in the outbox)"
            )
            self._said_failing_at = now
        elif now - self._said_failing_at >= STILL_FAILING_EVERY_S:
            # a recorder whose password was rotated went quiet after one line at start
            self._say(
                f"uplink: still not connected ({self.stats.connect_failures} attempts): {why}"
            )
            self._said_failing_at = now
        if why not in self._failures_logged:
            # in the card's health log (`report health`), each reason once per outage:
            # a network down for months alternates a few reasons, not thousands of rows
            self._failures_logged.add(why)
            self._health(
                "uplink_connect_failed", {"why": why, "attempts": self.stats.connect_failures}
            )

    def refused(self, store: DetectionStore, msg_id: str, why: str) -> None:
        """One message the far end will not take: set aside after max_attempts in a row."""
        self.stats.refused += 1
        self.stats.last_error = f"{msg_id}: {why}"
        attempts = store.record_refusal(msg_id, why)
        if attempts >= self.max_attempts:
            self.set_aside(store, msg_id, f"{why}; {attempts} refusals in a row")

    def set_aside(self, store: DetectionStore, msg_id: str, why: str) -> None:
        """Stop sending one message, keeping it and why (said for the first three)."""
        if not store.set_aside(msg_id, why):
            return
        self.stats.set_aside += 1
        self.stats.last_error = f"{msg_id} set aside: {why}"
        key = "event_id" if is_event_id(msg_id) else "detection_id"
        self._health("uplink_set_aside", {key: msg_id, "why": why})
        if self.stats.set_aside <= 3:  # every one is in the health table and counted
            self._say(
                f"uplink: message {msg_id} set aside, not sent: {why}; the rest goes on "
                "(`animalclap-edge publish --retry-set-aside` queues it again)"
            )

    def _health(self, kind: str, detail: dict) -> None:
        """A health event about the uplink itself, in the recorder's health table."""
        with DetectionStore(self.db_path) as store:
            store.add_health(kind, self.name, detail)

    def delivered(self, store: DetectionStore, ids: list[str]) -> int:
        """Mark `ids` delivered; returns how many were still to send."""
        n = store.mark_delivered(ids)
        self.stats.delivered += n
        return n

    def heartbeat(self, store: DetectionStore) -> tuple[dict[str, Any], int]:
        """(the heartbeat's body, its marker): pass the marker to `heartbeat_sent`
        once the far end acknowledged it, or the same health events come again."""
        rows = self._health_rows(store)
        marker = rows[-1]["id"] if rows else (self._health_after or 0)
        return heartbeat_body(self._heartbeat_fields(store), rows), marker

    def heartbeat_sent(self, marker: int) -> None:
        self._health_after = marker

    def _health_rows(self, store: DetectionStore) -> list[dict[str, Any]]:
        """The health rows the next heartbeat carries: those after the last one the far
        end acknowledged, or the newest at the first beat since start; at most 100."""
        if self._health_after is None:
            return store.health(0, HEALTH_EVENTS_MAX, newest=True)
        return store.health(self._health_after, HEALTH_EVENTS_MAX)

    def _heartbeat_fields(self, store: DetectionStore) -> dict[str, Any]:
        """The heartbeat's uplink state, shared by every uplink's heartbeat."""
        s = self.stats
        return {
            "device": self.device,
            "role": self.role,  # a `publish` beside `run` sends heartbeats too
            "heartbeat_s": self.heartbeat_s,  # how long a silence is one missed beat
            "backlog": store.backlog(),
            "set_aside": store.set_aside_count(),
            "delivered": s.delivered,
            "connects": s.connects,
            "connect_failures": s.connect_failures,
            "last_connect_error": s.last_connect_error or None,
            "protocol": s.protocol,
            "cert_not_after": self.cert_not_after,  # the client certificate's end, or None
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            # a board that booted at 2000-01-01 sent heartbeats of that year, unflagged
            "utc_synchronized": system_clock_synchronized()[0],
        }


def heartbeat_body(fields: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A heartbeat: the uplink's `fields`, the newest snapshot among `rows` and the
    other rows as events."""
    snapshot = next((r for r in reversed(rows) if r["kind"] == "snapshot"), None)
    return dict(fields, snapshot=snapshot, events=[r for r in rows if r["kind"] != "snapshot"])
