"""What runs beside the detector during `animalclap-edge run`, started and stopped as one.

`Runtime` opens the database (recovering it first if its check fails), starts the
uplink (MQTT or HTTP, or one passed in), the local live server (Server-Sent Events), the health monitor
(snapshots and online backups) and wraps live sources in the watchdog. `close()` stops them in reverse order, so the last health snapshot
and the last uplink attempt still see a working database.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from animalclap_edge.config import EdgeConfig
from animalclap_edge.db_lock import DbLock
from animalclap_edge.events import merged
from animalclap_edge.health import THERMAL_ROOT, HealthMonitor, StoreHealthLog, backup_path_for
from animalclap_edge.recovery import open_store
from animalclap_edge.room import is_full, make_room
from animalclap_edge.sources import Source
from animalclap_edge.store import StoreError
from animalclap_edge.watchdog import WatchdogSettings, WatchedSource

if TYPE_CHECKING:  # imported where started: a run without uplink or live view needs neither
    from animalclap_edge.live import LiveServer
    from animalclap_edge.uplink import Uplink


class RunLock(DbLock):
    """One analysing process per database: two `run`s on one card each analysed the
    same recordings and logged every detection twice."""

    role = "run"

    def busy(self, pid: int) -> Exception:
        who = f"pid {pid}" if pid else "pid unknown"
        return StoreError(
            f"another run ({who}) is logging to {self.db}: stop it first, or give this "
            "run its own --db (two runs on one database log the same recordings twice)"
        )

    def cannot(self, why: str) -> Exception:
        return StoreError(
            f"{self.path}: cannot create the run lock ({why}); the database's folder "
            "must be writable to log to it"
        )


def uplink_of(cfg: EdgeConfig) -> str:
    """Where the outbox's messages go, as health snapshots say it."""
    mq, http = cfg.messaging.mqtt, cfg.messaging.http
    if mq.enabled:
        return f"mqtt {mq.host}:{mq.port}"
    if http.enabled:
        return f"http {http.url}"
    return "none: messages wait for `animalclap-edge publish` or an uplink in the config"


