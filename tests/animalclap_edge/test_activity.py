"""`report activity`: when each label was heard, counted exactly and drawn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from animalclap_edge.activity import activity, plot_activity
from animalclap_edge.cli import main
from animalclap_edge.records import RecordingResult
from animalclap_edge.report import ReportError
from animalclap_edge.store import DetectionStore

from .factories import RUN, detection

ROBIN = dict(taxon="eurrob1", scientific_name="Erithacus rubecula", common_name="European Robin")


@pytest.fixture
def season(tmp_path: Path) -> Path:
    """Blackbirds at dawn on two days, a robin late in the evening (UTC), a family-level
    detection, an untrusted clock and an undated window."""
    dets = []
    for day, hour, minute in (("01", 4, 0), ("01", 4, 10), ("02", 5, 0), ("02", 4, 30)):
        t = f"2024-05-{day}T{hour:02d}:{minute:02d}:00+00:00"
        dets.append(detection(len(dets) * 72000, start_time_utc=t, clock_trusted=True))
    dets.append(
        detection(
            len(dets) * 72000,
            start_time_utc="2024-05-01T23:30:00+00:00",
            clock_trusted=False,
            **ROBIN,
        )
    )
    dets.append(
        detection(
            len(dets) * 72000,
            level="family",
            taxon="Turdidae",
            scientific_name="Turdidae",
            common_name="unknown Turdidae",
            start_time_utc="2024-05-02T12:00:00+00:00",
            probability=0.4,
        )
    )
    dets.append(detection(len(dets) * 72000, start_time_utc=None))
    db = tmp_path / "season.db"
    with DetectionStore(db) as s:
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections(dets)
        s.finish_run(RUN)  # a recorder that stopped: its card needs no -wal
    return db


def test_detections_are_counted_by_local_hour_and_day(season):
    a = activity(season)
    assert a.labels == ["Turdus merula", "Erithacus rubecula", "unknown Turdidae (family)"]
    assert a.days == ["2024-05-01", "2024-05-02"]
    assert a.by_hour[0, 4] == 3 and a.by_hour[0, 5] == 1 and a.by_hour[0].sum() == 4
    assert a.by_hour[1, 23] == 1 and a.by_hour[2, 12] == 1
    np.testing.assert_array_equal(a.by_day, [[2, 2], [1, 0], [0, 1]])
    assert (a.total, a.untrusted, a.undated) == (6, 2, 1)  # the factory's clock: untrusted


def test_a_utc_offset_moves_hours_and_days(season):
    a = activity(season, utc_offset_h=2)
    robin = a.labels.index("Erithacus rubecula")
    assert a.by_hour[robin, 1] == 1  # 23:30 UTC is 01:30 the next day
    assert a.by_day[robin, a.days.index("2024-05-02")] == 1
    half = activity(season, utc_offset_h=-0.5)
    # 04:00, 04:10, 04:30, 05:00 UTC -> 03:30, 03:40, 04:00, 04:30
    assert half.by_hour[0, 3] == 2 and half.by_hour[0, 4] == 2


def test_top_and_min_probability_choose_what_is_drawn(season):
    one = activity(season, top=1)
    assert one.labels == ["Turdus merula"]
    # the title must not pass the drawn label's 4 detections off as the card's 6
    assert (one.total, one.all_labels, one.all_total) == (4, 3, 6)
    assert "unknown Turdidae (family)" not in activity(season, min_probability=0.5).labels
    with pytest.raises(ReportError, match="--top must be at least 1"):
        activity(season, top=0)
    with pytest.raises(ReportError, match="--utc-offset must be between -14 and 14"):
        activity(season, utc_offset_h=20)


def test_the_figure_is_written_and_bad_requests_are_named(season, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = plot_activity(activity(season), tmp_path / "a.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ReportError, match=r"written as \.png, \.svg or \.pdf"):
        plot_activity(activity(season), tmp_path / "a.jpg")
    with pytest.raises(
        ReportError,
        match=r"no detection with a time passes --min-probability 0\.99 \(the database has 7",
    ):
        plot_activity(activity(season, min_probability=0.99), tmp_path / "b.png")
    svg = tmp_path / "cli.svg"
    assert main(["report", "activity", "--db", str(season), "--out", str(svg), "--top", "2"]) == 0
    assert svg.read_text().lstrip().startswith("<?xml")
    assert f"2 labels, 5 detections from {season}" in capsys.readouterr().err
    assert "5 detections of 2 labels (the most detected of 3 labels, 6 detections)" in (
        svg.read_text()
    )
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("field notes")
    out = not_a_folder / "a.png"
    assert main(["report", "activity", "--db", str(season), "--out", str(out)]) == 2
    assert f"--out {out}: {not_a_folder} is a file, not a folder" in capsys.readouterr().err
    assert not_a_folder.read_text() == "field notes"
    assert main(["report", "activity", "--db", str(season)]) == 2
    assert "give --out FILE.png" in capsys.readouterr().err


def test_the_figure_goes_to_dev_stdout_piped_or_appended(season, tmp_path):
    """`--out /dev/stdout | ...` was refused (resolved: pipe:[...], not a .png), and
    `>> figures.bin` had the file replaced by a renamed .part."""
    pytest.importorskip("matplotlib")
    run = [sys.executable, "-m", "animalclap_edge", "report", "activity", "--db", str(season)]
    run += ["--out", "/dev/stdout"]
    piped = subprocess.run(run, capture_output=True, cwd=tmp_path, timeout=120)
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout.startswith(b"\x89PNG\r\n\x1a\n") and piped.stdout.endswith(
        b"IEND\xaeB`\x82"
    )
    appended = tmp_path / "figures.bin"
    appended.write_bytes(b"kept")
    with open(appended, "ab") as f:
        done = subprocess.run(run, stdout=f, stderr=subprocess.PIPE, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert appended.read_bytes() == b"kept" + piped.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures.bin", "season.db"]


def test_a_database_it_cannot_read_is_named_in_one_line(tmp_path):
    import sqlite3

    odd = tmp_path / "odd.db"
    with sqlite3.connect(odd) as c:
        c.execute("CREATE TABLE detections (x)")  # a table of that name, not ours
    with pytest.raises(ReportError, match=r"odd\.db: cannot read the detections \(no such column"):
        activity(odd)


def test_taxon_chooses_the_labels_drawn(season):
    notes: list[str] = []
    a = activity(season, taxa=[" Turdus "], say=notes.append)
    assert a.labels == ["Turdus merula"]
    assert notes and "a genus" in notes[0]
    assert activity(season, taxa=["eurrob1"]).labels == ["Erithacus rubecula"]


def _recording(name: str, start: str | None, duration_s: float, trusted: bool = True):
    return RecordingResult(
        name, RUN, f"/card/{name}", "ok", None, duration_s, 1, 0, start, trusted, "test",
        "2024-06-01T00:00:00.000+00:00",
    )  # fmt: skip


def test_the_days_are_a_calendar_with_the_unrecorded_days_apart(season):
    """Days without a detection were dropped, so 2024-05-14 stood next to 2026-11-27,
    and a day not recorded looked like a day recorded with nothing heard."""
    with DetectionStore(season) as s:
        # recorded on May 4 (nothing heard), not on May 3; one recording over midnight
        s.record_recording(_recording("d4.wav", "2024-05-04T10:00:00+00:00", 60))
        s.record_recording(_recording("d5.wav", "2024-05-05T23:59:00+00:00", 120))
    a = activity(season)
    assert a.days == [f"2024-05-0{d}" for d in range(1, 7)]
    assert a.recorded.tolist() == [True, True, False, True, True, True]
    assert a.by_day[:, 2:].sum() == 0  # recorded or not, nothing heard: told apart above
    # a local offset moves the recordings' days too
    assert activity(season, utc_offset_h=-11).days[0] == "2024-04-30"


def test_an_absurd_span_is_said_and_untrusted_clocks_can_be_left_out(season, tmp_path):
    with DetectionStore(season) as s:  # a board whose clock was never set
        s.add_detections([detection(9 * 72000, start_time_utc="1970-01-01T00:00:05+00:00")])
    with pytest.raises(ReportError) as e:
        activity(season)
    msg = str(e.value)
    assert msg.startswith("the days run from 1970-01-01 to 2024-05-02 (19,846 days, more than")
    assert "3 detections and 0 recordings were timed by an untrusted clock" in msg
    assert msg.endswith("leave them out with --trusted-clock")
    a = activity(season, trusted_clock_only=True)
    assert a.days == ["2024-05-01", "2024-05-02"] and a.untrusted_left_out == 4
    assert (a.total, a.untrusted) == (4, 0)


def test_the_title_counts_what_was_asked_for_and_an_empty_card_says_so(season, tmp_path):
    pytest.importorskip("matplotlib")
    # the undated window has p 0.87: --min-probability 0.9 leaves it out of the count too
    assert activity(season).undated == 1
    assert activity(season, min_probability=0.9).undated == 0
    assert activity(season, taxa=["eurrob1"]).undated == 0
    empty = tmp_path / "empty.db"
    with DetectionStore(empty):
        pass
    with pytest.raises(ReportError, match=r"^nothing to draw: the database has no detections$"):
        plot_activity(activity(empty), tmp_path / "e.png")
    svg = tmp_path / "t.svg"
    plot_activity(activity(season, trusted_clock_only=True), svg)
    assert "3 timed by an untrusted clock left out" in svg.read_text()


def test_several_cards_are_counted_together_and_their_top_labels_chosen_over_all(
    season, tmp_path, capsys
):
    """A season's figure across recorders: each card alone would draw its own top."""
    other = tmp_path / "other" / "detections.db"
    run = "another-recorders-run"  # each card its own runs: one run on two is one card
    robins = [
        detection(i * 72000, start_time_utc=f"2024-05-03T06:0{i}:00+00:00", run_id=run, **ROBIN)
        for i in range(5)
    ]
    with DetectionStore(other) as s:
        s.start_run(run, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections(robins)
        s.finish_run(run)
    one, both = activity(season, top=1), activity([season, other], top=1)
    assert one.labels == ["Turdus merula"]  # 4 blackbirds on this card, 1 robin
    assert both.labels == ["Erithacus rubecula"]  # 1 + 5 robins over both: the top
    assert both.days == ["2024-05-01", "2024-05-02", "2024-05-03"]
    np.testing.assert_array_equal(both.by_day, [[1, 0, 5]])
    assert (both.all_labels, both.all_total) == (3, 6 + 5)
    assert both.undated == one.undated == 1
    png = tmp_path / "season.png"
    assert main(["report", "activity", "--db", str(season), str(other), "--out", str(png)]) == 0
    assert png.stat().st_size > 0
    assert "3 labels, 11 detections from 2 databases" in capsys.readouterr().err


@pytest.fixture
def autumn(tmp_path: Path) -> Path:
    """Blackbirds at 05:30 UTC every day from 20 to 25 October 2026, across Berlin's
    change from summer time (01:00 UTC on the 25th: 03:00 CEST became 02:00 CET), robins
    in the hour 02:00-03:00 that came twice that night, and two recordings: 25 hours
    from midnight on the 25th (its whole day) and three from 23:30 on the 27th."""
    dets = [
        detection(i * 72000, start_time_utc=f"2026-10-{d}T05:30:00+00:00", clock_trusted=True)
        for i, d in enumerate(range(20, 26))
    ]
    dets += [
        detection((10 + i) * 72000, start_time_utc=f"2026-10-25T{t}:00+00:00", **ROBIN)
        for i, t in enumerate(("00:15", "00:45", "01:15", "01:45"))
    ]
    db = tmp_path / "autumn.db"
    with DetectionStore(db) as s:
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections(dets)
        s.record_recording(_recording("d25.wav", "2026-10-24T22:00:00+00:00", 25 * 3600))
        s.record_recording(_recording("d27.wav", "2026-10-27T22:30:00+00:00", 3 * 3600))
        s.finish_run(RUN)
    return db


def test_a_time_zone_counts_each_detection_by_the_hour_and_day_of_its_own_clock(autumn):
    """`--utc-offset 2` drew the dawn chorus an hour late once Berlin changed to winter
    time; by name, each detection gets the local hour and day of its own instant."""
    import sqlite3
    from collections import Counter
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    a = activity(autumn, utc_offset_h="Europe/Berlin")
    c = sqlite3.connect(autumn)
    rows = c.execute("SELECT scientific_name, start_time_utc FROM detections").fetchall()
    recs = c.execute("SELECT start_time_utc, duration_s FROM recordings").fetchall()
    c.close()
    local = [(name, datetime.fromisoformat(t).astimezone(berlin)) for name, t in rows]
    hours = Counter((name, t.hour) for name, t in local)
    days = Counter((name, t.date().isoformat()) for name, t in local)
    assert {
        (label, h): int(a.by_hour[i, h])
        for i, label in enumerate(a.labels)
        for h in range(24)
        if a.by_hour[i, h]
    } == hours
    assert {
        (label, d): int(a.by_day[i, j])
        for i, label in enumerate(a.labels)
        for j, d in enumerate(a.days)
        if a.by_day[i, j]
    } == days
    # the dawn an hour earlier by the clock from the 25th; both 02:00s in one hour
    assert hours[("Turdus merula", 7)] == 5 and hours[("Turdus merula", 6)] == 1
    assert hours[("Erithacus rubecula", 2)] == 4
    # the days recordings cover, from their start to their last instant, in Berlin
    covered = set()
    for start, duration in recs:
        t0 = datetime.fromisoformat(start)
        t1 = t0 + timedelta(seconds=duration - 1e-3)
        covered |= {t0.astimezone(berlin).date(), t1.astimezone(berlin).date()}
    assert a.days == [f"2026-10-{d}" for d in range(20, 29)]
    recorded = {d for d, r in zip(a.days, a.recorded, strict=True) if r}
    assert recorded == {d for _, d in days} | {d.isoformat() for d in covered}
    assert "2026-10-26" not in recorded  # 25 hours from midnight on the 25th end that day
    assert a.utc_offset_h == "Europe/Berlin"
    # fixed hours, as the command line gives them, are one offset for every row
    fixed = activity(autumn, utc_offset_h="2")
    assert fixed.utc_offset_h == 2 and fixed.by_hour[fixed.labels.index("Turdus merula"), 7] == 6
    with pytest.raises(ReportError, match=r"--utc-offset 'Europe/Berln'.*Europe/Berlin\?"):
        activity(autumn, utc_offset_h="Europe/Berln")


def test_the_figure_says_the_time_zone_its_hours_are_in(autumn, tmp_path):
    pytest.importorskip("matplotlib")
    svg = plot_activity(activity(autumn, utc_offset_h="Europe/Berlin"), tmp_path / "z.svg")
    assert "times in Europe/Berlin" in svg.read_text()
    svg = plot_activity(activity(autumn, utc_offset_h=-3), tmp_path / "h.svg")
    assert "times in UTC-3 h" in svg.read_text()
