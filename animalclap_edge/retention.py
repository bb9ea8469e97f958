"""Retention: what is deleted from the card, in which order, and what never is.

A pass (`Retention.apply`) does, in this order:

1. by age (`storage.retention_days`): clip audio of events logged longer ago than that;
   then detections that old whose message the uplink has delivered (all of them when no
   uplink is configured and nothing was ever delivered), with their outbox rows; then
   events that old left with neither a clip nor a detection. A detection that never
   reached the server is never deleted by age.
2. by disk usage: when the disk holding the clips is fuller than
   `storage.max_disk_percent`, clip audio, oldest first, until usage is below
   `storage.retention_low_percent`.

Both keep the `storage.keep_examples_per_species` clips with the highest probability of
each label (species, or back-off taxon), so a rare species keeps its evidence. Detections
are never deleted for space: a few KB each, a card fills with audio long before rows.
Recording and run rows are never deleted: they make a restarted run pass over files it
already did, and a year of 10-minute files is a few MB. Deleted rows' pages are reused by
SQLite; there is no VACUUM, which would rewrite the whole file (SD wear, twice the space).

`Retention.maybe_apply` is what the detector calls: at start (with a sweep of clip
files no event points at), every `storage.retention_interval_s`, and whenever the disk
is above the high-water mark (which is when ClipWriter refuses clips), so a full card
makes room and clips resume while detection logging never stops.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from animalclap_edge.clips import CLIP_NAME
from animalclap_edge.clock_step import CLOCK_STEP_S, ClockWatch
from animalclap_edge.config import EdgeConfig
from animalclap_edge.diskspace import disk_bytes, percent_full, usage_percent
from animalclap_edge.records import utc_ms
from animalclap_edge.store import DetectionStore

log = logging.getLogger(__name__)

_PAGE = 500  # candidate rows read (and cleared) per transaction
_MAX_DISK_ROUNDS = 20  # re-measure after each round: the database grows meanwhile


@dataclass
class RetentionReport:
    """What one pass did and why; `summary()` is its one-line log form."""

    trigger: str  # start, interval, disk, manual
    time_utc: str
    age_rule: str  # which detections the age rule may delete, or why it is off
    disk_percent_before: float | None = None
    disk_percent_after: float | None = None
    high_percent: float | None = None
    low_percent: float | None = None
    clips_deleted_for_age: int = 0
    clips_deleted_for_disk: int = 0
    clip_bytes_freed: int = 0  # on disk (allocated blocks), clips and orphans
    clip_files_missing: int = 0  # rows whose file was already gone: row cleared all the same
    orphans_deleted: int = 0  # files no event points at (a crash between commit and unlink)
    detections_deleted: int = 0
    events_deleted: int = 0
    undelivered_kept: int = 0  # older than retention_days, kept because never delivered
    # no uplink: the deleted detections were the only copy (said as a warning, not INFO)
    only_copy: bool = False
    wal: str = ""  # what the checkpoint did, when one ran
    notes: list[str] = field(default_factory=list)

    @property
    def clips_deleted(self) -> int:
        return self.clips_deleted_for_age + self.clips_deleted_for_disk

    @property
    def deleted_anything(self) -> bool:
        return bool(
            self.clips_deleted
            or self.clip_files_missing
            or self.orphans_deleted
            or self.detections_deleted
            or self.events_deleted
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"retention ({self.trigger})"]
        if self.disk_percent_before is not None:
            parts.append(
                f"disk {self.disk_percent_before:.1f}% -> {self.disk_percent_after:.1f}% "
                f"(high {self.high_percent:g}%, low {self.low_percent:g}%)"
            )
        parts.append(
            f"clips deleted: {self.clips_deleted_for_disk} for disk space, "
            f"{self.clips_deleted_for_age} for age, {self.orphans_deleted} orphan files; "
            f"{self.clip_bytes_freed / 1e6:.1f} MB freed"
        )
        parts.append(
            f"detections deleted: {self.detections_deleted} ({self.age_rule}); "
            f"{self.undelivered_kept} old undelivered kept; events deleted: {self.events_deleted}"
        )
        if self.clip_files_missing:
            parts.append(f"{self.clip_files_missing} clip files were already missing")
        if self.wal:
            parts.append(self.wal)
        return "; ".join(parts + self.notes)


class Retention:
    """The retention policy of one database and clips folder (see the module doc)."""

    def __init__(
        self,
        *,
        clips_dir: str | Path | None,
        retention_days: int | None = None,
        high_percent: float = 90.0,
        low_percent: float = 80.0,
        keep_examples_per_species: int = 3,
        uplink: bool = False,
        interval_s: float = 600.0,
        disk_usage: Callable[[Path], Any] = shutil.disk_usage,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        if not 0 < low_percent < high_percent <= 100:
            raise ValueError(
                f"retention needs 0 < low ({low_percent:g}%) < high ({high_percent:g}%) <= 100"
            )
        if keep_examples_per_species < 0 or interval_s <= 0:
            raise ValueError("keep_examples_per_species must be >= 0 and interval_s > 0")
        if retention_days is not None and retention_days < 1:
            raise ValueError(f"retention_days must be >= 1 or None (got {retention_days})")
        self.clips_dir = Path(clips_dir) if clips_dir is not None else None
        self.retention_days = retention_days
        self.high, self.low = high_percent, low_percent
        self.keep = keep_examples_per_species
        self.uplink = uplink
        self.interval_s = interval_s
        self._disk_usage, self._clock = disk_usage, clock
        # ages are measured by the wall clock: one stepped forward since this process
        # began (NTP after a boot at the last shutdown time) made rows logged minutes
        # before look days old, and the age rule deleted them
        self._watch = ClockWatch(wall, clock)
        self._last_pass: float | None = None
        self._stuck = False  # the last pass left the disk above high: wait for the interval
        self._indexed = False  # the created_utc indexes the age pass searches exist
        self._unset_said = 0  # rows of unknown age last reported: said again when it changes
        self.history: deque[RetentionReport] = deque(maxlen=100)  # passes that deleted something

    @classmethod
    def from_config(cls, cfg: EdgeConfig) -> Retention | None:
        """The policy a config asks for; None when it can delete nothing (no clips
        folder and no retention_days)."""
        st = cfg.storage
        if st.clips_dir is None and st.retention_days is None:
            return None
        return cls(
            clips_dir=st.clips_dir,
            retention_days=st.retention_days,
            high_percent=st.max_disk_percent,
            low_percent=st.retention_low,
            keep_examples_per_species=st.keep_examples_per_species,
            uplink=cfg.messaging.uplink is not None,
            interval_s=st.retention_interval_s,
        )

    # -- scheduling -------------------------------------------------------------

    def maybe_apply(
        self, store: DetectionStore, start: bool = False, check_disk: bool = True
    ) -> RetentionReport | None:
        """Run a pass if one is due: always with `start` (which also sweeps orphan clip
        files); otherwise when the interval has passed, or, with `check_disk`, the disk
        is above high (unless the last pass already found nothing more to delete: then
        not before the interval). Without `check_disk` (the per-batch call) it only
        reads the clock; with it, one statvfs (the call before each clip write, the
        only writes that fill a card). Never raises for a database or file error: that
        is logged, and detection logging goes on."""
        t = self._clock()
        trigger = "start"
        if not start:
            trigger = "interval"
            if self._last_pass is not None and t - self._last_pass < self.interval_s:
                if not check_disk or self._stuck or not self._above_high():
                    return None
                trigger = "disk"
        self._last_pass = t
        try:
            report = self.apply(store, self.clips_dir, trigger=trigger, sweep=trigger == "start")
        except (sqlite3.Error, OSError) as e:
            log.warning("retention (%s) failed, will retry: %s", trigger, e)
            return None
        after = report.disk_percent_after
        self._stuck = after is not None and after > self.high
        if report.deleted_anything:
            self.history.append(report)
            # Space-driven deletions are worth a look on the console, and so are detections
            # no server holds; age deletions of delivered rows are routine.
            only_copy = report.only_copy and report.detections_deleted
            level = logging.WARNING if report.clips_deleted_for_disk or only_copy else logging.INFO
            log.log(level, "%s", report.summary())
            store.add_health("retention", "retention", report.to_dict())
        elif report.notes:  # nothing deleted, but something to say (indexes not built)
            log.warning("%s", report.summary())
        return report

    def _above_high(self) -> bool:
        pct = self._disk_percent()
        return pct is not None and pct > self.high

    def _disk_percent(self) -> float | None:
        if self.clips_dir is None or not self.clips_dir.is_dir():
            return None
        return percent_full(self.clips_dir, self._disk_usage)

    # -- one pass -----------------------------------------------------------------

    def apply(
        self,
        store: DetectionStore,
        clips_dir: str | Path | None,
        now: datetime | None = None,
        trigger: str = "manual",
        sweep: bool = False,
    ) -> RetentionReport:
        """One pass: age rule, then disk rule (then, with `sweep`, orphan clip files).
        `now`: the pass's time (default: the wall clock, less any forward step it took
        since this Retention began, for the age rule)."""
        stepped = 0.0
        if now is None:
            now = datetime.fromtimestamp(self._watch.now(), timezone.utc)
            stepped = self._watch.since_start()
        if now.tzinfo is None:
            raise ValueError("retention needs an aware datetime for now (UTC)")
        now = now.astimezone(timezone.utc)
        folder = Path(clips_dir) if clips_dir is not None else None
        if folder is not None and not folder.is_dir():
            folder = None  # nothing was ever saved there
        report = RetentionReport(
            trigger=trigger, time_utc=utc_ms(now), age_rule="age rule off: retention_days is null"
        )
        changed = False
        if sweep and folder is not None:
            self._sweep_orphans(store, folder, report)
        if self.retention_days is not None:
            aged_at = now
            if stepped >= CLOCK_STEP_S:
                # rows logged before the step hold the earlier, behind, times: aged from
                # the clock as it ran before the step, those after it are kept longer
                aged_at = now - timedelta(seconds=stepped)
                report.notes.append(
                    f"the clock was set forward by {_span(stepped)} since this run began: "
                    "detections are aged as if it had not been (those logged since are "
                    "kept that much longer), so those logged before it are not taken for "
                    "older than they are"
                )
            changed |= self._by_age(store, folder, aged_at, self.retention_days, report)
        if folder is not None:
            changed |= self._by_disk(store, folder, now, report)
        if changed:
            # Deleted rows leave their pages in the WAL until a checkpoint; TRUNCATE
            # also gives the WAL file's own space back to the card.
            busy, pages, _ = store.checkpoint()
            report.wal = (
                "WAL checkpointed and truncated"
                if not busy
                else f"WAL checkpoint incomplete: a reader holds it ({pages} pages)"
            )
        return report

    def _by_age(
        self,
        store: DetectionStore,
        folder: Path | None,
        now: datetime,
        days: int,
        report: RetentionReport,
    ) -> bool:
        cutoff = utc_ms(now - timedelta(days=days))
        if cutoff <= CLOCK_FLOOR_UTC:
            return False  # nothing written with a set clock can be that old
        unset = store.logged_before(CLOCK_FLOOR_UTC)
        if unset and unset != self._unset_said:  # said when it changes, not every pass
            self._unset_said = unset
            report.notes.append(
                f"{unset} detection(s) were logged while the clock was unset (before "
                f"{CLOCK_FLOOR_UTC[:10]}): their age is unknown, so the age rule keeps them "
                "(the disk rule still applies)"
            )
        changed, after_rowid = False, 0
        if not self._indexed:  # built once, by the recorders that have an age rule
            problem = store.ensure_age_indexes()
            self._indexed = problem is None
            if problem:
                report.notes.append(problem)
        if folder is not None:
            note = f"clip deleted by retention at {report.time_utc}: older than storage.retention_days {days}"
            while rows := store.clip_candidates(
                self.keep,
                after_rowid=after_rowid,
                before_utc=cutoff,
                limit=_PAGE,
                not_before_utc=CLOCK_FLOOR_UTC,
            ):
                report.clips_deleted_for_age += self._delete_clips(
                    store, folder, rows, note, report
                )
                after_rowid = rows[-1][0]
                changed = True
        # Delivery in the database is the evidence of an uplink even when this config
        # has none (a separate `animalclap-edge publish` may send the outbox).
        uplink = self.uplink or store.any_delivered()
        if uplink:
            report.age_rule = f"delivered detections older than {days} days"
        else:
            report.age_rule = f"no uplink configured and none ever delivered: all detections older than {days} days, the only copy of them"
        n_det, n_ev, kept = store.delete_expired(
            cutoff, undelivered_too=not uplink, not_before_utc=CLOCK_FLOOR_UTC
        )
        report.detections_deleted += n_det
        report.events_deleted += n_ev
        report.only_copy = not uplink
        report.undelivered_kept = kept
        return changed or bool(n_det or n_ev)

    def _by_disk(
        self, store: DetectionStore, folder: Path, now: datetime, report: RetentionReport
    ) -> bool:
        usage = self._disk_usage(folder)
        pct = usage_percent(usage)
        report.disk_percent_before = report.disk_percent_after = pct
        report.high_percent, report.low_percent = self.high, self.low
        if pct <= self.high:
            return False
        note = (
            f"clip deleted by retention at {report.time_utc}: disk {pct:.1f}% full > "
            f"storage.max_disk_percent {self.high:g}"
        )
        changed, after_rowid = False, 0
        for _ in range(_MAX_DISK_ROUNDS):
            # bytes above the low mark, of the room the recorder has (diskspace: as df)
            need = usage.used - self.low / 100.0 * (usage.used + usage.free)
            chosen: list[tuple[int, str, str]] = []
            got = 0
            # Oldest first: collect just enough clips to get below the low-water mark.
            while got <= need:
                rows = store.clip_candidates(self.keep, after_rowid=after_rowid, limit=_PAGE)
                if not rows:
                    break
                for row in rows:
                    chosen.append(row)
                    got += disk_bytes(folder / row[2])
                    after_rowid = row[0]
                    if got > need:
                        break
            if not chosen:
                report.notes.append(
                    f"disk still {pct:.1f}% full: only the {self.keep} kept examples per "
                    "label remain; clips stay refused until space is freed (detections go on)"
                )
                break
            report.clips_deleted_for_disk += self._delete_clips(store, folder, chosen, note, report)
            changed = True
            usage = self._disk_usage(folder)
            pct = report.disk_percent_after = usage_percent(usage)
            if pct < self.low:
                break
        return changed

    def _delete_clips(
        self,
        store: DetectionStore,
        folder: Path,
        rows: list[tuple[int, str, str]],
        note: str,
        report: RetentionReport,
    ) -> int:
        """Clear the events' clip paths, commit, then delete the files; returns how
        many events lost their clip (a file already gone counts, and is reported).

        Commit first: a crash between the two leaves files no event points at (space
        lost until the orphan sweep of the next start), never an event pointing at
        audio that is gone. The other order would make the database promise clips it
        no longer has, and finding those means a stat of every clip ever written."""
        cleared = store.clear_clips((eid, path, note) for _, eid, path in rows)
        for _, path in cleared:
            f = folder / path
            size = disk_bytes(f)
            try:
                f.unlink()
            except FileNotFoundError:
                report.clip_files_missing += 1
                continue
            except OSError as e:  # left as an orphan: the next start's sweep retries it
                report.notes.append(f"could not delete {f}: {e.strerror or e}")
                continue
            report.clip_bytes_freed += size
        return len(cleared)

    def _sweep_orphans(self, store: DetectionStore, folder: Path, report: RetentionReport) -> None:
        """Delete clip files no event points at: left by a crash between retention's
        commit and its unlink, or between a clip's write and its event's commit (the
        replay of that recording writes the clip again)."""
        referenced = store.clip_paths()
        for f in folder.rglob("*"):
            if not CLIP_NAME.match(f.name) or not f.is_file():
                continue
            if f.relative_to(folder).as_posix() in referenced:
                continue
            size = disk_bytes(f)
            try:
                f.unlink()
            except OSError:
                continue
            report.orphans_deleted += 1
            report.clip_bytes_freed += size


# Rows stamped before this were logged with the clock unset (a board without a
# real-time clock boots at 2000-01-01 or its image's build date until NTP sets it):
# no recorder ran this software earlier. Judged by the age rule as "2000 + 90 days",
# a clock set later would delete every one of them at once.
CLOCK_FLOOR_UTC = "2026-01-01T00:00:00.000+00:00"


def _span(seconds: float) -> str:
    """'2.0 days', '5.0 h' or '3 min', for a step of the clock."""
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 3_600:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 60:.0f} min"
