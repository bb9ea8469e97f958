"""Live detections over local HTTP as Server-Sent Events, read from the detection database.

Like the MQTT publisher, the server only reads the database: it runs beside `run`
(threads in the same process) or on its own (`animalclap-edge serve`), and neither
side can lose or hold up the other's data. Standard library only.

    GET /events   text/event-stream, one message per detection:
                      id: <rowid>-<last 8 characters of its detection_id>
                      event: detection
                      data: <the outbox/MQTT payload of that detection, byte for byte>
    GET /events?kind=event   the same for the merged events (`event: event`, ids of the
                  events table's rows, data the payload MQTT sends on .../events)
    GET /health   JSON: database, detection and event counts, the newest of each, clients
    GET /         a page that shows the stream (EventSource, no external assets)

Where a stream starts: the `Last-Event-ID` header (EventSource sends it when it
reconnects), else `?last_event_id=ID`, else `?since=`: `now` (the default: a new
client gets what is logged from now on, since the database may hold months of
history; what is already there is for the database, not a live view), `all`, or an
id. Every stream opens with an `id:` line holding its start, so a client that
reconnects before any detection arrived still resumes exactly where it was.

rowid is a sound cursor within one file because detections are written one `BEGIN
IMMEDIATE` transaction at a time and SQLite gives a new row max(rowid) + 1: a
transaction committed later holds only larger rowids, so polling `rowid > last` never
skips a row. Across files it is not (recovery replaces the file; retention emptying the
table hands its rowids out again), so an id also names its row, and a stream follows
the file at the path: live_follow.py. Consumers that must count exactly de-duplicate by
`detection_id`, as with MQTT.

The database may not exist yet (`serve` started at boot before the first `run`): the
server says so once, /health answers 503 meanwhile, and streams wait for the file.

Security: listens on 127.0.0.1 unless told otherwise, and refuses any other
address without a token. With a token (read from a file only its owner can read)
every request needs `Authorization: Bearer <token>` or `?token=<token>`. Without
one, the Host header must name a loopback address, so a web page cannot reach the
endpoint through DNS rebinding, and a name (localhost, *.localhost) is listened on only
where it resolves to a loopback address. A request must arrive whole (request line and
headers) within `socket_timeout_s` however slowly its bytes trickle, and at most
`max_requests` connections that are not streams are open at once: a client cannot hold
threads for good.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import ipaddress
import json
import select
import socket
import sqlite3
import string
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlsplit

from animalclap_edge.config import is_loopback_host
from animalclap_edge.live_follow import (
    BATCH,
    KINDS,
    BadStreamId,
    Follower,
    Unusable,
    stream_id,
)

# The serialiser of the outbox (and so of MQTT): the SSE data is the same bytes.
from animalclap_edge.payloads import payload_of
from animalclap_edge.store import BUSY_TIMEOUT_MS

if TYPE_CHECKING:
    from animalclap_edge.config import LiveConfig

KEEPALIVE_S = 15.0  # below the 30-60 s idle timeouts of common proxies and NATs
RETRY_MS = 3000  # how long EventSource waits before reconnecting
MIN_TOKEN_CHARS = 16
TOKEN_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"

_URL_SAFE = frozenset(string.ascii_letters + string.digits + "-_.~")


class LiveError(RuntimeError):
    """The live endpoint cannot be set up; the message says why on one line."""


class LiveListenError(LiveError):
    """The port cannot be had (another `serve`, another program): a recorder goes on
    without its live view rather than not recording."""


def read_token(path: str | Path) -> bytes:
    """The token in `path`, refused unless only its owner can read it and it is usable."""
    from animalclap_edge.secret_files import NO_SUCH_FILE, exposure, file_problem

    p = Path(path)
    make = f"make one with: (umask 077; {TOKEN_HINT} > {p})"
    if problem := file_problem(p):
        raise LiveError(f"token file {p}: {problem}" + f" ({make})" * (problem == NO_SUCH_FILE))
    if problem := exposure(p):
        raise LiveError(f"token file {p} {problem}")
    try:
        token = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise LiveError(
            f"token file {p}: cannot read: {getattr(e, 'strerror', None) or e}"
        ) from None
    if not token:
        raise LiveError(f"token file {p} is empty ({make})")
    # It travels in a URL too, where + & # % would need escaping that users forget.
    if not all(c in _URL_SAFE for c in token):
        raise LiveError(
            f"token file {p}: the token may hold only letters, digits and - _ . ~ ({make})"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise LiveError(
            f"token file {p}: the token has {len(token)} characters, fewer than "
            f"{MIN_TOKEN_CHARS} ({make})"
        )
    return token.encode("ascii")


class LiveServer:
    """Serve a detection database's new detections as Server-Sent Events.

    `start()` binds and serves on a background thread; `stop()` closes every client
    connection and returns within about a second. Also a context manager.
    """

    def __init__(
        self,
        db_path: str | Path,
        host: str = "127.0.0.1",
        port: int = 8765,
        token_file: str | Path | None = None,
        poll_s: float = 0.25,
        keepalive_s: float = KEEPALIVE_S,
        max_clients: int = 16,
        socket_timeout_s: float = 10.0,
        cors_origins: Sequence[str] = (),
        max_requests: int = 64,
    ):
        self.db_path = Path(db_path)
        self.host, self.port = host, port
        if not 0 <= port <= 65535:
            raise LiveError(f"live: port {port} is not in 0-65535")
        if not poll_s > 0 or not keepalive_s > 0:
            raise LiveError("live: poll_s and keepalive_s must be > 0")
        self.poll_s, self.keepalive_s = poll_s, keepalive_s
        if not socket_timeout_s > 0 or max_requests < 1:
            raise LiveError("live: socket_timeout_s must be > 0 and max_requests >= 1")
        self.max_clients, self.socket_timeout_s = max_clients, socket_timeout_s
        # connections not (yet) streams: being read or answered; beyond it, refused
        self.max_requests = max_requests
        if token_file is None and not is_loopback_host(host or "0.0.0.0"):
            raise LiveError(
                f"live: refusing to listen on {host or 'all interfaces'} without a token: "
                "set messaging.live.token_file (or --token-file) to a file only its owner "
                "can read, or listen on 127.0.0.1"
            )
        self._token = read_token(token_file) if token_file is not None else None
        if "*" in cors_origins and self._token is None:
            raise LiveError(
                "live: cors_origins '*' without a token would let any web page read the "
                "stream: set a token file, or name the origins of your dashboards"
            )
        self.cors_origins = frozenset(cors_origins)
        self._check_database()
        self.last_error = ""
        self._said_waiting = False
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}  # every open request
        self._streams = 0  # of which are event streams
        self._open = 0  # connections accepted and not yet done, streams included
        self._said_error_at = -float("inf")
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._started = 0.0

    @classmethod
    def from_config(cls, db_path: str | Path, cfg: LiveConfig, **overrides: Any) -> LiveServer:
        """A server with `messaging.live`'s settings; `overrides` (e.g. host=) win."""
        kw: dict[str, Any] = {
            "host": cfg.host,
            "port": cfg.port,
            "token_file": cfg.token_file,
            "poll_s": cfg.poll_s,
            "cors_origins": cfg.cors_origins,
        }
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(db_path, **kw)

    @property
    def token_required(self) -> bool:
        return self._token is not None

    @property
    def url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()  # a wildcard address is no place to browse to
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def clients(self) -> int:
        """Event streams open now."""
        with self._lock:
            return self._streams

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> LiveServer:
        if self._httpd is not None:
            return self
        try:
            family, _, _, _, address = socket.getaddrinfo(
                self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
        except OSError as e:
            raise LiveListenError(
                f"live: cannot listen on {self.host}:{self.port}: {e.strerror or e}"
            ) from None
        # Without a token the host was let through as loopback by its name alone; the
        # name's address is what is bound (never resolved twice), so it is checked here.
        # (an (int, bytes) address is an IPv6 one of a Python built without IPv6: refused)
        bound = address[0]
        if self._token is None and not (isinstance(bound, str) and _is_loopback_address(bound)):
            raise LiveListenError(
                f"live: cannot listen on {self.host} without a token: it resolves to "
                f"{address[0]}, not a loopback address; listen on 127.0.0.1, or set a token "
                "file"
            )
        try:
            self._httpd = _HTTPServer(self, family, address)
        except OSError as e:
            raise LiveListenError(
                f"live: cannot listen on {self.host}:{self.port}: {e.strerror or e}"
            ) from None
        self.port = self._httpd.server_address[1]  # the one picked when port was 0
        if not self.db_path.exists() and not self._said_waiting:
            self._said_waiting = True  # once: /health says it for as long as it lasts
            print(f"live: {self._waiting_message()}", file=sys.stderr, flush=True)
        self._stopping.clear()
        self._started = time.monotonic()
        self._thread = threading.Thread(
            # a short poll interval so that stop() returns promptly
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="live-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop accepting; each stream sends what is committed by now and ends (for up to
        half of `timeout_s`: a client that reads nothing cannot hold the stop); then
        close every client connection and wait for their threads."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        deadline = time.monotonic() + timeout_s
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()  # now: connections queued on it meanwhile get refused early
        with self._lock:
            conns = list(self._conns.items())
        drained = time.monotonic() + timeout_s / 2
        for _, thread in conns:  # a stream sees the stop within one poll_s
            thread.join(max(0.0, drained - time.monotonic()))
        for sock, _ in conns:
            _shut(sock)
        for _, thread in conns:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- database -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: never creates a file where the database was expected. A normal
        # (not mode=ro) connection can open a WAL database whose -shm file is missing;
        # query_only makes it a reader all the same.
        uri = self.db_path.absolute().as_uri() + "?mode=rw"
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_database(self) -> None:
        """Refuse a path that can never be a detection database; a missing file is
        waited for (`serve` started at boot, before the first `run` made it)."""
        if self.db_path.is_dir():
            # report's rule for --db FOLDER: name the file a recorder keeps in it
            inside = self.db_path / "detections.db"
            raise LiveError(
                f"live: {self.db_path} is a folder, not a database; "
                + (
                    f"the database in it is {inside}: give that"
                    if inside.is_file()
                    else f"give the database file in it (a recorder names it {inside})"
                )
            )
        if not self.db_path.exists():
            return
        try:
            conn = self._connect()
            try:
                tables = {
                    r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise LiveError(f"live: {self.db_path}: cannot read the database: {e}") from None
        if tables and "detections" not in tables:  # none: `run` is making it right now
            raise LiveError(f"live: {self.db_path}: not a detection database (no detections table)")

    def _waiting_message(self) -> str:
        return (
            f"no database at {self.db_path} yet: waiting for `animalclap-edge run` to "
            "create it; streams begin when it appears"
        )

    def _database_reads(self) -> None:
        """The database read again: an error of an earlier read no longer holds."""
        if self.last_error.startswith("database:"):
            self.last_error = ""

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of /health: 200 with the counts, 503 while there is no
        database to count (the body's `error` says why)."""
        base = {
            "database": str(self.db_path),
            "clients": self.clients,
            "token_required": self.token_required,
            "uptime_s": round(time.monotonic() - self._started, 1),
        }
        if not self.db_path.exists():
            return 503, {"error": self._waiting_message(), "state": "waiting", **base}
        conn = self._connect()
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "detections" not in tables:  # an empty file: `run` is creating the schema
                return 503, {
                    "error": f"{self.db_path} holds no tables yet: `animalclap-edge run` is "
                    "creating the database",
                    "state": "waiting",
                    **base,
                }
            count = conn.execute("SELECT count(*) FROM detections").fetchone()[0]
            newest = conn.execute(
                "SELECT rowid, created_utc, start_time_utc FROM detections "
                "ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
            events = newest_event = None
            if "events" in tables:
                events, newest_event = conn.execute(
                    "SELECT count(*), max(rowid) FROM events"
                ).fetchone()
        finally:
            conn.close()
        self._database_reads()
        body = {
            **base,
            "state": "serving",
            "detections": count,
            "newest_id": newest[0] if newest else None,
            "newest_created_utc": newest[1] if newest else None,
            "newest_start_time_utc": newest[2] if newest else None,
            "events": events,  # merged events (`/events?kind=event`), and the newest's id
            "newest_event_id": newest_event,
            "last_error": self.last_error or None,
        }
        if "events" not in tables:
            body["events_note"] = (
                "this database predates merged events (no events table); "
                "`animalclap-edge run` adds it when it next opens the database"
            )
        return 200, body

    # -- requests -------------------------------------------------------------

    def _authorized(self, header: str | None, query_token: str | None) -> bool:
        if self._token is None:
            return True
        offered = None
        if header:
            scheme, _, credentials = header.strip().partition(" ")
            if scheme.lower() == "bearer":
                offered = credentials.strip()
        if offered is None:
            offered = query_token
        if offered is None:
            return False
        return hmac.compare_digest(offered.encode("utf-8", "replace"), self._token)

    def _register(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns[sock] = threading.current_thread()
            late = self._stopping.is_set()
        if late:  # accepted just before stop() took its list of connections
            _shut(sock)

    def _unregister(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.pop(sock, None)

    def _admit(self) -> bool:
        """Count a new connection in, unless max_requests that are not streams are open."""
        with self._lock:
            if self._open - self._streams >= self.max_requests:
                return False
            self._open += 1
            return True

    def _leave(self) -> None:
        with self._lock:
            self._open -= 1

    def _open_stream(self) -> bool:
        with self._lock:
            if self._streams >= self.max_clients:
                return False
            self._streams += 1
            return True

    def _close_stream(self) -> None:
        with self._lock:
            self._streams -= 1


def _shut(sock: socket.socket) -> None:
    # Wakes a stream waiting in select() (the socket reads as closed) and fails a
    # send blocked on a client that stopped reading; close() alone would do neither.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _is_loopback_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class _RequestReader(io.RawIOBase):
    """The socket's bytes, and TimeoutError once `deadline` (time.monotonic()) passes
    however they trickle in: a per-recv timeout alone restarts at every byte. With
    `deadline` None, plain reads under the socket's own timeout."""

    def __init__(self, sock: socket.socket, timeout_s: float):
        self._sock, self._timeout_s = sock, timeout_s
        self.deadline: float | None = time.monotonic() + timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is None:
            return self._sock.recv_into(buffer)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._timeout_s)  # sends keep theirs


def _refuse(sock: socket.socket, reply: bytes) -> None:
    # On the accepting thread: never blocks (a fresh socket's send buffer is empty).
    # The client may see a reset instead, when its request arrives after the close.
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(reply)


def _message(stream_id: str, kind: str, payload: str) -> bytes:
    # One data line is exact: json.dumps escapes CR and LF, the only SSE line breaks.
    return f"id: {stream_id}\nevent: {kind}\ndata: {payload}\n\n".encode()


def _client_gone(sock: socket.socket, wait_s: float) -> bool:
    """Wait up to wait_s; True if the client closed (or stop() shut the socket) meanwhile.

    An SSE client sends nothing after its request, so a readable socket means the
    connection ended; noticing it here frees the thread within one poll instead of
    at the next failed write, which could be a keep-alive 15 s away.
    """
    try:
        readable, _, _ = select.select([sock], [], [], wait_s)
        if not readable:
            return False
        sock.recv(1, socket.MSG_PEEK)  # b"" at end of stream; data is a protocol error
        return True
    except (OSError, ValueError):
        return True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a wedged client must never keep the recorder from exiting
    # socketserver's 5 drops a burst's SYNs (clients wait 1 s, 3 s... to retry); the
    # kernel caps it at net.core.somaxconn
    request_queue_size = 64

    def __init__(self, live: LiveServer, family: int, address: tuple[Any, ...]):
        self.live = live
        self.address_family = family
        body = json.dumps({"error": f"too many connections ({live.max_requests})"}) + "\n"
        self._busy = (
            "HTTP/1.0 503 Service Unavailable\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            f"Connection: close\r\n\r\n{body}"
        ).encode()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.live._admit():  # refused here, on the accepting thread: no thread
            _refuse(request, self._busy)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: it will not _leave
            self.live._leave()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.live._leave()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can hang for
        # seconds on a recorder without DNS; the name is not needed here.
        TCPServer.server_bind(self)
        # server_address is getsockname()'s now, whose host is a str (the stub's type is
        # what bind accepts, bytes too)
        host = cast(str, self.server_address[0])
        self.server_name, self.server_port = host, self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # What ends up here came from serving one connection, which a client's bytes
        # steer: never last_error (the database's, set where it is read). A socket error
        # is the client's network (reset, timed out, unreachable): nothing to say. Else
        # a bug: said on stderr at most once a minute, so no client can fill the log.
        e = sys.exc_info()[1]
        if isinstance(e, OSError):
            return
        live, now = self.live, time.monotonic()
        if now - live._said_error_at < 60:
            return
        live._said_error_at = now
        why = repr(str(e)[:200])  # repr: one line, whatever the client sent
        print(
            f"live: error serving {client_address[0]}: {type(e).__name__}: {why}",
            file=sys.stderr,
        )


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "animalclap-edge-live"
    # Not HTTP/0.9: a request line refused unparsed (400, 505) would get its error page
    # without a status line. Nobody speaks 0.9 any more.
    default_request_version = "HTTP/1.0"

    def version_string(self) -> str:
        return self.server_version  # not the Python version: nobody needs to know it

    def setup(self) -> None:
        live = self.server.live
        # typeshed has timeout as a ClassVar; StreamRequestHandler.setup reads it off the
        # instance, so one set per connection is what it applies
        self.timeout = live.socket_timeout_s  # type: ignore[misc]  # also bounds a stalled send
        super().setup()
        self.rfile.close()  # makefile's: it would keep the socket open past close()
        self._request_in = _RequestReader(self.connection, live.socket_timeout_s)
        self.rfile = io.BufferedReader(self._request_in)
        live._register(self.connection)

    def parse_request(self) -> bool:
        try:
            return super().parse_request()
        finally:
            self._request_in.deadline = None  # the request is in (or refused)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.live._unregister(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        # Silent: the request line may hold ?token=, and a recorder's log is no access log.
        pass

    def end_headers(self) -> None:
        # every reply to a page of an allowed origin may be read by it (errors too: the
        # page can then say why); the origin is echoed, never '*' with credentials
        origin = self._allowed_origin()
        if origin is not None:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")
        super().end_headers()

    def _allowed_origin(self) -> str | None:
        # no headers yet when the request itself is refused (400, 414, 431, 505)
        headers = getattr(self, "headers", None)
        origin = headers.get("Origin") if headers is not None else None
        allowed = self.server.live.cors_origins
        if origin and (origin in allowed or "*" in allowed):
            return origin
        return None

    def do_OPTIONS(self) -> None:
        """A browser's preflight before a cross-origin request with a header of its own
        (Authorization: Bearer, Last-Event-ID)."""
        if self._allowed_origin() is None:
            return self._reply(403, {"error": "this origin is not in messaging.live.cors_origins"})
        self.send_response(204)
        self.send_header("Access-Control-Allow-Methods", "GET")
        self.send_header("Access-Control-Allow-Headers", "Authorization, Last-Event-ID")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        live = self.server.live
        if live._stopping.is_set():
            return self._reply(503, {"error": "shutting down"})
        try:
            url = urlsplit(self.path)
        except ValueError:  # an absolute URL with a broken [host]
            return self._reply(400, {"error": "the URL cannot be parsed"})
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if live._token is None and not _host_is_loopback(self.headers.get("Host")):
            return self._reply(403, {"error": "Host must name a loopback address"})
        if not live._authorized(self.headers.get("Authorization"), query.get("token")):
            return self._reply(
                401,
                {"error": "a valid token is required (Authorization: Bearer, or ?token=)"},
                {"WWW-Authenticate": 'Bearer realm="animalclap-edge"'},
            )
        if url.path == "/events":
            return self._events(query)
        if url.path == "/health":
            try:
                reply = live.health()
            except (sqlite3.Error, OSError) as e:  # the database's: no socket was used
                live.last_error = f"database: {e}"
                reply = 503, {"error": live.last_error}
            return self._reply(*reply)
        if url.path == "/":
            return self._page()
        return self._reply(404, {"error": "not found; try /, /events or /health"})

    def _reply(
        self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = (json.dumps(body, ensure_ascii=False) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _page(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(_PAGE)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", _PAGE_CSP)
        self.send_header("Referrer-Policy", "no-referrer")  # the URL may hold the token
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(_PAGE)

    def _events(self, query: dict[str, str]) -> None:
        live = self.server.live
        if not live._open_stream():
            return self._reply(503, {"error": f"too many live clients ({live.max_clients})"})
        follower = None
        try:
            kind = query.get("kind", "detection")
            if kind not in KINDS:
                return self._reply(
                    400, {"error": f"kind must be detection or event, got {kind[:40]!r}"}
                )
            header_id = self.headers.get("Last-Event-ID")
            last_id = header_id if header_id and header_id.strip() else query.get("last_event_id")
            follower = Follower(live.db_path, live._connect, kind)
            try:
                if follower.open():
                    live._database_reads()
                follower.start(last_id, query.get("since", "now"))
            except BadStreamId as e:
                return self._reply(400, {"error": str(e)})
            except Unusable as e:
                return self._reply(503, {"error": str(e)})
            except sqlite3.Error as e:
                live.last_error = f"database: {e}"
                return self._reply(503, {"error": live.last_error})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")  # nginx in front must not buffer
            self.end_headers()
            # A bare id sets the client's Last-Event-ID without firing an event.
            self.wfile.write(f"retry: {RETRY_MS}\nid: {follower.position}\n\n".encode())
            self._stream(follower, kind)
        except sqlite3.Error as e:
            live.last_error = f"database: {e}"  # the stream ends; the client reconnects
        except (OSError, ValueError):
            pass  # the client went away, or stop() shut the socket
        finally:
            if follower is not None:
                follower.close()
            live._close_stream()

    def _stream(self, follower: Follower, kind: str) -> None:
        live = self.server.live
        last_write = time.monotonic()
        while True:
            # Read before the poll: the poll after a stop sends what was committed before
            # it (a run's last batch lands a few ms before the run stops this server).
            stopping = live._stopping.is_set()
            rows, reset = follower.poll()
            if follower.problem:
                live.last_error = f"database: {follower.problem}"
            elif follower.conn is not None:
                live._database_reads()
            out = []
            if reset:  # another file, or the cursor's row is gone: from the first row
                out.append(b"id: 0\n\n")
            out += [
                _message(stream_id(r, k), kind, payload_of(p, follower.events)) for r, k, p in rows
            ]
            if out:
                self.wfile.write(b"".join(out))
                last_write = time.monotonic()
                if len(rows) == BATCH:
                    continue  # catching up: no pause
            elif time.monotonic() - last_write >= live.keepalive_s:
                self.wfile.write(b": keep-alive\n\n")
                last_write = time.monotonic()
            if stopping or _client_gone(self.connection, live.poll_s):
                return


def _host_is_loopback(host_header: str | None) -> bool:
    if host_header is None:
        return True  # HTTP/1.0 clients may omit it; browsers, the rebinding risk, never do
    host = host_header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback_host(host)


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1em}"
    "table{border-collapse:collapse}"
    "th,td{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}"
    "#state{color:#555}"
)
_SCRIPT = """
const q = new URLSearchParams(location.search);
const kind = q.get("kind") === "event" ? "event" : "detection";
const token = q.get("token");
const params = new URLSearchParams({kind});
if (token) params.set("token", token);
const es = new EventSource("events?" + params);
const rows = document.getElementById("rows");
const state = document.getElementById("state");
// the other view, keeping the token
const other = new URLSearchParams(params);
other.set("kind", kind === "event" ? "detection" : "event");
document.getElementById("other").href = "?" + other;
document.getElementById("other").textContent =
  kind === "event" ? "show detections (every window)" : "show events (windows merged)";
document.getElementById("title").textContent =
  kind === "event" ? "Live events" : "Live detections";
const heads = kind === "event"
  ? ["id", "start (UTC)", "common name", "scientific name", "level", "windows", "max p",
     "recording", "span"]
  : ["id", "time (UTC)", "common name", "scientific name", "level", "p", "recording",
     "window"];
const head = document.getElementById("head");
for (const h of heads) {
  const th = document.createElement("th");
  th.textContent = h;
  head.appendChild(th);
}
es.onopen = () => { state.textContent = "connected: new " + kind + "s appear at the top"; };
es.onerror = () => {
  if (es.readyState !== EventSource.CLOSED) {  // a dropped connection: it retries
    state.textContent = "disconnected: reconnecting...";
    return;
  }
  // EventSource gives up on an HTTP error (401, 503) without saying which: ask again
  // to show the server's own answer
  state.textContent = "refused: asking the server why...";
  const ask = new AbortController();
  fetch("events?" + params, {cache: "no-store", signal: ask.signal}).then(async (r) => {
    if (r.ok) {
      ask.abort();
      state.textContent = "the stream closed: reload to try again";
      return;
    }
    let why = r.statusText;
    try { why = (await r.json()).error || why; } catch (err) { /* not JSON: a proxy's */ }
    state.textContent = "refused: " + r.status + " " + why + " (reload to try again)";
  }).catch((err) => {
    state.textContent = "cannot reach the server (" + err.message + "): reload to try again";
  });
};
const span = (a, b) => a.toFixed(1) + "-" + b.toFixed(1) + " s";
// the time as logged, marked when the recorder's clock was not known to be right
const when = (d) =>
  (d.start_time_utc || d.created_utc) + (d.clock_trusted ? "" : " (clock not trusted)");
es.addEventListener(kind, (e) => {
  const d = JSON.parse(e.data);
  const id = e.lastEventId.split("-")[0];  // the rowid of `<rowid>-<id tail>`
  const cells = kind === "event"
    ? [id, when(d), d.common_name, d.scientific_name, d.level, d.n_windows,
       d.max_probability.toFixed(2), d.recording_id, span(d.start_s, d.end_s)]
    : [id, when(d), d.common_name, d.scientific_name, d.level, d.probability.toFixed(2),
       d.recording_id, span(d.window_start_s, d.window_end_s)];
  const tr = document.createElement("tr");
  for (const v of cells) {
    const td = document.createElement("td");
    td.textContent = v;
    tr.appendChild(td);
  }
  rows.prepend(tr);
  while (rows.rows.length > 500) rows.deleteRow(-1);
});
"""
_PAGE = (
    "<!doctype html><html><head><meta charset=utf-8>"
    '<meta name=viewport content="width=device-width, initial-scale=1">'
    f"<title>AnimalCLAP Edge: live</title><style>{_STYLE}</style></head><body>"
    "<h1 id=title>Live detections</h1><p id=state>connecting...</p><p><a id=other></a></p>"
    "<table><thead><tr id=head></tr></thead>"
    f"<tbody id=rows></tbody></table><script>{_SCRIPT}</script></body></html>"
).encode()


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only the page's own inline script and style may run, and it may connect only here.
_PAGE_CSP = (
    f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}; "
    "connect-src 'self'"
)
