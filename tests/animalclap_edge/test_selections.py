"""`report raven` / `report audacity`: a table per recording, checked against the card."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import pytest

from animalclap_edge.cli import main
from animalclap_edge.report import ReportError
from animalclap_edge.selections import write_selections
from animalclap_edge.sources.base import live_recording_id
from animalclap_edge.store import DetectionStore

from .factories import RUN, detection, recording

DAY1, DAY2 = "/card/2024-05-01/20240501_040000.WAV", "/card/2024-05-02/20240501_040000.WAV"
ROBIN = dict(taxon="eurrob1", scientific_name="Erithacus rubecula", common_name="European Robin")


def _raven(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture
def card(tmp_path: Path) -> Path:
    """Two files of one name on two days, a live stream, and a file a killed run never
    finished (detections, no recording row)."""
    live = live_recording_id("mic", None)
    t = "2024-05-01T04:00:{:02d}+00:00"
    dets = [
        detection(0, recording_id=f"{DAY1}#aaaaaaaaaaaa", start_time_utc=t.format(0)),
        detection(0, recording_id=f"{DAY1}#aaaaaaaaaaaa", rank=1, probability=0.2, **ROBIN),
        detection(72000, recording_id=f"{DAY1}#aaaaaaaaaaaa", start_time_utc=t.format(1)),
        detection(0, recording_id=f"{DAY2}#bbbbbbbbbbbb", clock_trusted=True, **ROBIN),
        detection(0, recording_id=live),
        detection(0, recording_id="/card/2024-05-02/killed.WAV#cccccccccccc"),
    ]
    db = tmp_path / "rec07" / "detections.db"
    db.parent.mkdir()
    with DetectionStore(db) as s:
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections(dets)
        for rid, path in ((f"{DAY1}#aaaaaaaaaaaa", DAY1), (f"{DAY2}#bbbbbbbbbbbb", DAY2)):
            s.record_recording(recording(recording_id=rid, source_path=path))
        s.record_recording(recording(recording_id=live))  # a stream: its id is its path
        s.finish_run(RUN)
    return db


def test_each_file_gets_its_detections_in_its_own_folder(card, tmp_path):
    notes: list[str] = []
    w = write_selections(card, tmp_path / "t", say=notes.append)
    day1 = tmp_path / "t/2024-05-01/20240501_040000.AnimalCLAP.selection.table.txt"
    day2 = tmp_path / "t/2024-05-02/20240501_040000.AnimalCLAP.selection.table.txt"
    assert sorted(w.files) == [day1, day2] and w.detections == 4
    rows = _raven(day1)
    # every detection of the file, by window then rank, against the card itself
    with sqlite3.connect(card) as c:
        want = c.execute(
            "SELECT window_start_s, window_end_s, scientific_name, probability, rank, "
            "detection_id FROM detections WHERE recording_id = ? ORDER BY window_start_s, rank",
            (f"{DAY1}#aaaaaaaaaaaa",),
        ).fetchall()
    got = [
        (float(r["Begin Time (s)"]), float(r["End Time (s)"]), r["Label"],
         float(r["Probability"]), int(r["Rank"]), r["Detection ID"])
        for r in rows
    ]  # fmt: skip
    assert got == [(s, e, n, pytest.approx(p, abs=1e-4), k, i) for s, e, n, p, k, i in want]
    assert [r["Selection"] for r in rows] == ["1", "2", "3"]
    assert {(r["View"], r["Channel"], r["Low Freq (Hz)"], r["High Freq (Hz)"]) for r in rows} == {
        ("Spectrogram 1", "1", "0", "24000")
    }
    assert rows[0]["Begin Path"] == DAY1 and rows[2]["File Offset (s)"] == "1.500"
    assert rows[0]["Begin Time UTC"] == "2024-05-01T04:00:00.000+00:00"
    assert rows[1]["Begin Time UTC"] == ""  # undated: no time made up
    assert _raven(day2)[0]["Label"] == "Erithacus rubecula"
    # what has no file to open beside it is counted and said, not dropped silently
    assert (w.live, w.unfinished) == (1, 1)
    assert any("1 detections of live audio" in n for n in notes)
    assert any("never finished" in n for n in notes)


def test_filters_and_local_time_are_reports_own(card, tmp_path):
    w = write_selections(card, tmp_path / "p", min_probability=0.5, utc_offset_h=2)
    first = _raven(w.files[0])
    assert [r["Rank"] for r in first] == ["0", "0"]  # the robin at 0.2 is left out
    assert first[0]["Begin Time Local"] == "2024-05-01T06:00:00.000+02:00"
    robin = write_selections(card, tmp_path / "r", taxa=["Erithacus"])
    assert robin.detections == 2 and all(
        r["Label"] == "Erithacus rubecula" for f in robin.files for r in _raven(f)
    )
    trusted = write_selections(card, tmp_path / "c", trusted_clock_only=True)
    assert trusted.detections == 1 and "2024-05-02" in str(trusted.files[0])


def test_audacity_labels_are_start_end_label(card, tmp_path):
    w = write_selections(card, tmp_path / "a", "audacity")
    lines = w.files[0].read_text().splitlines()
    assert lines == [
        "0.000\t3.000\tTurdus merula 0.87",
        "0.000\t3.000\tErithacus rubecula 0.20",
        "1.500\t4.500\tTurdus merula 0.87",
    ]
    assert w.files[0].name == "20240501_040000.AnimalCLAP.labels.txt"


def test_several_cards_get_a_folder_each_and_a_second_run_is_refused(card, tmp_path, capsys):
    other = tmp_path / "rec08" / "detections.db"
    other.parent.mkdir()
    with DetectionStore(other) as s:
        s.start_run("run-b", "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections([detection(0, run_id="run-b", recording_id="/x/a.wav#dddddddddddd")])
        s.record_recording(
            recording(recording_id="/x/a.wav#dddddddddddd", source_path="/x/a.wav", run_id="run-b")
        )
        s.finish_run("run-b")
    out = tmp_path / "both"
    assert main(["report", "raven", "--db", str(card), str(other), "--out", str(out)]) == 0
    assert "5 detections of 3 recordings" in capsys.readouterr().err
    assert (out / "rec08" / "a.AnimalCLAP.selection.table.txt").is_file()
    assert (out / "rec07" / "2024-05-01").is_dir()
    # the same folder again: refused in one line, nothing written over
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*.txt"))
    assert main(["report", "raven", "--db", str(card), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds selection tables" in err
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*.txt")) == before


def test_two_files_once_at_one_path_do_not_overwrite_each_other(tmp_path):
    db = tmp_path / "d.db"
    with DetectionStore(db) as s:
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        for digest, taxon in (("aaaaaaaaaaaa", "eurbla"), ("bbbbbbbbbbbb", "eurrob1")):
            rid = f"/mnt/sd/x.wav#{digest}"
            s.add_detections([detection(0, taxon=taxon, recording_id=rid)])
            s.record_recording(recording(recording_id=rid, source_path="/mnt/sd/x.wav"))
        s.finish_run(RUN)
    w = write_selections(db, tmp_path / "t")
    assert sorted(p.name for p in w.files) == [
        "x.AnimalCLAP.selection.table.txt",
        "x.bbbbbbbbbbbb.AnimalCLAP.selection.table.txt",
    ]
    assert {_raven(p)[0]["Taxon"] for p in w.files} == {"eurbla", "eurrob1"}


def test_bad_requests_are_one_line_errors(card, tmp_path, capsys):
    (tmp_path / "f.txt").write_text("")
    for args, says in (
        (["raven", "--db", str(card)], "give --out FOLDER"),
        (["raven", "--db", str(card), "--out", str(tmp_path / "f.txt")], "is a file"),
        (["audacity", "--db", str(card), "--out", str(tmp_path / "o"), "--utc-offset", "2"],
         "Audacity labels hold only offsets"),
        (["raven", "--db", str(card), "--out", str(tmp_path / "o"), "--top", "3"], "--top"),
    ):  # fmt: skip
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err, err
    with pytest.raises(ReportError, match="choose one of raven, audacity"):
        write_selections(card, tmp_path / "x", "praat")


def test_the_real_pipeline_gives_a_table_per_file(tiny_bundle, realaudio, tmp_path, capsys):
    audio = tmp_path / "in"
    audio.mkdir()
    for f in sorted(realaudio.glob("*bird*.ogg"))[:3]:
        (audio / f.name).symlink_to(f)
    db = tmp_path / "d.db"
    cfg = tmp_path / "edge.yaml"  # random weights: near-uniform probabilities (~1/24)
    cfg.write_text("scoring:\n  threshold: 0.01\n")
    run = ["run", "--source", str(audio), "--bundle", str(tiny_bundle), "--db", str(db)]
    run += ["--config", str(cfg)]
    assert main(run) == 0
    assert main(["report", "raven", "--db", str(db), "--out", str(tmp_path / "t")]) == 0
    with sqlite3.connect(db) as c:
        per_file = dict(
            c.execute(
                "SELECT r.source_path, count(*) FROM detections d JOIN recordings r "
                "USING (recording_id) GROUP BY r.source_path"
            ).fetchall()
        )
    tables = {
        str(audio / p.name.replace(".AnimalCLAP.selection.table.txt", ".ogg")): len(_raven(p))
        for p in (tmp_path / "t").iterdir()
    }
    assert tables == per_file and sum(tables.values()) > 0


def test_a_time_zone_gives_each_selection_the_offset_of_its_own_instant(tmp_path):
    """Raven's Begin Time Local took fixed hours: the hour 02:00-03:00 that Berlin's
    clocks showed twice on 25 October 2026 (first in summer time, then in winter
    time) read as two different hours of one offset."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    path = "/card/20261025_020000.WAV"
    times = [f"2026-10-25T{t}:00+00:00" for t in ("00:15", "00:45", "01:15", "01:45", "02:30")]
    dets = [
        detection(i * 72000, recording_id=f"{path}#dddddddddddd", start_time_utc=t)
        for i, t in enumerate(times)
    ]
    db = tmp_path / "autumn.db"
    with DetectionStore(db) as s:
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections(dets)
        s.record_recording(recording(recording_id=f"{path}#dddddddddddd", source_path=path))
        s.finish_run(RUN)
    w = write_selections(db, tmp_path / "t", utc_offset_h="Europe/Berlin")
    rows = _raven(w.files[0])
    berlin = ZoneInfo("Europe/Berlin")
    assert [r["Begin Time Local"] for r in rows] == [
        datetime.fromisoformat(t).astimezone(berlin).isoformat(timespec="milliseconds")
        for t in times
    ]
    assert [r["Begin Time Local"][11:] for r in rows] == [
        "02:15:00.000+02:00",
        "02:45:00.000+02:00",
        "02:15:00.000+01:00",
        "02:45:00.000+01:00",
        "03:30:00.000+01:00",
    ]
    with pytest.raises(ReportError, match=r"--utc-offset 'Europe/Berln'.*Europe/Berlin\?"):
        write_selections(db, tmp_path / "u", utc_offset_h="Europe/Berln")
    with pytest.raises(ReportError, match="Audacity labels hold only offsets"):
        write_selections(db, tmp_path / "v", "audacity", utc_offset_h="Europe/Berlin")


def test_a_card_of_live_audio_alone_names_no_folder_it_did_not_make(tmp_path, capsys):
    """Only live audio: no table, no folder, and the line said "-> out/" all the same
    (a docs audit)."""
    db = tmp_path / "live.db"
    with DetectionStore(db) as s:
        s.start_run("run-l", "bundle-0001", "0123456789abcdef", "mic", "0.1.0")
        s.add_detections([detection(0, run_id="run-l", recording_id="stdin@x#1")])
        s.finish_run("run-l")
    out = tmp_path / "tables"
    assert main(["report", "raven", "--db", str(db), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"no table written, {out}/ not made" in err and f"-> {out}/" not in err
    assert not out.exists()
