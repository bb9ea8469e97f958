"""Health snapshots, thermal zones and backups, on a real database."""

from __future__ import annotations

import os
import time
from pathlib import Path

from animalclap_edge.health import HealthMonitor, backup_path_for, disk, thermal_zones
from animalclap_edge.store import DetectionStore

from .factories import RUN, detection
from .waiting import wait_until

# A sysfs tree laid out as Linux exposes thermal zones (type + temp in milli-degrees),
# with the zone names Jetson Orin boards use; the temperatures are illustrative, not
# read from a board. An offline sensor's temp cannot be read.
ORIN_ZONES = {
    "thermal_zone0": ("cpu-thermal", "48375"),
    "thermal_zone1": ("gpu-thermal", "46500"),
    "thermal_zone2": ("cv0-thermal", "-256000"),  # an unpowered engine: reported as is
    "thermal_zone3": ("soc0-thermal", "47843"),
    "thermal_zone4": ("tj-thermal", None),  # temp unreadable: left out
}


def _sysfs(root: Path) -> Path:
    for zone, (kind, temp) in ORIN_ZONES.items():
        d = root / zone
        d.mkdir(parents=True)
        (d / "type").write_text(kind + "\n")
        if temp is not None:
            (d / "temp").write_text(temp + "\n")
    return root


def test_thermal_zones_read_like_a_jetson(tmp_path):
    t = thermal_zones(_sysfs(tmp_path / "thermal"))
    assert t == {
        "cpu-thermal": 48.375,
        "gpu-thermal": 46.5,
        "cv0-thermal": -256.0,
        "soc0-thermal": 47.843,
    }
    assert thermal_zones(tmp_path / "none") == {}  # a VM or a laptop without zones


def test_disk_usage_is_of_the_filesystem_holding_the_path(tmp_path):
    d = disk(tmp_path)
    assert 0 < d["disk_percent"] < 100 and d["disk_free_mb"] > 1
    # the figures are those of each path's own filesystem (here and, where there is
    # one, a tmpfs), as statvfs gives them to an ordinary user
    for path in [tmp_path, *[p for p in (Path("/dev/shm"),) if p.is_dir()]]:
        st = os.statvfs(path)
        free_mb = st.f_bavail * st.f_frsize / 2**20
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        percent = 100 * used / (used + st.f_bavail * st.f_frsize)
        d = disk(path)
        assert abs(d["disk_free_mb"] - free_mb) < 16, (path, d, free_mb)
        assert abs(d["disk_percent"] - percent) < 0.5, (path, d, percent)


def _kinds(store: DetectionStore) -> list[str]:
    return [r["kind"] for r in store.health(limit=1000)]


def test_the_monitor_writes_snapshots_with_counters_and_backs_up(tmp_path):
    db = tmp_path / "d.db"
    with DetectionStore(db):
        pass
    counters = {"opens": 2, "overflows": 1, "dropped_frames": 48_000 * 3}
    mon = HealthMonitor(
        db,
        interval_s=0.2,
        counters=lambda: counters,
        thermal_root=_sysfs(tmp_path / "thermal"),
        hop_s=1.5,
        sample_rate=48_000,
        backup_every_s=0.3,
    ).start()
    # at least 1.2 s, and until 4 snapshots and a backup are written: a fixed 1.2 s
    # counted on the thread keeping pace, which a slow disk or a busy machine breaks
    time.sleep(1.2)
    with DetectionStore(db) as store:
        assert wait_until(
            lambda: _kinds(store).count("snapshot") >= 4 and "backup" in _kinds(store), 30.0
        )
    mon.stop()
    assert mon.last_error == ""
    with DetectionStore(db) as store:
        rows = store.health(limit=1000)
    snaps = [r["detail"] for r in rows if r["kind"] == "snapshot"]
    assert len(snaps) >= 4 and snaps[-1]["temperatures_c"]["cpu-thermal"] == 48.375
    assert snaps[-1]["counters"] == {**counters, "dropped_windows": 2}
    assert snaps[-1]["outbox_backlog"] == 0 and snaps[-1]["uptime_s"] >= 1.0
    assert snaps[-1]["uplink"] == "none"  # beside the backlog: none sends it
    backups = [r for r in rows if r["kind"] == "backup"]
    assert backups and backup_path_for(db).exists()
    with DetectionStore(backup_path_for(db)) as b:
        assert b.integrity_check() == "ok"


def test_the_first_backup_is_made_at_start_when_there_is_none(tmp_path):
    """A board that reboots every day never lived a whole backup interval: recovery
    then had no backup to start from."""
    db = tmp_path / "d.db"
    with DetectionStore(db):
        pass
    mon = HealthMonitor(db, interval_s=0.1, backup_every_s=24 * 3600.0).start()
    time.sleep(0.5)
    mon.stop()
    assert mon.last_error == "" and backup_path_for(db).exists()
    made = backup_path_for(db).stat().st_mtime_ns
    mon = HealthMonitor(db, interval_s=0.1, backup_every_s=24 * 3600.0).start()
    time.sleep(0.3)
    mon.stop()
    assert backup_path_for(db).stat().st_mtime_ns == made  # one exists: wait the interval


