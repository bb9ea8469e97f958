"""Bytes on the wire per message, MQTT against HTTP, for a link paid by the byte.

Copies a detection database (every message still to send), then sends its outbox
through a byte-counting TCP proxy: once over MQTT to a local mosquitto, and over HTTP
to a local server answering 200 at each batch size asked. Counts both directions
(TCP payload, not IP/TCP headers or TLS), and the wall time to an empty outbox on
loopback. Each run includes its connection set-up and one heartbeat.

    python scripts/benchmarks/uplink_bytes.py runs/demo/detections.db --batches 1 10 50
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from animalclap_edge.config import HttpConfig, MqttConfig
from animalclap_edge.store import DetectionStore


class CountingProxy:
    """Forwards 127.0.0.1:port to `upstream`, counting the bytes each way."""

    def __init__(self, upstream: int):
        self.upstream, self.up, self.down = upstream, 0, 0
        self._lock = threading.Lock()
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.srv.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.srv.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_copy(db: Path, folder: Path, name: str) -> Path:
    out = folder / f"{name}.db"
    with DetectionStore(db) as store:  # a consistent copy, WAL folded in
        store.backup(out)
    return out


def _drain(pub, timeout_s: float = 600.0) -> float:
    t0 = time.perf_counter()
    pub.start()
    try:
        deadline = time.monotonic() + timeout_s
        while pub.backlog() and time.monotonic() < deadline:
            time.sleep(0.05)
        if pub.backlog():
            raise SystemExit(f"{pub.describe()}: {pub.backlog()} left after {timeout_s:g} s")
        return time.perf_counter() - t0
    finally:
        pub.stop()


def run_mqtt(db: Path, folder: Path) -> tuple[int, int, float] | None:
    from animalclap_edge.publish import MqttPublisher

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        print("mqtt: skipped (mosquitto not installed)", file=sys.stderr)
        return None
    port = _free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        proxy = CountingProxy(port)
        cfg = MqttConfig(enabled=True, host="127.0.0.1", port=proxy.port)
        pub = MqttPublisher(
            _fresh_copy(db, folder, "mqtt"), cfg, device_id="bench", heartbeat_s=3600
        )
        took = _drain(pub)
        proxy.close()
        return proxy.up, proxy.down, took
    finally:
        broker.terminate()
        broker.wait(10)


def run_http(db: Path, folder: Path, batch: int) -> tuple[int, int, float]:
    from animalclap_edge.publish_http import HttpPublisher

    class Ok(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        proxy = CountingProxy(httpd.server_address[1])
        cfg = HttpConfig(
            enabled=True, url=f"http://127.0.0.1:{proxy.port}/in", batch=batch, heartbeat_s=3600
        )
        pub = HttpPublisher(_fresh_copy(db, folder, f"http{batch}"), cfg, device_id="bench")
        took = _drain(pub)
        proxy.close()
        return proxy.up, proxy.down, took
    finally:
        httpd.shutdown()
        httpd.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("db", help="a detection database whose messages are still to send")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 10, 50])
    args = ap.parse_args()
    with DetectionStore(args.db) as store:
        n = store.backlog()
    if not n:
        raise SystemExit(f"{args.db}: no message to send (all delivered or set aside)")
    with tempfile.TemporaryDirectory(prefix="uplink-bytes-") as tmp:
        folder = Path(tmp)
        rows = []
        if (m := run_mqtt(Path(args.db), folder)) is not None:
            rows.append(("mqtt (QoS 1, MQTT 5)", *m))
        for b in args.batches:
            rows.append((f"http, batch {b}", *run_http(Path(args.db), folder, b)))
    print(f"{n} messages from {args.db}; bytes of TCP payload, both ways, loopback")
    print(f"{'uplink':<22}{'up':>10}{'down':>10}{'B/message':>11}{'vs mqtt':>9}{'s':>7}")
    base = (rows[0][1] + rows[0][2]) / n if rows[0][0].startswith("mqtt") else None
    for name, up, down, took in rows:
        per = (up + down) / n
        ratio = f"{per / base:.2f}x" if base else "-"
        print(f"{name:<22}{up:>10,}{down:>10,}{per:>11,.0f}{ratio:>9}{took:>7.1f}")


if __name__ == "__main__":
    main()
