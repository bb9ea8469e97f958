"""`run`: a source through the detector into the database, sinks and uplinks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from animalclap_edge.config import EdgeConfig
    from animalclap_edge.detector import RunSummary
    from animalclap_edge.runtime import Runtime
    from animalclap_edge.sources import Source


def cmd_run(args: argparse.Namespace) -> int:
    from animalclap_edge.config import load_config
    from animalclap_edge.detector import Detector
    from animalclap_edge.runtime import Runtime
    from animalclap_edge.sinks import ConsoleSink, JsonlSink, SkipLog
    from animalclap_edge.sources import (
        FileSource,
        FolderSource,
        is_fifo,
        is_reopenable,
        open_source,
    )

    err = sys.stderr
    cfg = load_config(args.config)
    det = Detector.load(args.bundle, cfg, warn_notice=False)  # printed below as NOTE
    db = Path(args.db or cfg.storage.database)
    sinks: list = [SkipLog(err)]  # skip reasons always reach stderr
    if not args.quiet:
        if args.jsonl or cfg.output.jsonl:
            sinks.append(JsonlSink(sys.stdout))
        elif cfg.output.console:  # false: nothing per detection (the database has them)
            sinks.append(ConsoleSink(sys.stdout))

    pipe = Path(args.source).expanduser() if args.source not in ("-", "") else None

    def open_it():
        if pipe is not None and is_fifo(pipe):  # the open blocks until a writer comes
            print(f"waiting for a writer on {pipe} (nothing is read until one opens it)", file=err)
        src = open_source(
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
        if isinstance(src, FileSource | FolderSource):  # names with no offset: in this zone
            src.file_time_zone = cfg.device.file_time_zone
        return src

    # Files and folders are opened before the banner: a bad --source is then the only
    # line on stderr, and no database is made for it. A live source (a microphone, a
    # named pipe) opens inside the runtime: its open can wait for a writer for hours,
    # which it must do holding the database's lock, and a device missing at start is
    # then written in the card's health log, not only in a journal.
    source = None
    if not is_reopenable(args.source):
        try:
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
    if cfg.device.name or cfg.device.site:  # what the runs, reports and topics will say
        site = f", site {cfg.device.site}" if cfg.device.site else ""
        print(f"recorder {cfg.device.resolved_name()}{site}", file=err)
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
            if source is None:
                source = _open_live(args.source, open_it, rt)
            source = _live(args.source, source, open_it, rt, cfg, err)
            s = det.run(source, rt.store, sinks, redo=args.redo)
            rt.backup_on_close = count is not None  # files, all done: a card's rows
    finally:
        if status is not None:
            status.close()
        if source is not None:
            source.close()
        det.close()
        if s is None and det.last_summary is not None:  # stopped: what it had done
            print(f"until stopped: {_run_line(det.last_summary, db)}", file=err)
    print(_run_line(s, db), file=err)
    if isinstance(source, FolderSource) and (passed := source.not_audio_note()):
        print(f"note: {passed}", file=err)
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


def _run_line(s: RunSummary, db: Path) -> str:
    ok = s.recordings - s.skipped - s.partial
    return (
        f"{s.recordings} recordings: {ok} ok, {s.skipped} skipped, {s.partial} partial; "
        f"{s.windows} windows; {s.detections} detections in {s.events} events -> {db}"
        + (
            f" ({s.already_logged} of them already logged there by an earlier run, kept as "
            "they were)"
            if s.already_logged
            else ""
        )
    )


def _open_live(spec: str, open_it: Callable[[], Source], rt: Runtime) -> Source:
    """The first opening of a live source, its failure logged on the card as well."""
    from animalclap_edge.sources import SourceError

    try:
        return open_it()
    except SourceError as e:
        rt.store.add_health("open_failed", spec, {"why": str(e), "at": "start"})
        raise


def _live(
    spec: str,
    first: Source,
    open_it: Callable[[], Source],
    rt: Runtime,
    cfg: EdgeConfig,
    err: TextIO,
) -> Source:
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