def test_a_backup_older_than_the_interval_is_refreshed_whatever_the_uptime(tmp_path):
    """A recorder restarted more often than backup_interval_h (a solar board off every
    night) kept the backup of its first start all season: the interval was counted
    from each process's own start (found in a deployment trial)."""
    db = tmp_path / "d.db"
    every = 3600.0
    with DetectionStore(db) as s:
        s.start_run(RUN, "b", "0123456789abcdef", "test", "0.1.0")
        HealthMonitor(db, backup_every_s=every).maybe_backup(s)
    old = time.time() - every - 60  # written before the last power-down
    os.utime(backup_path_for(db), (old, old))
    with DetectionStore(db) as s:
        s.add_detections([detection(0)])
        HealthMonitor(db, backup_every_s=every).maybe_backup(s)  # a fresh process
    with DetectionStore(backup_path_for(db)) as b:
        assert len(b.detections()) == 1  # taken in: the backup was refreshed
    made = backup_path_for(db).stat().st_mtime
    with DetectionStore(db) as s:
        HealthMonitor(db, backup_every_s=every).maybe_backup(s)  # young: left alone
    assert backup_path_for(db).stat().st_mtime == made
    ahead = time.time() + 86400  # written under a later clock, now set back
    os.utime(backup_path_for(db), (ahead, ahead))
    with DetectionStore(db) as s:
        HealthMonitor(db, backup_every_s=every).maybe_backup(s)
    assert backup_path_for(db).stat().st_mtime < ahead


def test_snapshots_say_where_the_outbox_goes_so_a_backlog_without_an_uplink_reads_right():
    """The demo's database said outbox_backlog 290 on a recorder that never had MQTT,
    which read as an uplink failing to send."""
    from animalclap_edge.config import EdgeConfig
    from animalclap_edge.runtime import uplink_of

    assert uplink_of(EdgeConfig()).startswith("none: messages wait for `animalclap-edge publish`")
    mq = {"messaging": {"mqtt": {"enabled": True, "host": "broker.lan", "port": 1884}}}
    assert uplink_of(EdgeConfig.model_validate(mq)) == "mqtt broker.lan:1884"


def test_a_thermal_root_that_is_no_folder_is_said_at_start(tmp_path):
    """`thermal_root: /sys/class/thermall` passed config check and logged no temperature
    for as long as the recorder ran, without a word (found in a deployment trial)."""
    import io

    from animalclap_edge.config import EdgeConfig
    from animalclap_edge.runtime import Runtime

    said = []
    for root in (tmp_path / "thermall", tmp_path):
        cfg = EdgeConfig.model_validate({"health": {"thermal_root": str(root)}})
        err = io.StringIO()
        Runtime(cfg, tmp_path / "d.db", err, hop_s=1.5, sample_rate=48_000).close()
        said.append(err.getvalue())
    assert f"health.thermal_root {tmp_path / 'thermall'} is not a folder" in said[0]
    assert "thermal_root" not in said[1]  # a folder (with no zones, as a PC): nothing to say


def test_a_health_interval_under_a_minute_is_said_at_start(tmp_path):
    """The health table is never pruned: `interval_s: 1` (seconds taken for minutes)
    wrote 86,400 rows a day to the card for the whole season, without a word."""
    import io

    from animalclap_edge.config import EdgeConfig
    from animalclap_edge.runtime import Runtime

    said = []
    for interval in (1, 60):
        cfg = EdgeConfig.model_validate({"health": {"interval_s": interval}})
        err = io.StringIO()
        Runtime(cfg, tmp_path / f"d{interval}.db", err, hop_s=1.5, sample_rate=48_000).close()
        said.append(err.getvalue())
    assert "health.interval_s 1 writes 86,400 snapshot rows a day" in said[0]
    assert "interval_s" not in said[1]


def test_a_step_of_the_wall_clock_is_written_as_it_is_found(tmp_path):
    """NTP set the clock from 2000 to the true time mid-run: health.time_utc jumped with
    nothing to mark it, and a season's times had to be worked out from created_utc and
    uptime_s (found in a field test)."""
    from animalclap_edge.clock_step import ClockWatch

    t = {"w": 946_684_800.0, "m": 50.0}  # 2000-01-01: a board without its clock set
    watch = ClockWatch(lambda: t["w"], lambda: t["m"])
    mon = HealthMonitor(tmp_path / "d.db", clock=watch)
    with DetectionStore(tmp_path / "d.db") as store:
        mon.write_snapshot(store)
        t["w"] += 300 + 837_000_000.0  # 300 s on, and the clock set 26.5 years forward
        t["m"] += 300
        mon.write_snapshot(store)
        t["w"] += 300
        t["m"] += 300
        mon.write_snapshot(store)  # no new step: no new row
        steps = [h for h in store.health() if h["kind"] == "clock_step"]
    assert len(steps) == 1
    d = steps[0]["detail"]
    assert d["step_s"] == 837_000_000.0
    assert d["from_utc"] == "2000-01-01T00:05:00.000+00:00"
    assert d["to_utc"].startswith("2026-07-10")
