"""A field station's receiver for the HTTP uplink (`messaging.http`), standard library
only: it checks the bearer token, keeps each detection, event and heartbeat in SQLite
once by its id (a batch re-sent after a lost answer adds nothing), and answers 200
only once they are committed, so the recorder marks nothing delivered that was lost.

    python scripts/http_receiver.py --db station.db --port 8080 --token-file token
    # recorder: messaging.http.url: http://STATION:8080/ (https behind a TLS proxy)

It prints `listening on PORT` when ready (`--port 0`: a free one). Put it behind a TLS
proxy (nginx, caddy) before it leaves a trusted network.
"""

from __future__ import annotations

import argparse
import hmac
import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

KEYS = {"detections": "detection_id", "events": "event_id"}
MAX_BODY = 16 * 1024 * 1024  # a batch of 1000 detections is about 2 MB


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute(
        "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, device TEXT, kind TEXT, "
        "body TEXT, received_utc TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
    )
    db.execute("CREATE TABLE IF NOT EXISTS heartbeats (device TEXT, body TEXT, received_utc TEXT)")
    db.commit()
    return db


def serve(db_path: str, port: int, token: str | None, host: str = "0.0.0.0") -> None:
    db, lock = open_db(db_path), threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status: int, text: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text.encode())))
            self.end_headers()
            self.wfile.write(text.encode())

        def do_POST(self) -> None:
            given = self.headers.get("Authorization", "")
            if token and not hmac.compare_digest(given, f"Bearer {token}"):
                return self.answer(401, "bad or missing bearer token")
            size = int(self.headers.get("Content-Length") or 0)
            if size > MAX_BODY:
                return self.answer(413, f"over {MAX_BODY} bytes")
            try:
                body = json.loads(self.rfile.read(size))
                device, kind, messages = body["device"], body["kind"], body["messages"]
                rows = (
                    [(m[KEYS[kind]], device, kind, json.dumps(m)) for m in messages]
                    if kind in KEYS
                    else []
                )
            except (ValueError, KeyError, TypeError) as e:
                return self.answer(422, f"not a batch: {e!r}")
            with lock, db:  # committed before the 200
                if kind == "health":
                    db.executemany(
                        "INSERT INTO heartbeats VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                        [(device, json.dumps(m)) for m in messages],
                    )
                db.executemany(
                    "INSERT OR IGNORE INTO messages (id, device, kind, body) VALUES (?, ?, ?, ?)",
                    rows,
                )
            self.answer(200, "ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="SQLite file to keep what arrives in")
    ap.add_argument("--port", type=int, default=8080, help="0: a free port")
    ap.add_argument("--host", default="0.0.0.0", help="address to listen on")
    ap.add_argument("--token-file", help="file holding the bearer token recorders send")
    args = ap.parse_args()
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    if args.token_file and not token:  # it had served every request unchecked
        raise SystemExit(f"http_receiver: --token-file {args.token_file} is empty: write the token")
    serve(args.db, args.port, token, args.host)


if __name__ == "__main__":
    main()
