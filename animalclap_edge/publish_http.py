"""The HTTP uplink: POSTs the store's outbox to one URL as JSON batches, and marks a
batch delivered when the server answers 2xx.

For networks that pass only web traffic (an institution's firewall, a cellular
gateway, a field station's proxy: `https_proxy` is honoured) and for servers that take
webhooks rather than MQTT. The body of each POST (Content-Type: application/json):

    {"device": "<name>", "kind": "detections" | "events" | "health", "messages": [...]}

`messages` holds the payloads MQTT would publish, each with its `detection_id` or
`event_id`, so a server de-duplicates to exactly once (delivery is at least once). A
heartbeat is one message: MQTT's health payload. Headers: `Authorization: Bearer
<token>` when `token_file` is set, and `Idempotency-Key`, the same for the same batch.

What the server's status means:
- 2xx: every message of the batch is delivered.
- 400, 413, 415, 422: the batch is refused for what it holds. A batch of several is
  sent again in halves until the message at fault goes alone; one refused alone counts
  a refusal and is set aside after `max_attempts` in a row (413 alone: at once, it will
  never fit), so one bad message never blocks the rest.
- 401, 403 (the token), 3xx, 404, 405, 410 (the url: a redirected POST is not
  followed), 408, 429, 5xx, timeouts and network errors: no message is at fault. Said
  and logged as a failed connection (once per reason per outage), then retried with
  exponential backoff up to `max_backoff_s` (a Retry-After is honoured within that).
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from animalclap_edge import __version__
from animalclap_edge.config import EdgeConfig, HttpConfig
from animalclap_edge.publish import tls_context
from animalclap_edge.records import is_event_id
from animalclap_edge.store import DetectionStore
from animalclap_edge.uplink import OutboxSender, PublishError, heartbeat_body

REFUSED_FOR_CONTENT = frozenset({400, 413, 415, 422})
_URL_WRONG = frozenset({404, 405, 410})
_TOKEN_REFUSED = frozenset({401, 403})
# OpenSSL's verify codes a recorder's clock causes: it boots in the past until NTP sets it
_CLOCK_CODES = {9: "not valid yet", 10: "expired"}


@dataclass(frozen=True)
class Answer:
    """The outcome of one POST: `status` None when no HTTP answer came."""

    status: int | None
    why: str = ""  # for a failure: what went wrong and the setting that fixes it
    retry_after_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def refused_for_content(self) -> bool:
        return self.status in REFUSED_FOR_CONTENT


def _seconds_until(retry_after: str) -> float:
    """A Retry-After header's wait: seconds, or an HTTP date; 0 when it says neither."""
    value = retry_after.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to str.isdigit
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _proxy_for(url: str) -> str | None:
    """The proxy urllib sends `url` through (https_proxy, http_proxy, no_proxy), without
    any user name or password in it, or None."""
    request = urllib.request.Request(url)
    proxy = urllib.request.getproxies().get(request.type)
    if not proxy or urllib.request.proxy_bypass(request.host):  # host:port, as urllib asks
        return None
    scheme, _, rest = proxy.rpartition("://")
    shown = rest.rpartition("@")[2]  # "user:secret@proxy:3128" is taken by urllib too
    return f"{scheme}://{shown}" if scheme else shown


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a GET without its body: the batch would be
    # lost while the 200 at the end looked delivered
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class HttpPublisher(OutboxSender):
    """The HTTP uplink (the module's docstring says what it sends and when)."""

    name = "http"

    def __init__(
        self,
        db_path: str | Path,
        cfg: HttpConfig,
        device_id: str | None = None,
        poll_s: float = 0.5,
        max_backoff_s: float = 60.0,
        max_attempts: int = 3,
        say: Callable[[str], None] | None = None,
        role: str = "recorder",
    ):
        super().__init__(
            db_path,
            device_id or socket.gethostname(),
            max_backoff_s,
            max_attempts,
            say,
            role=role,
            heartbeat_s=cfg.heartbeat_s,
        )
        if cfg.url is None:
            raise PublishError("messaging.http.url is not set: set it to the server's address")
        self.cfg, self.url, self.poll_s = cfg, cfg.url, poll_s
        # messages in one POST: the config's, lowered when a server refuses a batch as
        # too large (413), so that each later batch is not split again from the start
        self._too_large_at: int | None = None  # the smallest batch refused with 413
        self._fits = 0  # the largest batch the server has taken
        # the server refused every message it was sent since it last took one: each try
        # is then one message (a split of 50 was 99 POSTs a try on a metered link)
        self._refusing_all = False
        self._server_takes = False  # it has taken a message since it last refused all
        self._suspects: dict[str, Answer] = {}  # refused alone before it took any
        self._probe_depth = 0
        self._refusal_said: int | None = None  # the status whose server words were said
        self._token = self._read_token()
        if warning := cfg.clear_text_password_warning():
            self._say(f"uplink: {warning}")
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if (context := tls_context(cfg, "messaging.http")) is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
            self._cert_end = self._warn_of_expiry(cfg, "messaging.http")
        self._opener = urllib.request.build_opener(*handlers)
        self._reachable = False  # the latest POST had an answer that was not a failure
        self._said_413 = False

    @classmethod
    def from_config(cls, db_path: str | Path, cfg: EdgeConfig, **kw) -> HttpPublisher:
        """A publisher with `messaging.http`'s settings under the recorder's name."""
        return cls(db_path, cfg.messaging.http, device_id=cfg.device.resolved_name(), **kw)

    def _read_token(self) -> str | None:
        if not self.cfg.token_file:
            return None
        from animalclap_edge.secret_files import SecretFileError, read_secret

        try:
            token = read_secret(self.cfg.token_file, "messaging.http.token_file")
        except SecretFileError as e:
            raise PublishError(str(e)) from None
        # a second line (an expiry note) went into the header, whose error quoted the
        # token into the journal and the health table
        if any(c < " " or c == "\x7f" for c in token) or not token.isascii():
            raise PublishError(
                f"messaging.http.token_file {self.cfg.token_file}: holds more than one "
                "line or characters a header cannot carry: write the token alone"
            )
        return token

    def describe(self) -> str:
        proxy = _proxy_for(self.url)
        return f"http POST {self.url}" + (f" through the proxy {proxy}" if proxy else "")

    def start(self) -> HttpPublisher:
        super().start()
        return self

    @property
    def connected(self) -> bool:
        return self._reachable

    # -- the thread ---------------------------------------------------------------

    def run(self) -> None:
        """Send until stopped: each pass the heartbeat when due and one batch; after a
        failed POST, wait with backoff and try again."""
        backoff, last_beat = 1.0, float("-inf")
        with DetectionStore(self.db_path) as store:
            while not self.stopping:
                failed: Answer | None = None
                if time.monotonic() - last_beat >= self.heartbeat_s:
                    failed = self._heartbeat(store)
                    last_beat = time.monotonic() if failed is None else last_beat
                # a server that answered the heartbeat badly (its health handler broken)
                # still gets the detections: only no answer at all stops the pass
                full = False  # a whole batch was taken: more may wait
                if failed is None or failed.status is not None:
                    if self._refusing_all:
                        failed = self._probe(store)
                    else:
                        rows = store.pending_outbox(self._batch_size())
                        failed, full = self._send(store, rows), len(rows) == self._batch_size()
                if failed is not None:
                    self.wait(min(self.max_backoff_s, max(backoff, failed.retry_after_s)))
                    backoff = min(self.max_backoff_s, backoff * 2)
                    continue
                backoff = 1.0
                if not full:  # caught up (or probing): wait for more
                    self.wait(self.poll_s)
            if self._reachable:  # the state at the end (a run over files sent one at start)
                self._heartbeat(store, timeout_s=min(self.cfg.timeout_s, 5.0))

    def _send(self, store: DetectionStore, rows: list[tuple[str, str]]) -> Answer | None:
        """POST `rows` (events and detections, one kind per POST); the failure that
        stopped it, or None."""
        events = [r for r in rows if is_event_id(r[0])]
        detections = [r for r in rows if not is_event_id(r[0])]
        for kind, batch in (("events", events), ("detections", detections)):
            if batch and (failed := self._deliver(store, kind, batch)) is not None:
                return failed
        return None

    def _batch_size(self) -> int:
        """The config's batch, or after a 413 the largest batch the server has taken
        (half the refused one until it has taken any): one message too large for any
        batch must not bring every later batch down to one."""
        if self._too_large_at is None:
            return self.cfg.batch
        return max(1, min(self.cfg.batch, self._fits or self._too_large_at // 2))

    def _deliver(
        self, store: DetectionStore, kind: str, rows: list[tuple[str, str]]
    ) -> Answer | None:
        """POST one batch; a batch refused for what it holds is sent again in halves,
        down to the messages at fault. The failure that stopped it, or None.

        A message refused alone counts a refusal (set aside after `max_attempts` in a
        row) only where the server is known to take others: it took one of the same
        batch, or (a message alone) one since it last refused them all. Otherwise the
        refused are suspects, counted when the server takes another message (probed
        for from further into the outbox), and the server is in fault: one that
        refuses everything (a wrong endpoint answering 400, a firewall) would otherwise
        set the whole outbox aside."""
        refused: list[tuple[str, Answer]] = []
        failed, delivered = self._halves(store, kind, rows, refused)
        if delivered:
            self._takes_messages(store)
        if failed is not None or not refused:
            return failed
        if not self._server_takes or (len(rows) > 1 and not delivered):
            for msg_id, answer in refused:
                self._suspects.setdefault(msg_id, answer)
            return self._refuses_all(refused[0][1])
        for msg_id, answer in refused:
            self._count_refusal(store, msg_id, answer)
        return None

    def _count_refusal(self, store: DetectionStore, msg_id: str, answer: Answer) -> None:
        if answer.status == 413:  # alone and still too large: it never will fit
            self.set_aside(store, msg_id, answer.why)
        else:
            self.refused(store, msg_id, answer.why)

    def _takes_messages(self, store: DetectionStore) -> None:
        """The server took a message: it works, so the suspects it refused alone were
        refused for themselves, and count."""
        self._server_takes, self._refusing_all = True, False
        suspects, self._suspects = self._suspects, {}
        for msg_id, answer in suspects.items():
            self._count_refusal(store, msg_id, answer)

    def _refuses_all(self, answer: Answer) -> Answer:
        """The server refused every message it was sent since it last took one: its
        fault, said and logged as a failed connection (one reason a status)."""
        self._refusing_all, self._server_takes = True, False
        why = (
            f"{self.url} refuses every message it is sent (HTTP {answer.status}; the "
            f"first said: {answer.why}): a fault of the server or of messaging.http.url, "
            "not of the messages"
        )
        if self._refusal_said != answer.status:  # the server's words once, then the status
            self._refusal_said = answer.status
        else:
            why = f"{self.url} refuses every message it is sent (HTTP {answer.status})"
        failed = Answer(None, why)
        self._after(failed, message=True)
        return failed

    def _probe(self, store: DetectionStore) -> Answer | None:
        """While the server refuses every message: one message a try, from further into
        the outbox each time (the oldest may all be bad: detections logged before the
        clock was set, that the server refuses), until it takes one."""
        self._probe_depth += 1
        rows = store.pending_outbox(self._probe_depth * self._batch_size())
        if not rows:
            return None
        msg_id, payload = rows[-1]
        kind = "events" if is_event_id(msg_id) else "detections"
        answer = self._post(kind, [payload], [msg_id])
        if answer.ok:
            self._probe_depth = 0
            self.delivered(store, [msg_id])
            self._takes_messages(store)
            return None
        if answer.refused_for_content:
            self._suspects.setdefault(msg_id, answer)
            return self._refuses_all(answer)
        return answer

    def _halves(
        self,
        store: DetectionStore,
        kind: str,
        rows: list[tuple[str, str]],
        refused: list[tuple[str, Answer]],
    ) -> tuple[Answer | None, int]:
        """(the failure that stopped it or None, messages delivered); the messages
        refused alone are added to `refused`."""
        if self.stopping:  # a split can be 99 POSTs: stop() must not wait them out
            return Answer(None, "stopped"), 0
        ids = [i for i, _ in rows]
        answer = self._post(kind, [payload for _, payload in rows], ids)
        if answer.ok:
            n = self.delivered(store, ids)
            self._fits = max(self._fits, len(rows))
            return None, n
        if not answer.refused_for_content:
            return answer, 0
        if answer.status == 413 and len(rows) > 1:
            self._too_large_at = min(self._too_large_at or len(rows), len(rows))
            if not self._said_413:
                self._said_413 = True
                self._say(
                    f"uplink: {self.url} refused a batch of {len(rows)} messages as too large "
                    f"(HTTP 413): batches of at most {self._batch_size()} from now on, the "
                    "largest it takes (lower messaging.http.batch to start there)"
                )
        if len(rows) == 1:
            refused.append((ids[0], answer))
            return None, 0
        half = len(rows) // 2
        failed, first = self._halves(store, kind, rows[:half], refused)
        if failed is not None:
            return failed, first
        failed, second = self._halves(store, kind, rows[half:], refused)
        return failed, first + second

    def _heartbeat(self, store: DetectionStore, timeout_s: float | None = None) -> Answer | None:
        """Uplink state, the newest snapshot and the health events since the last
        acknowledged heartbeat; the marker moves on only on a 2xx, so a lost one is
        sent again with the next. A heartbeat refused for its content is said, not
        retried until the next is due."""
        rows = self._health_rows(store)
        fields = self._heartbeat_fields(store)
        while True:
            body = json.dumps(heartbeat_body(fields, rows))
            answer = self._post("health", [body], [], timeout_s)
            if answer.status != 413 or not rows:
                break
            rows = rows[: len(rows) // 2]  # too large: the rest goes with the next beats
        if answer.ok:
            self._health_after = rows[-1]["id"] if rows else (self._health_after or 0)
            return None
        if answer.refused_for_content:
            self.stats.last_error = f"heartbeat refused: {answer.why}"
            return None
        return answer

    def _post(
        self, kind: str, payloads: list[str], ids: list[str], timeout_s: float | None = None
    ) -> Answer:
        """One POST of `payloads` (JSON texts, as the outbox keeps them)."""
        body = (
            f'{{"device": {json.dumps(self.device)}, "kind": "{kind}", '
            f'"messages": [{", ".join(payloads)}]}}'
        ).encode()
        # the same for the same batch re-sent, another for any other (a heartbeat: its
        # own body; one key for every heartbeat had a gateway keep only the first)
        what = "\n".join([self.device, kind, *ids]).encode() if ids else body
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"animalclap-edge/{__version__}",
            "Idempotency-Key": hashlib.sha256(what).hexdigest()[:32],
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.stats.published += len(ids)
        try:
            with self._opener.open(request, timeout=timeout_s or self.cfg.timeout_s) as response:
                response.read()
                answer = Answer(response.status)
        except urllib.error.HTTPError as e:
            answer = self._answer_of(e)
            e.close()
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
            # no HTTP answer came, or none that parses (an SSH port, a 200 cut short)
            answer = Answer(None, f"cannot reach {self.url}: {self._network_hint(e)}")
        self._after(answer, message=bool(ids))
        return answer

    def _answer_of(self, e: urllib.error.HTTPError) -> Answer:
        status, url = e.code, self.url
        said = f"HTTP {status} {e.reason}"
        try:
            text = e.read(300).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        if text:
            said += f": {' '.join(text.split())[:200]}"
        if status in _TOKEN_REFUSED:
            why = f"{url} refused the request ({said}): " + (
                f"check the token in messaging.http.token_file {self.cfg.token_file}"
                if self.cfg.token_file
                else "this server wants a token: set messaging.http.token_file"
            )
        elif status in _URL_WRONG or 300 <= status < 400:
            where = e.headers.get("Location") if e.headers else None
            why = f"{url} answered {said}: check messaging.http.url" + (
                f" (it points to {where})" if where else ""
            )
        else:
            why = f"{url} answered {said}"
        retry = e.headers.get("Retry-After", "") if e.headers else ""
        return Answer(status, why, _seconds_until(retry))

    def _network_hint(self, e: Exception) -> str:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLCertVerificationError):
            code = reason.verify_code
            if code in _CLOCK_CODES:
                fix = (
                    f"it looks {_CLOCK_CODES[code]} by this recorder's clock: set the clock "
                    "(NTP, or an RTC battery), or renew the server's certificate"
                )
            elif code in (62, 64):  # a name or IP address the certificate does not list
                fix = (
                    f"it does not name {self.cfg.host}: use a host name the certificate "
                    "lists in messaging.http.url, or a certificate that lists this one"
                )
            elif self.cfg.ca_file:
                fix = f"it was not signed by the CA in messaging.http.ca_file {self.cfg.ca_file}"
            else:
                fix = "set messaging.http.ca_file to the CA that signed it"
            return (
                f"TLS: the server's certificate was not accepted ({reason.verify_message}): {fix}"
            )
        if isinstance(reason, TimeoutError):
            return f"no answer within timeout_s {self.cfg.timeout_s:g} s"
        if isinstance(reason, ssl.SSLError) and self._cert_expired():  # refused in the handshake
            return f"{reason}{self._expired_hint(self.cfg.cert_file)}"
        said = str(reason)
        if self.cfg.tls and "wrong version number" in said.lower():
            return f"{said} (https to a port without TLS: is this the server's https port?)"
        if not self.cfg.tls and isinstance(reason, ConnectionResetError):
            return f"{said} (a TLS port resets plain HTTP: should the url be https://?)"
        return said

    def _after(self, answer: Answer, message: bool) -> None:
        """Keep the connection state: a failure is said and logged, an answer after
        failures ends the outage. While the server refuses every message, only a
        message it takes ends it (its heartbeats' 2xx flapped the outage each beat)."""
        if answer.ok or answer.refused_for_content:  # the server answered
            ends_outage = (answer.ok and message) or not self._refusing_all
            if ends_outage and not self._reachable:
                self._reachable = True
                self.connected_to(self.url)
            return
        self._reachable = False
        self.failed(answer.why)
