"""Health of a recorder in the field: events and periodic snapshots, kept with the detections.

Events (a source lost, reopened, stalled or silent; the database recovered) are
written when they happen; a `snapshot` every `interval_s` carries disk space,
temperatures from the thermal zones where they exist (Jetson: CPU, GPU, SoC), the
process's memory, the outbox backlog and each source's counters (openings,
overflows, dropped frames and windows). All of it goes to the `health` table and,
through the MQTT uplink's heartbeat, to the server.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from animalclap_edge.clock_step import ClockWatch
from animalclap_edge.diskspace import usage_percent
from animalclap_edge.records import utc_ms
from animalclap_edge.store import DetectionStore

THERMAL_ROOT = Path("/sys/class/thermal")


def thermal_zones(root: Path = THERMAL_ROOT) -> dict[str, float]:
    """{zone type: degrees C} from Linux thermal zones; {} where there are none (a VM)."""
    out: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip() or zone.name
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue  # a zone that cannot be read (offline sensor) is left out
        name = kind if kind not in out else f"{kind}:{zone.name}"
        out[name] = milli / 1000.0
    return out


def disk(path: str | Path) -> dict[str, float]:
    """Usage of the filesystem holding `path` (the SD card, for the database)."""
    u = shutil.disk_usage(Path(path))
    return {
        "disk_percent": round(usage_percent(u), 2),
        "disk_free_mb": round(u.free / 2**20, 1),
    }


def rss_mb() -> float:
    """Resident memory now (not the peak), from /proc; 0 where /proc does not exist."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def backup_path_for(db: Path) -> Path:
    """Where the online backup of `db` goes (recovery looks there too)."""
    return db.with_name(db.name + ".backup")


class StoreHealthLog:
    """`HealthLog` writing to a `DetectionStore` (from the thread that owns it)."""

    def __init__(self, store: DetectionStore, echo: Callable[[str], None] | None = None):
        self.store, self.echo = store, echo

    def record(self, kind: str, source: str, detail: dict) -> None:
        self.store.add_health(kind, source, detail)
        if self.echo is not None:
            self.echo(f"health: {kind} {source}: {detail}")


class HealthMonitor:
    """A thread writing a `snapshot` health row every `interval_s` with its own
    connection (the detector's connection belongs to the detector's thread)."""

    def __init__(
        self,
        db_path: str | Path,
        interval_s: float = 300.0,
        counters: Callable[[], dict] | None = None,
        thermal_root: Path = THERMAL_ROOT,
        hop_s: float | None = None,
        sample_rate: int | None = None,
        backup_every_s: float | None = None,
        backup_path: str | Path | None = None,
        uplink: str = "none",
        clock: ClockWatch | None = None,
    ):
        self.db_path = Path(db_path)
        # a step of the wall clock is written as it is found: a season's times are then
        # corrected from the rows, not guessed from created_utc and uptime_s
        self.clock = clock or ClockWatch()
        # said beside the outbox's backlog: on a recorder with no uplink every message
        # waits, which read as a failing one (290 waiting after the demo)
        self.uplink = uplink
        self.backup_every_s = backup_every_s
        self.backup_path = Path(backup_path) if backup_path else backup_path_for(self.db_path)
        self.interval_s = interval_s
        self.counters = counters or dict
        self.thermal_root = thermal_root
        self.hop_s, self.sample_rate = hop_s, sample_rate
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error = ""

    def snapshot(self) -> dict:
        c = dict(self.counters())
        dropped = c.get("dropped_frames")
        if dropped and self.hop_s and self.sample_rate:  # windows that never existed
            c["dropped_windows"] = int(dropped / (self.hop_s * self.sample_rate))
        return {
            **disk(self.db_path.parent),
            "temperatures_c": thermal_zones(self.thermal_root),
            "rss_mb": round(rss_mb(), 1),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "counters": c,
        }

    def write_snapshot(self, store: DetectionStore) -> None:
        if (step := self.clock.step()) is not None:
            stepped, unstepped, now = step
            store.add_health(
                "clock_step",
                "runtime",
                {
                    "step_s": round(stepped, 1),
                    "from_utc": utc_ms(datetime.fromtimestamp(unstepped, timezone.utc)),
                    "to_utc": utc_ms(datetime.fromtimestamp(now, timezone.utc)),
                },
            )
        snap = self.snapshot()
        snap["uplink"] = self.uplink
        snap["outbox_backlog"] = store.backlog()
        snap["outbox_set_aside"] = store.set_aside_count()
        store.add_health("snapshot", "runtime", snap)

    def backup_age_s(self) -> float | None:
        """Seconds since the backup was written (its mtime), None when there is none."""
        try:
            return time.time() - self.backup_path.stat().st_mtime
        except FileNotFoundError:
            return None

    def maybe_backup(self, store: DetectionStore, force: bool = False) -> None:
        # Due by the backup's own age, not this process's uptime: a board that powers
        # down every night, or a unit that restarts, never lives a whole interval, and
        # kept a backup of its first start for the whole season. An mtime in the future
        # (a clock set back: no RTC) is due too, once.
        age = self.backup_age_s()
        due = self.backup_every_s and (age is None or not 0 <= age < self.backup_every_s)
        if force or due:
            t = time.monotonic()
            store.backup(self.backup_path)
            store.add_health(
                "backup",
                "runtime",
                {"path": str(self.backup_path), "seconds": round(time.monotonic() - t, 3)},
            )

    def start(self) -> HealthMonitor:
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        with DetectionStore(self.db_path) as store:
            while True:
                try:
                    self.write_snapshot(store)
                    self.maybe_backup(store)
                except Exception as e:  # health must never stop detection
                    self.last_error = f"{type(e).__name__}: {e}"
                if self._stop.wait(self.interval_s):
                    try:
                        self.write_snapshot(store)  # a last one on the way out
                    except Exception as e:  # a full disk: the run says so itself
                        self.last_error = f"{type(e).__name__}: {e}"
                    return
