"""Commands that send what was logged: publish (MQTT or HTTP) and serve (the live page)."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path


def cmd_publish(args: argparse.Namespace) -> int:
    import time

    from animalclap_edge.config import load_config
    from animalclap_edge.store import DetectionStore
    from animalclap_edge.uplink import UplinkBusy, uplink_from_config

    cfg = load_config(args.config)
    db = Path(args.db or cfg.storage.database)
    if not db.exists():
        print(f"animalclap-edge: error: no database at {db}", file=sys.stderr)
        return 2
    if args.give_up_after <= 0:
        print("animalclap-edge: error: --give-up-after must be more than 0 s", file=sys.stderr)
        return 2
    if cfg.messaging.uplink is None:  # it went to localhost:1883 and waited there
        where = args.config or "the default config"
        print(
            f"animalclap-edge: error: MQTT is off in {where}, and HTTP too: set "
            "messaging.mqtt.enabled: true with its host and port, or messaging.http.enabled: "
            "true with its url, to publish; nothing was sent",
            file=sys.stderr,
        )
        return 2
    if args.retry_set_aside:
        with DetectionStore(db) as store:
            n = store.retry_set_aside()
        print(f"uplink: {n} set-aside message(s) queued again", file=sys.stderr)
    say = functools.partial(print, file=sys.stderr, flush=True)
    pub = uplink_from_config(db, cfg, role="uploader", say=say)
    if pub is None:  # cfg.messaging.uplink said one is on
        raise RuntimeError("no uplink built for an enabled uplink")
    if args.once:  # its first failure said "backoff up to 60 s" of a 5 s attempt
        pub.max_backoff_s = min(pub.max_backoff_s, args.give_up_after)
    deadline = time.monotonic() + args.give_up_after
    waiting = False
    while True:  # one sender per database: wait for the one that has it
        try:
            pub.start()
            break
        except UplinkBusy as e:
            if not waiting:
                say(f"uplink: {e}; waiting for it to stop")
                waiting = True
            if args.once and (pub.backlog() == 0 or time.monotonic() >= deadline):
                left = pub.backlog()  # the other sender may have sent it all
                say(f"uplink: left to the other uplink; {left} messages still to send")
                return 1 if left else 0
            time.sleep(1.0)
    print(f"uplink: {pub.describe()}", file=sys.stderr)
    left = aside = 0
    try:
        while True:
            if args.once and pub.backlog() == 0:
                break
            if args.once and time.monotonic() >= deadline:
                left = pub.backlog()
                break
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())) if args.once else 1.0)
    finally:
        # an error from before a reconnect read as a failure still going on
        connected = pub.connected
        pub.stop()
        error = pub.stats.last_error
        print(
            f"uplink: {pub.stats.delivered} delivered; last error: "
            + (
                f"{error} (connected again when it ended)"
                if error and connected
                else error or "none"
            ),
            file=sys.stderr,
        )
        with DetectionStore(db) as store:
            aside = store.set_aside_count()
        if aside:
            peer = "broker" if pub.name == "mqtt" else "server"
            print(
                f"uplink: {aside} message(s) set aside after the {peer} refused them (why: "
                "the health table, kind uplink_set_aside); `publish --retry-set-aside` "
                "sends them again",
                file=sys.stderr,
            )
        if pub.stats.last_connect_error:
            print(
                f"uplink: last connection error: {pub.stats.last_connect_error}"
                + (" (connected again when it ended)" if connected else ""),
                file=sys.stderr,
            )
    if left:
        print(
            f"uplink: gave up after {args.give_up_after:g} s with {left} messages left; they "
            "stay queued for the next run",
            file=sys.stderr,
        )
        return 1
    return 1 if aside and args.once else 0  # not everything reached the broker


def cmd_serve(args: argparse.Namespace) -> int:
    import time

    from animalclap_edge.config import load_config
    from animalclap_edge.live import LiveServer

    cfg = load_config(args.config)
    server = LiveServer.from_config(
        Path(args.db or cfg.storage.database),
        cfg.messaging.live,
        host=args.host,
        port=args.port,
        token_file=args.token_file,
    )
    with server:
        token = "; token required" if server.token_required else ""
        try:  # the banner inside: a stop that lands while print returns is a stop too
            print(f"live: {server.url} (stream at /events, health at /health){token}", flush=True)
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from systemctl stop
            pass
    print("live: stopped", file=sys.stderr)
    return 0
