"""The command line of `animalclap-edge`: every command, its options and defaults."""

from __future__ import annotations

import argparse
import functools

from animalclap_edge import __version__
from animalclap_edge.cli.records import cmd_report
from animalclap_edge.cli.run import cmd_run
from animalclap_edge.cli.tools import (
    cmd_bench,
    cmd_build_engine,
    cmd_config_check,
    cmd_config_schema,
    cmd_config_show,
    cmd_inspect,
    cmd_install_service,
)
from animalclap_edge.cli.uplink import cmd_publish, cmd_serve
from animalclap_edge.cli_help import CommandParser, DefaultsFormatter


def build_parser() -> argparse.ArgumentParser:
    from animalclap_edge.report import WHAT as REPORTS  # loaded already: ReportError

    p = argparse.ArgumentParser(
        prog="animalclap-edge",
        description="Detect animal species and traits on a recorder.",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("--version", action="version", version=f"animalclap-edge {__version__}")
    sub = p.add_subparsers(metavar="COMMAND", parser_class=CommandParser)
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
        help="a WAV/FLAC/OGG/MP3 file, a folder of them, 'mic[:DEVICE]', '-' (raw PCM on "
        "stdin), or a named pipe (raw PCM; reopened when its writer restarts)",
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
    run.set_defaults(func=cmd_run)

    ins = command("inspect", help="verify a bundle and describe it")
    ins.add_argument(
        "bundle", nargs="?", help="bundle directory or .tar (default: the demo bundle)"
    )
    ins.add_argument(
        "--species", action="store_true", help="add the species table to the JSON (species_table)"
    )
    ins.set_defaults(func=cmd_inspect)

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
    be.set_defaults(func=cmd_build_engine)

    pu = command(
        "publish",
        help="send the database's undelivered detections over MQTT or HTTP, then keep "
        "sending new ones",
    )
    pu.add_argument("--config", help="YAML config with messaging.mqtt or messaging.http")
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
        help="first queue again the messages set aside after the broker or server refused them "
        "(e.g. once its size limit is raised)",
    )
    pu.set_defaults(func=cmd_publish)

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
    sv.set_defaults(func=cmd_serve)

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
    bn.set_defaults(func=cmd_bench)

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
    isv.set_defaults(func=cmd_install_service)

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
            "[plot] extra). `raven` and `audacity` write, into the folder --out, one "
            "selection table (Raven Pro) or label track (Audacity) per recording file, to "
            "check its detections by eye and ear beside the audio."
        ),
    )
    rp.add_argument(
        "what",
        choices=[*REPORTS, "activity", "raven", "audacity"],
        help="the CSV to write; activity: a plot; raven, audacity: a table per recording",
    )
    rp.add_argument(
        "--db",
        action="extend",
        nargs="+",
        metavar="DB",
        help="SQLite database (default: storage.database of --config); several (--db "
        "cards/*/detections.db, or --db repeated) for the cards of several recorders: one "
        "CSV, each row with its recorder's device and site (activity: one figure)",
    )
    rp.add_argument(
        "--config",
        help="YAML config whose storage.database to read (a relative one from the current "
        "folder, as `run` takes it)",
    )
    rp.add_argument(
        "--out",
        help="CSV file to write (default: stdout); activity: the figure; raven, audacity: "
        "a new folder for the tables",
    )
    rp.add_argument(
        "--min-probability", type=float, help="keep detections (events: their best) at or above"
    )
    rp.add_argument(
        "--taxon",
        action="append",
        default=[],
        help="keep this taxon code or scientific name (any case; repeat for several); a "
        "genus keeps its species too, and with --catalogue a family, order or class",
    )
    rp.add_argument(
        "--catalogue",
        metavar="CSV|BUNDLE",
        help="the species catalogue (its CSV, or the bundle the recorders ran) that places "
        "--taxon's families, orders and classes: the card records no taxonomy above the "
        "genus",
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
        metavar="HOURS|ZONE",
        help="local time: hours added to UTC (e.g. -3 or 5.5), or a time zone name (e.g. "
        "Europe/Berlin), whose summer time each row gets at its own date: activity's hours "
        "and days; the CSVs get a local time beside each UTC one, summary and effort count "
        "local days (default: UTC only)",
    )
    rp.set_defaults(func=cmd_report)

    cfg = command("config", help="check configs, show the defaults, print the JSON schema")
    csub = cfg.add_subparsers(metavar="ACTION")
    chk = csub.add_parser("check", help="validate config files; names every wrong key or value")
    chk.add_argument("files", nargs="+", help="YAML config file(s), e.g. firmware_configs/*.yaml")
    chk.set_defaults(func=cmd_config_check)
    sch = csub.add_parser("schema", help="print the JSON schema of the config")
    sch.set_defaults(func=cmd_config_schema)
    show = csub.add_parser("show", help="print a config with every default filled in")
    show.add_argument("file", nargs="?", help="YAML config (none: the built-in defaults)")
    show.set_defaults(func=cmd_config_show)
    return p