class Runtime:
    """The services of a run around `Detector.run`, for `cfg` and the database `db`.
    `Runtime(cfg, db, sys.stderr, cfg.audio.hop_s, det.sample_rate)` opens (and if
    need be recovers) the database under its lock as `.store`; `with` it starts the
    uplink, the live view and the health monitor, and leaving the block stops them in
    reverse order; `.watch(first, reopen)` puts a live source under the watchdog.
    Messages (warnings, notes) go to `err`. `uplink` replaces the one the config
    enables (any object of `uplink.Uplink`'s shape, not yet started)."""

    def __init__(
        self,
        cfg: EdgeConfig,
        db: str | Path,
        err: TextIO,
        hop_s: float,
        sample_rate: int,
        before_print: Callable[[], None] | None = None,
        uplink: Uplink | None = None,
    ):
        # before_print: e.g. erase a terminal status line so messages start at column 0
        self.cfg, self.db, self.err = cfg, Path(db), err
        self._given_uplink = uplink
        self._before_print = before_print
        self._lock = RunLock(self.db)
        self._lock.acquire()  # before the store: a second run must not touch it
        try:
            self._open(cfg, hop_s, sample_rate)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, cfg: EdgeConfig, hop_s: float, sample_rate: int) -> None:
        self.store, recovery, room = self._open_store(cfg)
        if recovery is not None:
            self.say(f"WARNING: {recovery.summary()}")
        if room is not None:
            self.say(f"WARNING: {room.summary()}")
            self.store.add_health("disk_full", str(self.db), room.detail())
            self.store.forget_clips(room.paths, room.note())
        if cut := self.store.close_cut_off_recordings():  # under the lock: none is running
            rebuilt = sum(self._rebuild_events(r, cfg.scoring.merge_gap_s) for r in cut)
            self.say(
                f"note: {len(cut)} recording(s) left open by a run that died (power cut, "
                "kill -9): marked cut off"
                + (
                    f"; {rebuilt} event(s) open then rebuilt from their detections"
                    if rebuilt
                    else ""
                )
            )
        self.health_log = StoreHealthLog(self.store, echo=self.say)
        thermal = Path(cfg.health.thermal_root)
        if thermal != THERMAL_ROOT and not thermal.is_dir():  # a typo logged {} for months
            self.say(
                f"WARNING: health.thermal_root {thermal} is not a folder: no temperatures will "
                f"be logged (Linux and Jetson boards keep them in {THERMAL_ROOT})"
            )
        if cfg.health.interval_s < 60:  # the health table is never pruned
            per_day = 86_400 / cfg.health.interval_s
            self.say(
                f"WARNING: health.interval_s {cfg.health.interval_s:g} writes {per_day:,.0f} "
                "snapshot rows a day, kept on the card for good (the default, 300 s, "
                "writes 288): fine for a test, not for a season"
            )
        # one entry per live source name: a schedule re-wraps the source every period
        self._counters: dict[str, Callable[[], dict]] = {}
        self.uplink: Uplink | None = None
        self.live: LiveServer | None = None
        # set by a run over files that finished: the backup then takes in what it logged
        # (made at start when there was none, it held none of a card's detections)
        self.backup_on_close = False
        h = cfg.health
        self.monitor = HealthMonitor(
            self.db,
            interval_s=h.interval_s,
            counters=self._all_counters,
            thermal_root=Path(h.thermal_root),
            hop_s=hop_s,
            sample_rate=sample_rate,
            backup_every_s=h.backup_interval_h * 3600 if h.backup_interval_h else None,
            uplink=uplink_of(cfg) if self._given_uplink is None else self._given_uplink.describe(),
        )

    def _rebuild_events(self, recording_id: str, merge_gap_s: float) -> int:
        """The events a dead run still held open in a recording, merged again from its
        detections (which were logged; events are written when they close): only those
        no logged event already covers, so a run with another merge_gap_s before the
        cut adds nothing that overlaps. Queued to send like any event."""
        note = "rebuilt from its detections at restart: its run died with it open (no clip)"
        # an event logged before the cut comes out of the merge again with its own id:
        # known by id, only the few new ones are looked for among the logged (a live
        # recording can hold months of events; one overlap query each was quadratic)
        logged = self.store.event_ids(recording_id)
        new = [
            replace(e, clip_note=note)
            for e in merged(self.store.detections_in_window_order(recording_id), merge_gap_s)
            if e.event_id not in logged and not self.store.overlaps_an_event(e)
        ]
        return self.store.add_events(new)

    def _open_store(self, cfg: EdgeConfig):
        """The database, and the room made for it: a full card (kept example clips fill
        it) made every restart fail to open it. Only a failed open on a full card makes
        room; open_store does not take that failure for damage."""
        try:
            return (*open_store(self.db, backup_path_for(self.db)), None)
        except StoreError as e:
            clips = Path(cfg.storage.clips_dir) if cfg.storage.clips_dir else None
            if not (self.db.parent.is_dir() and is_full(self.db.parent)):
                raise
            if (room := make_room(clips)) is None:  # full of what is not ours
                free = shutil.disk_usage(self.db.parent).free
                raise StoreError(
                    f"{self.db}: cannot open the detection database: the card is full "
                    f"({free / 1e6:.1f} MB free, not enough in our own clips to make room): "
                    "free space on it; everything logged is kept in the database as it is"
                ) from e
        return (*open_store(self.db, backup_path_for(self.db)), room)

    def start(self) -> Runtime:
        try:
            self._start_uplink()
            lv = self.cfg.messaging.live
            if lv.enabled:
                from animalclap_edge.live import LiveError, LiveServer

                try:  # the token file is read here: a mode slip must not stop recording
                    self.live = live = LiveServer.from_config(self.db, lv).start()
                    self.say(f"live: {live.url} (stream at /events)")
                except LiveError as e:  # the view is optional; recording is not
                    self.say(f"WARNING: {e}; recording goes on without the live view")
                    self.store.add_health("live_unavailable", "runtime", {"reason": str(e)})
            self.monitor.start()
        except BaseException:
            self.close()
            raise
        return self

    def _start_uplink(self) -> None:
        from animalclap_edge.uplink import UplinkBusy, uplink_from_config

        uplink = self._given_uplink or uplink_from_config(self.db, self.cfg, say=self.say)
        if uplink is None:
            return
        try:
            self.uplink = uplink.start()
            self.say(f"uplink: {uplink.describe()}")
        except UplinkBusy as e:  # that one sends what this run logs
            self.say(f"uplink: {e}; this run records without its own uplink")
            self.store.add_health("uplink_busy", uplink.name, {"holder_pid": e.pid})

    def say(self, message: str) -> None:
        if self._before_print is not None:
            self._before_print()
        print(message, file=self.err, flush=True)

    def watch(self, first: Source, reopen: Callable[[], Source]) -> WatchedSource:
        """`first` under the watchdog; `reopen` opens the same live source again."""
        h = self.cfg.health
        settings = WatchdogSettings(
            stall_s=h.stall_s,
            silence_s=h.silence_s,
            silence_dbfs=h.silence_dbfs,
            backoff_min_s=h.reopen_backoff_s[0],
            backoff_max_s=h.reopen_backoff_s[1],
        )
        src = WatchedSource(first, reopen, self.health_log, settings)
        self._counters[src.name] = src.health_counters
        return src

    def _all_counters(self) -> dict:
        out: dict = {}
        for c in list(self._counters.values()):
            out.update(c())
        return out

    def close(self) -> None:
        try:
            if self.live is not None:
                self.live.stop()  # within ~2 s; closes every open stream
            self.monitor.stop()
            if self.monitor.last_error:
                self.say(f"health: last error: {self.monitor.last_error}")
            if self.backup_on_close and self.monitor.backup_every_s:
                try:  # after the monitor's thread, whose backups write the same file
                    self.monitor.maybe_backup(self.store, force=True)
                except (OSError, sqlite3.Error) as e:  # the old backup stays as it was
                    self.say(f"backup not refreshed ({e}); the database holds every row")
        finally:
            try:
                if self.uplink is not None:
                    left = self.uplink.finish(timeout_s=10.0)
                    self.say(
                        f"uplink: {self.uplink.summary()}; {left} still in the outbox (sent "
                        "on the next run or by `animalclap-edge publish`)"
                    )
            finally:
                try:
                    self.store.close()
                finally:
                    self._lock.release()

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
