"""`animalclap-edge report`: a card's database as CSV, read without changing it."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from animalclap_edge.cli import main
from animalclap_edge.report import ReportError, write_report
from animalclap_edge.store import RUN_STOPPED, DetectionStore

from .factories import RUN, detection

TRAITS = {
    "activity": {"value": "diurnal", "p": 0.9},
    "habitat": {"values": ["forest", "wetland"], "p": {"forest": 0.8, "wetland": 0.6}},
}


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _report(db: Path, what: str, **kw) -> list[dict[str, str]]:
    out = io.StringIO()
    n = write_report(db, what, out, **kw)
    rows = _csv(out.getvalue())
    assert n == len(rows)
    return rows


@pytest.fixture
def card(tmp_path: Path) -> Path:
    """Two days of a recorder: blackbirds on both, a robin and an undated window."""
    db = tmp_path / "card" / "detections.db"
    may1, may2 = "2024-05-01T04:0{}:00+00:00", "2024-05-02T05:0{}:00+00:00"
    dets = [
        detection(0, start_time_utc=may1.format(0), clock_trusted=True, probability=0.9),
        detection(72000, start_time_utc=may1.format(1), clock_trusted=True, probability=0.7),
        detection(0, recording_id="b.flac", start_time_utc=may2.format(0), probability=0.5),
        detection(
            72000,
            recording_id="b.flac",
            taxon="eurrob1",
            scientific_name="Erithacus rubecula",
            common_name="European Robin",
            start_time_utc=may2.format(1),
            clock_trusted=True,
            probability=0.95,
            traits_json=json.dumps(TRAITS),
        ),
        detection(0, recording_id="stdin", start_time_utc=None, probability=0.6),
    ]
    with DetectionStore(db) as s:
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections(dets)
    return db


@pytest.fixture
def stopped_card(card: Path) -> Path:
    """The card of a recorder that stopped: no -wal is missing from it."""
    with DetectionStore(card) as s:
        s.finish_run(RUN)
    return card


def test_detections_come_out_as_logged_with_each_trait_in_its_columns(card):
    rows = _report(card, "detections")
    with sqlite3.connect(card) as c:
        ids = [r[0] for r in c.execute("SELECT detection_id FROM detections ORDER BY rowid")]
    assert [r["detection_id"] for r in rows] == ids
    assert "traits_json" not in rows[0]
    robin = next(r for r in rows if r["taxon"] == "eurrob1")
    assert (robin["activity"], robin["activity_p"]) == ("diurnal", "0.9")
    assert (robin["habitat"], robin["habitat_p"]) == ("forest|wetland", "0.8|0.6")
    blackbird = rows[0]  # the factory's traits: activity only
    assert (blackbird["activity"], blackbird["habitat"], blackbird["habitat_p"]) == (
        "diurnal",
        "",
        "",
    )


def test_damaged_traits_are_named_not_dropped(card):
    with sqlite3.connect(card) as c:
        bad = c.execute("SELECT detection_id FROM detections LIMIT 1").fetchone()[0]
        c.execute(
            "UPDATE detections SET traits_json = '{\"activity\": 3' WHERE detection_id = ?", (bad,)
        )
    with pytest.raises(ReportError, match=f"detection {bad}: its traits_json is not what"):
        write_report(card, "detections", io.StringIO())
    assert len(_report(card, "summary")) == 4  # the summary does not read traits


def test_summary_counts_each_day_and_label_once(card):
    rows = _report(card, "summary")
    got = {(r["day_utc"], r["taxon"]): r for r in rows}
    assert set(got) == {
        ("2024-05-01", "eurbla"),
        ("2024-05-02", "eurbla"),
        ("2024-05-02", "eurrob1"),
        ("undated", "eurbla"),
    }
    may1 = got["2024-05-01", "eurbla"]
    assert (may1["detections"], may1["recordings"], may1["clock_trusted"]) == ("2", "1", "1")
    assert (may1["max_probability"], may1["mean_probability"]) == ("0.9", "0.8")
    assert (may1["first_utc"], may1["last_utc"]) == (
        "2024-05-01T04:00:00.000+00:00",
        "2024-05-01T04:01:00.000+00:00",
    )
    assert got["2024-05-02", "eurbla"]["clock_trusted"] == "0"  # one untrusted clock that day
    assert sum(int(r["detections"]) for r in rows) == 5


def test_filters_keep_the_detections_asked_for(card):
    rows = _report(card, "detections", min_probability=0.65)
    assert sorted(float(r["probability"]) for r in rows) == [0.7, 0.9, 0.95]
    rows = _report(card, "detections", taxa=["ERITHACUS RUBECULA"])
    assert [r["taxon"] for r in rows] == ["eurrob1"]
    rows = _report(card, "summary", taxa=["eurbla"], min_probability=0.8)
    assert [(r["day_utc"], r["detections"]) for r in rows] == [("2024-05-01", "1")]
    rows = _report(card, "detections", trusted_clock_only=True)
    assert sorted(float(r["probability"]) for r in rows) == [0.7, 0.9, 0.95]
    assert _report(card, "recordings", trusted_clock_only=True) == []  # none recorded here
    with pytest.raises(
        ReportError, match="use them with detections, events, summary, effort or activity"
    ):
        write_report(card, "recordings", io.StringIO(), taxa=["eurbla"])
    with pytest.raises(ReportError, match="between 0 and 1, got 70"):
        write_report(card, "detections", io.StringIO(), min_probability=70)


def test_a_taxon_that_matches_nothing_is_said_with_the_close_names(stopped_card, capsys):
    assert main(["report", "events", "--db", str(stopped_card), "--taxon", "Turdus merla"]) == 0
    err = capsys.readouterr().err
    assert "0 events rows" in err
    assert (
        "note: --taxon 'Turdus merla' matches nothing in this database; close names in it: "
        "Turdus merula (`report summary` lists its taxa)"
    ) in err
    # spaces from a copied cell are dropped; one name of two matching keeps its rows
    argv = ["report", "detections", "--db", str(stopped_card), "--taxon", " eurrob1 "]
    assert main([*argv, "--taxon", "Nothing here"]) == 0
    out, err = capsys.readouterr()
    assert len(_csv(out)) == 1 and "1 detections rows" in err
    assert err.count("note:") == 1 and "'Nothing here' matches nothing" in err
    assert "above the genus" not in err  # two words: not a higher taxon
    # a class of the card's species: the database knows no taxonomy above the genus
    assert main(["report", "summary", "--db", str(stopped_card), "--taxon", "Aves"]) == 0
    err = capsys.readouterr().err
    assert "so a family, order or class is known only by its back-off rows (unknown Aves)" in err
    with pytest.raises(ReportError, match="--taxon is empty"):
        write_report(stopped_card, "detections", io.StringIO(), taxa=["  "])


def _add_thrushes(db: Path) -> None:
    """A genus back-off (unknown Turdus), a second Turdus and a family back-off."""
    with DetectionStore(db) as s:
        s.add_detections(
            [
                detection(1, level="genus", taxon="Turdus", scientific_name="Turdus",
                          common_name="unknown Turdus"),
                detection(2, taxon="sonthr1", scientific_name="Turdus philomelos",
                          common_name="Song Thrush"),
                detection(3, level="family", taxon="Turdidae", scientific_name="Turdidae",
                          common_name="unknown Turdidae"),
            ]
        )  # fmt: skip


def test_a_genus_keeps_its_species_and_a_family_says_what_it_keeps(stopped_card):
    _add_thrushes(stopped_card)
    notes: list[str] = []
    rows = _report(stopped_card, "detections", taxa=["turdus"], say=notes.append)
    assert sorted({r["scientific_name"] for r in rows}) == [
        "Turdus",
        "Turdus merula",
        "Turdus philomelos",
    ]
    assert notes == [
        "--taxon turdus: a genus; its species in this database are kept with its back-off "
        "rows: Turdus merula, Turdus philomelos"
    ]
    notes.clear()
    rows = _report(stopped_card, "summary", taxa=["Turdidae"], say=notes.append)
    assert [r["taxon"] for r in rows] == ["Turdidae"]
    assert len(notes) == 1 and "a family; the database does not record which family" in notes[0]


def test_a_family_or_order_keeps_its_species_with_the_catalogue(stopped_card, tmp_path, capsys):
    """An ecologist asking for the thrushes (Turdidae) of a card got only the rows
    "unknown Turdidae": the card records no taxonomy. The catalogue places them."""
    _add_thrushes(stopped_card)
    cat = tmp_path / "catalogue.csv"
    cat.write_text(
        "id,scientific_name,common_name,class,order,family,genus\n"
        "eurbla,Turdus merula,Eurasian Blackbird,Aves,Passeriformes,Turdidae,Turdus\n"
        "sonthr1,Turdus philomelos,Song Thrush,Aves,Passeriformes,Turdidae,Turdus\n"
        "misthr1,Turdus viscivorus,Mistle Thrush,Aves,Passeriformes,Turdidae,Turdus\n"
        "eurrob1,Erithacus rubecula,European Robin,Aves,Passeriformes,Muscicapidae,Erithacus\n"
    )
    argv = ["report", "detections", "--db", str(stopped_card), "--catalogue", str(cat)]
    assert main([*argv, "--taxon", "turdidae"]) == 0
    out, err = capsys.readouterr()
    assert sorted({r["scientific_name"] for r in _csv(out)}) == [
        "Turdidae",
        "Turdus",
        "Turdus merula",
        "Turdus philomelos",
    ]
    assert (
        f"--taxon turdidae: a family in the catalogue of {cat}, whose 3 species under it "
        "are kept with the back-off rows of it and the taxa under it; 2 of them in this "
        "database: Turdus merula, Turdus philomelos"
    ) in err
    assert main([*argv, "--taxon", "Passeriformes"]) == 0
    out, err = capsys.readouterr()
    assert "Erithacus rubecula" in {r["scientific_name"] for r in _csv(out)}
    assert "an order in the catalogue" in err
    assert main([*argv, "--taxon", "Strigidae"]) == 0  # owls: not in this catalogue
    assert f"(the catalogue of {cat} has no taxon of that name either)" in capsys.readouterr().err
    # without the catalogue: the back-off rows alone, and the note says how to do better
    argv = ["report", "detections", "--db", str(stopped_card), "--taxon", "Turdidae"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert [r["scientific_name"] for r in _csv(out)] == ["Turdidae"]
    assert "give --catalogue (the bundle or its catalogue CSV)" in err
    assert main(["report", "detections", "--db", str(stopped_card), "--catalogue", str(cat)]) == 2
    assert "--catalogue places --taxon's names: give --taxon too" in capsys.readouterr().err
    assert main([*argv, "--catalogue", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--catalogue {tmp_path}: neither a catalogue .csv nor a bundle" in err
    assert err.count("\n") == 1


def test_a_folder_given_as_db_names_the_database_in_it(card, tmp_path):
    with pytest.raises(ReportError, match=re.escape(f"the database in it is {card}: give that")):
        write_report(card.parent, "summary", io.StringIO())
    with pytest.raises(ReportError, match=r"a recorder names it detections\.db"):
        write_report(tmp_path / "..", "summary", io.StringIO())


def test_an_old_card_is_read_as_it_is_and_left_unchanged(tmp_path):
    """A version-1 database (before events): read without the upgrade a writer makes."""
    from animalclap_edge import store as S

    db = tmp_path / "old.db"
    c = sqlite3.connect(db)
    for stmt in S._SCHEMA:
        c.execute(stmt)
    c.execute("PRAGMA user_version = 1")
    c.commit()
    c.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    assert _report(db, "detections") == []
    with pytest.raises(ReportError, match="no events table"):
        write_report(db, "events", io.StringIO())
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]


def test_a_card_the_recorder_closed_gets_no_wal_files_from_a_report(card):
    """Our databases are WAL: a plain read-only reader leaves -wal and -shm beside them
    (and cannot open them at all on a write-protected card). With no -wal there is
    nothing pending, so the report reads the file alone and adds nothing."""
    before = hashlib.sha256(card.read_bytes()).hexdigest()
    assert sorted(p.name for p in card.parent.iterdir()) == ["detections.db"]
    assert len(_report(card, "detections")) == 5
    assert sorted(p.name for p in card.parent.iterdir()) == ["detections.db"]
    assert hashlib.sha256(card.read_bytes()).hexdigest() == before


def test_a_live_recorders_rows_in_its_wal_are_reported(card):
    """While the recorder runs, new rows sit in the -wal: the report must read them."""
    with DetectionStore(card) as live:
        live.add_detections([detection(144000, start_time_utc="2024-05-03T04:00:00+00:00")])
        assert card.with_name("detections.db-wal").stat().st_size > 0
        assert len(_report(card, "detections")) == 6


def test_a_recording_given_as_db_is_named_not_a_database(realaudio, tmp_path):
    wav = next(iter(sorted(realaudio.glob("*.wav"))))
    with pytest.raises(ReportError, match=r"not a SQLite database \(a recording"):
        write_report(wav, "summary", io.StringIO())


def test_what_is_not_a_detection_database_is_named(tmp_path):
    with pytest.raises(ReportError, match="no database at"):
        write_report(tmp_path / "none.db", "summary", io.StringIO())
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE notes (x)")
    with pytest.raises(ReportError, match="not an AnimalCLAP detection database"):
        write_report(other, "summary", io.StringIO())
    (tmp_path / "text.db").write_text("not sqlite at all, just some text " * 100)
    with pytest.raises(ReportError, match=r"text\.db: not a SQLite database") as e:
        write_report(tmp_path / "text.db", "summary", io.StringIO())
    assert "\n" not in str(e.value)


def test_cli_reports_a_real_run_to_a_file(tiny_bundle, realaudio, tmp_path, capsys):
    audio = tmp_path / "card"
    audio.mkdir()
    long_enough = [p for p in sorted(realaudio.glob("*.wav")) if 3 < sf.info(p).duration < 30]
    assert len(long_enough) >= 2
    for p in long_enough[:4]:
        shutil.copy(p, audio / p.name)
    n_rec = len(long_enough[:4])
    db = tmp_path / "det.db"
    cfg = tmp_path / "low.yaml"
    cfg.write_text("scoring:\n  threshold: 0.01\n")  # random weights: every window detects
    run = ["run", "--bundle", str(tiny_bundle), "--source", str(audio), "--db", str(db)]
    assert main([*run, "--config", str(cfg), "--quiet"]) == 0
    capsys.readouterr()
    with sqlite3.connect(db) as c:
        n_det, n_ev = (
            c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("detections", "events")
        )
    assert n_det > 0 and n_ev > 0
    for what, n in (("detections", n_det), ("events", n_ev), ("recordings", n_rec)):
        out = tmp_path / f"{what}.csv"
        assert main(["report", what, "--db", str(db), "--out", str(out)]) == 0
        assert len(_csv(out.read_text())) == n
        assert f"{n} {what} rows from {db} -> {out}" in capsys.readouterr().err
    # a detection's or event's row, not the uplink's state of its message (in the row
    # since schema 9)
    from dataclasses import fields

    from animalclap_edge.records import Event

    header = (tmp_path / "events.csv").read_text().splitlines()[0].split(",")
    assert [h for h in header if h not in ("device", "site")] == [f.name for f in fields(Event)]
    header = (tmp_path / "detections.csv").read_text().splitlines()[0].split(",")
    assert "detection_id" in header and not {"queued", "delivered_utc", "attempts"} & set(header)
    summary = tmp_path / "summary.csv"
    assert main(["report", "summary", "--db", str(db), "--out", str(summary)]) == 0
    assert sum(int(r["detections"]) for r in _csv(summary.read_text())) == n_det
    capsys.readouterr()
    # a failed report leaves no file behind, and says why in one line
    bad = tmp_path / "bad.csv"
    assert main(["report", "events", "--db", str(tmp_path / "x.db"), "--out", str(bad)]) == 2
    assert not bad.exists() and not (tmp_path / "bad.csv.part").exists()
    assert (
        capsys.readouterr().err.strip()
        == f"animalclap-edge: error: no database at {tmp_path / 'x.db'}"
    )
    # an --out in a folder not made yet is made (as for `report activity`); an --out
    # that cannot be written is named in one line
    nested = tmp_path / "season" / "2024" / "summary.csv"
    assert main(["report", "summary", "--db", str(db), "--out", str(nested)]) == 0
    assert _csv(nested.read_text()) == _csv(summary.read_text())
    capsys.readouterr()
    assert main(["report", "summary", "--db", str(db), "--out", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err.strip().endswith("is a folder; give a file name, e.g. report.csv")
    )
    blocked = summary / "x.csv"  # summary.csv is a file, not a folder
    assert main(["report", "summary", "--db", str(db), "--out", str(blocked)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"--out {blocked}: {summary} is a file, not a folder")
    )


def test_out_writes_into_a_named_pipe_and_through_a_symlink(card, tmp_path):
    """Renaming a finished .part over --out replaced a pipe (its reader got 0 bytes) or
    a symlink (the link became a file and its target kept the old report)."""
    import os
    import threading

    expected = io.StringIO()
    write_report(card, "summary", expected)
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main(["report", "summary", "--db", str(card), "--out", str(fifo)]) == 0
    reader.join(10)
    assert got == [expected.getvalue().encode()] and fifo.is_fifo()

    target = tmp_path / "season" / "summary-2024.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    assert main(["report", "summary", "--db", str(card), "--out", str(link)]) == 0
    assert link.is_symlink() and target.read_text() == expected.getvalue()
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary-2024.csv"]
    # a character device is written into as it is (/dev/stdout in a terminal: a pty)
    master, tty = os.openpty()
    try:
        os.set_blocking(master, False)
        assert main(["report", "summary", "--db", str(card), "--out", os.ttyname(tty)]) == 0
        assert os.read(master, 1 << 16).startswith(b"device,site,day_utc")
    finally:
        os.close(master)
        os.close(tty)


def _report_cli(*args: str, stdout, cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI in a process of its own, its stdout as given (a pipe or a file)."""
    return subprocess.run(
        [sys.executable, "-m", "animalclap_edge", "report", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_out_dev_stdout_writes_into_a_pipe_and_a_file_the_shell_opened(card, tmp_path):
    """/dev/stdout was resolved first: to pipe:[...] (`| wc -l`, refused as not a .csv)
    or to the file of `> o.txt` (refused) or `>> a.csv` (a .part renamed over it: the
    lines already there were lost). It is written into, whatever it points to."""
    expected = io.StringIO()
    write_report(card, "detections", expected)
    csv_bytes = expected.getvalue().encode()
    here = tmp_path / "empty"
    here.mkdir()

    piped = _report_cli(
        "detections", "--db", str(card), "--out", "/dev/stdout", stdout=subprocess.PIPE, cwd=here
    )
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout == csv_bytes
    assert piped.stderr.decode().strip().endswith("-> /dev/stdout")

    redirected = tmp_path / "o.txt"  # `> o.txt`: any name
    redirected.write_text("a longer report from before, cut by > as a shell cuts it\n" * 50)
    with open(redirected, "wb") as f:
        done = _report_cli(
            "detections", "--db", str(card), "--out", "/dev/stdout", stdout=f, cwd=here
        )
    assert done.returncode == 0, done.stderr.decode()
    assert redirected.read_bytes() == csv_bytes

    # `>> a.csv`, by each name of the descriptor and through a link to one
    link = tmp_path / "latest.csv"
    link.symlink_to("/proc/self/fd/1")
    appended = tmp_path / "a.csv"
    appended.write_bytes(b"kept 1\nkept 2\n")
    inode = appended.stat().st_ino
    for out in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", str(link)):
        with open(appended, "ab") as f:
            done = _report_cli("detections", "--db", str(card), "--out", out, stdout=f, cwd=here)
        assert done.returncode == 0, (out, done.stderr.decode())
    assert appended.read_bytes() == b"kept 1\nkept 2\n" + csv_bytes * 4
    assert appended.stat().st_ino == inode and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.csv", "card", "empty", "latest.csv", "o.txt"
    ]  # fmt: skip
    assert list(here.iterdir()) == []


def test_an_out_descriptor_that_cannot_be_written_is_said_before_reading(tmp_path, capsys):
    import os

    read_only = tmp_path / "data.csv"
    read_only.write_text("field data\n")
    fd = os.open(read_only, os.O_RDONLY)
    try:
        none = str(tmp_path / "none.db")  # not read: the --out is said first
        assert main(["report", "detections", "--db", none, "--out", f"/dev/fd/{fd}"]) == 2
        assert (
            capsys.readouterr()
            .err.strip()
            .endswith(f"--out /dev/fd/{fd}: descriptor {fd} is not open for writing")
        )
    finally:
        os.close(fd)
    assert read_only.read_text() == "field data\n"  # not replaced by a report


def test_an_out_the_report_cannot_be_is_refused_before_reading(card, tmp_path, capsys):
    xlsx = tmp_path / "summary.xlsx"
    assert main(["report", "summary", "--db", str(tmp_path / "none.db"), "--out", str(xlsx)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"animalclap-edge: error: --out {xlsx}: this report is written as .csv; "
        "name the file so, e.g. summary.csv"
    )
    assert not xlsx.exists()
    assert main(["report", "summary", "--db", str(card), "--out", str(tmp_path / "s.CSV")]) == 0


def test_times_come_out_in_one_format_a_parser_can_read(card):
    """The store logs `...:00+00:00` for a whole second and `...:01.500000+00:00`
    otherwise: one column with both made `pandas.to_datetime` raise."""
    from datetime import datetime

    with DetectionStore(card) as s:
        s.add_detections(
            [
                detection(1, start_time_utc="2024-05-03T04:00:01.500000+00:00"),
                detection(2, start_time_utc="2024-05-03T23:59:59.999900+00:00"),
            ]
        )
    fixed = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")
    for what in ("detections", "summary", "recordings"):
        rows = _report(card, what)
        for col in [c for c in (rows[0] if rows else {}) if c.endswith("_utc") and c != "day_utc"]:
            for r in rows:
                assert r[col] == "" or fixed.fullmatch(r[col]), (what, col, r[col])
                assert r[col] == "" or datetime.fromisoformat(r[col]).tzinfo is not None
    times = [r["start_time_utc"] for r in _report(card, "detections")]
    assert "2024-05-03T04:00:01.500+00:00" in times
    # truncated, not rounded: the last millisecond of a day stays in that day
    assert "2024-05-03T23:59:59.999+00:00" in times
    pd = pytest.importorskip("pandas")
    out = io.StringIO()
    write_report(card, "detections", out)
    df = pd.read_csv(io.StringIO(out.getvalue()))
    assert pd.to_datetime(df.start_time_utc).notna().sum() == len(times) - 1  # one undated


def test_a_time_the_runtime_does_not_write_is_named(card):
    with sqlite3.connect(card) as c:
        c.execute("UPDATE detections SET start_time_utc = '2024-05-01 04:00' WHERE rowid = 1")
    with pytest.raises(ReportError, match=r"start_time_utc '2024-05-01 04:00' is not an ISO"):
        write_report(card, "detections", io.StringIO())


def test_detection_columns_are_the_same_for_every_card_and_filter(card, tmp_path):
    """The columns came from the rows the filter kept: an empty card gave 17, a full
    one 61, and a filter dropped trait columns, so cards did not concatenate."""
    from animalclap_edge.contracts.traits import TraitSchema

    def header(db: Path, **kw) -> list[str]:
        out = io.StringIO()
        write_report(db, "detections", out, **kw)
        return out.getvalue().splitlines()[0].split(",")

    empty = tmp_path / "empty.db"
    with DetectionStore(empty):
        pass
    full = header(card)
    # the shipped schema's traits, and the card's own `activity` (the factory's)
    traits = sorted({t.name for t in TraitSchema.default().traits} | {"activity"})
    assert full[full.index("probability") + 1 : full.index("created_utc")] == [
        c for t in traits for c in (t, f"{t}_p")
    ]
    assert header(empty) == [c for c in full if c not in ("activity", "activity_p")]
    assert header(card, taxa=["eurbla"]) == full  # the robin's habitat is still a column
    assert header(card, min_probability=0.99) == full
    # a trait outside the shipped schema (a bundle of its own) gets its columns, in order
    with DetectionStore(card) as s:
        s.add_detections(
            [detection(9, traits_json=json.dumps({"wingbeat": {"value": "fast", "p": 0.7}}))]
        )
    assert {"wingbeat", "wingbeat_p"} <= set(header(card, taxa=["eurrob1"]))


def test_a_utc_offset_adds_local_times_and_counts_local_days(card, capsys):
    """--utc-offset was taken and ignored by every CSV report; the summary's `day`
    did not say it was the UTC day."""
    assert list(_report(card, "summary")[0])[:3] == ["device", "site", "day_utc"]
    rows = _report(card, "summary", utc_offset_h=-4.5)
    assert list(rows[0])[:3] == ["device", "site", "day_local"]
    got = {(r["day_local"], r["taxon"]): r["detections"] for r in rows}
    # 04:00 and 04:01 UTC on May 1 are 23:30 and 23:31 on April 30 at UTC-4.5
    assert got == {
        ("2024-04-30", "eurbla"): "2",
        ("2024-05-02", "eurbla"): "1",
        ("2024-05-02", "eurrob1"): "1",
        ("undated", "eurbla"): "1",
    }
    assert rows[0]["first_local"] == "2024-04-30T23:30:00.000-04:30"
    dets = _report(card, "detections", utc_offset_h=5.5)
    at = list(dets[0])
    assert at[at.index("start_time_utc") + 1] == "start_time_local"
    assert dets[0]["start_time_local"] == "2024-05-01T09:30:00.000+05:30"
    assert [d["start_time_local"] for d in dets if not d["start_time_utc"]] == [""]
    with pytest.raises(ReportError, match="between -14 and 14 hours, got 20"):
        write_report(card, "events", io.StringIO(), utc_offset_h=20)
    # --top only chooses what activity draws: a CSV report refuses it rather than ignore it
    assert main(["report", "summary", "--db", str(card), "--top", "3"]) == 2
    assert "--top chooses the labels `activity` draws" in capsys.readouterr().err
    assert main(["report", "events", "--db", str(card), "--utc-offset", "2"]) == 0
    assert "start_time_local" in capsys.readouterr().out.splitlines()[0]


def test_a_damaged_database_names_its_backup_and_the_salvage_step(card, tmp_path):
    """A damaged card said only 'cannot read the detections (database disk image is
    malformed)': not that a backup sits beside it, nor how to get the rest back."""
    with DetectionStore(card) as s:  # enough rows for pages past the schema's
        s.add_detections([detection(i * 72000, recording_id="c.flac") for i in range(400)])
    shutil.copy(card, card.with_name("detections.db.backup"))
    with open(card, "r+b") as f:
        f.seek(4096 * 3)
        f.write(b"\xa5" * 4096 * 6)
    with pytest.raises(ReportError) as e:
        write_report(card, "detections", io.StringIO())
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{card}: the database is damaged (")
    assert "report its online backup (of " in msg and f"--db {card}.backup;" in msg
    assert "run `animalclap-edge run --db COPY --source EMPTY_FOLDER`" in msg
    card.with_name("detections.db.backup").unlink()
    with pytest.raises(
        ReportError, match=r"it has no online backup beside it \(detections\.db\.backup\)"
    ):
        write_report(card, "detections", io.StringIO())


def test_a_config_relative_database_is_read_as_run_reads_it(card, tmp_path, monkeypatch, capsys):
    """`run` takes a relative storage.database from the current folder (the service's
    WorkingDirectory); report does the same, and a miss names the rule and the file
    beside the config instead of a bare 'no database at detections.db'."""
    cfg = card.parent / "edge.yaml"
    cfg.write_text("storage:\n  database: detections.db\n")
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["report", "summary", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"animalclap-edge: error: no database at detections.db (storage.database of {cfg}; "
        f"a relative path is taken from the current folder {elsewhere}, as `run` takes it): "
        f"there is one beside the config: give --db {card}"
    )
    monkeypatch.chdir(card.parent)
    assert main(["report", "summary", "--config", str(cfg)]) == 0


def test_runs_say_which_never_finished_and_what_each_logged(card, capsys):
    """A run killed by a power cut has no finished time: the card's only trace of an
    outage until `runs` shows it, with how much audio and how many detections it had."""
    from .factories import recording

    with DetectionStore(card) as s:
        s.record_recording(recording(duration_s=120.0))
        s.start_run("later", "bundle-0001", "0123456789abcdef", "mic:usb", "0.1.0")
        s.finish_run("later")
    rows = _report(card, "runs", utc_offset_h=2)
    assert [r["run_id"] for r in rows] == [RUN, "later"]
    killed, finished = rows
    assert killed["state"].startswith("not finished") and killed["finished_utc"] == ""
    assert (killed["recordings"], killed["audio_s"], killed["detections"]) == ("1", "120.0", "5")
    assert finished["state"] == "finished" and finished["detections"] == "0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+02:00", killed["started_local"])
    with pytest.raises(ReportError, match="--min-probability and --taxon select detections"):
        _report(card, "runs", min_probability=0.5)
    with pytest.raises(ReportError, match="`runs` rows are timed by the recorder's own clock"):
        _report(card, "runs", trusted_clock_only=True)


def test_runs_say_how_each_ended_and_read_a_card_from_before_it_was_logged(card):
    with DetectionStore(card) as s:
        s.start_run("stopped", "bundle-0001", "0123456789abcdef", "mic:usb", "0.1.0")
        s.finish_run("stopped", RUN_STOPPED)
    rows = _report(card, "runs")
    assert rows[-1]["state"] == RUN_STOPPED == rows[-1]["end_reason"]
    with sqlite3.connect(card) as c:  # as a recorder before schema 7 left it
        c.execute("ALTER TABLE runs DROP COLUMN end_reason")
        c.execute("PRAGMA user_version = 6")
    killed, old = _report(card, "runs")
    assert killed["state"].startswith("not finished")
    assert old["state"] == "ended; how was not logged before 2026-11-27"


def test_health_comes_out_as_logged_in_order(card):
    with DetectionStore(card) as s:
        s.add_health("source_lost", "mic:usb", {"error": "device disconnected"})
        s.add_health("source_reopened", "mic:usb", {"after_s": 2.5})
    rows = _report(card, "health")
    assert [r["kind"] for r in rows] == ["source_lost", "source_reopened"]
    assert json.loads(rows[0]["detail_json"]) == {"error": "device disconnected"}
    assert main(["report", "health", "--db", str(card), "--taxon", "x"]) == 2


def test_effort_puts_the_hours_recorded_beside_each_days_detections(card):
    """Detections per hour of audio: a day with one hour recorded and a day with twenty
    are not comparable by their counts."""
    from .factories import recording

    with DetectionStore(card) as s:
        s.record_recording(recording(start_time_utc="2024-05-01T04:00:00+00:00", duration_s=1800))
        s.record_recording(
            recording(
                recording_id="b.flac", start_time_utc="2024-05-02T05:00:00+00:00", duration_s=7200
            )
        )
        s.record_recording(recording("skipped", recording_id="x.txt", duration_s=0.0))
        # a day later: 1.3 s, whose hours read 0.0004 at 4 places (its rate not had back)
        s.record_recording(
            recording(
                recording_id="c.flac", start_time_utc="2024-05-04T05:00:00+00:00", duration_s=1.3
            )
        )
    rows = _report(card, "effort")
    assert [(r["day_utc"], r["recordings"], r["audio_h"], r["detections"]) for r in rows] == [
        ("2024-05-01", "1", "0.5", "2"),
        ("2024-05-02", "1", "2.0", "2"),
        ("2024-05-03", "0", "0.0", "0"),  # not recorded: a row of no audio, not a gap
        ("2024-05-04", "1", "0.000361", "0"),
        ("undated", "0", "0.0", "1"),  # stdin's window: no audio row, so no rate
    ]
    assert [r["detections_per_hour"] for r in rows] == ["4.0", "1.0", "", "0.0", ""]
    robins = _report(card, "effort", taxa=["Erithacus rubecula"])
    assert [r["detections"] for r in robins] == ["0", "1", "0", "0"]  # the audio stays


def _recorder(db: Path, name: str | None, site: str, taxa: tuple[str, ...]) -> Path:
    run = hashlib.sha1(str(db).encode()).hexdigest()  # each card its own run, as uuids are
    with DetectionStore(db) as s:
        s.start_run(run, "bundle-0001", "0123456789abcdef", "test", "0.1.0", name, site)
        s.add_detections(
            [
                detection(
                    72000 * i, taxon=t, start_time_utc="2024-05-01T04:00:00+00:00", run_id=run
                )
                for i, t in enumerate(taxa)
            ]
        )
    return db


def test_the_cards_of_several_recorders_make_one_table_by_device_and_site(tmp_path, capsys):
    """Merging cards took a join of every table to runs.host, by hand, card by card; and
    recorders cloned from one image share a host name."""
    import socket

    a = _recorder(tmp_path / "a" / "detections.db", "rec-a", "plot-3", ("eurbla", "eurrob1"))
    b = _recorder(tmp_path / "b" / "detections.db", None, "plot-7", ("eurbla",))
    # a card of an older release (schema 7): its runs have neither column
    old = _recorder(tmp_path / "old" / "detections.db", "ignored", "", ("eurrob1",))
    with sqlite3.connect(old) as c:
        c.execute("ALTER TABLE runs DROP COLUMN device")
        c.execute("ALTER TABLE runs DROP COLUMN site")
        c.execute("PRAGMA user_version = 7")
    host = socket.gethostname()
    dets = _report([a, b, old], "detections")
    assert [(r["device"], r["site"], r["taxon"]) for r in dets] == [
        ("rec-a", "plot-3", "eurbla"),
        ("rec-a", "plot-3", "eurrob1"),
        (host, "plot-7", "eurbla"),
        (host, "", "eurrob1"),
    ]
    assert list(dets[0])[:3] == ["device", "site", "detection_id"]
    summary = _report([a, b], "summary")
    assert {(r["device"], r["taxon"], r["detections"]) for r in summary} == {
        ("rec-a", "eurbla", "1"),
        ("rec-a", "eurrob1", "1"),
        (host, "eurbla", "1"),
    }
    runs = _report([old, a], "runs")
    assert [(r["device"], r["site"]) for r in runs] == [(host, ""), ("rec-a", "plot-3")]
    assert list(runs[0]).count("device") == 1  # the runs table's own column is the one
    # the command line: --db once per card
    out = tmp_path / "all.csv"
    assert main(["report", "events", "--db", str(a), "--db", str(b), "--out", str(out)]) == 0
    assert "from 2 databases" in capsys.readouterr().err
    together = tmp_path / "together.csv"  # as a shell glob gives them: --db cards/*/...db
    assert main(["report", "events", "--db", str(a), str(b), "--out", str(together)]) == 0
    assert together.read_text() == out.read_text()
    with pytest.raises(ReportError, match=f"--db {a} is given twice"):
        write_report([a, a], "detections", io.StringIO())


def test_a_card_copied_without_its_wal_is_said_to_miss_rows(tmp_path, capsys):
    """A recorder cut off mid-run keeps its newest rows in detections.db-wal; a copy of
    detections.db alone read as a whole card, without a word."""
    card = tmp_path / "card" / "detections.db"
    copy = tmp_path / "laptop" / "detections.db"
    copy.parent.mkdir()
    with DetectionStore(card) as s:  # running for days: SQLite checkpoints as it goes
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections([detection(0)])
        with sqlite3.connect(card) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        s.add_detections([detection(72000)])  # the newest rows: in the -wal alone
        shutil.copy(card, copy)
        assert main(["report", "detections", "--db", str(card)]) == 0
        err = capsys.readouterr().err  # the -wal is there: read through
        assert "note:" not in err and "2 detections rows" in err
    assert main(["report", "detections", "--db", str(copy)]) == 0
    err = capsys.readouterr().err
    assert f"note: {copy}: its newest run did not finish" in err
    assert "copy detections.db-wal with it" in err and "1 detections rows" in err
    with DetectionStore(card) as s:  # the second run finished: nothing waits in a -wal
        s.finish_run(RUN)
    assert main(["report", "detections", "--db", str(card)]) == 0
    assert "note:" not in capsys.readouterr().err


def test_a_card_copied_without_its_wal_before_any_checkpoint_is_said_so(tmp_path, capsys):
    """A recorder cut off before its first checkpoint holds every table in its -wal: a
    copy of detections.db alone was called "not an AnimalCLAP detection database"."""
    card = tmp_path / "card" / "detections.db"
    copy = tmp_path / "laptop" / "detections.db"
    copy.parent.mkdir()
    with DetectionStore(card) as s:
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections([detection(0)])
        shutil.copy(card, copy)  # the power goes: detections.db is SQLite's header alone
    assert main(["report", "detections", "--db", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "holds no tables, and no detections.db-wal is beside it" in err
    assert "copy that file with it" in err


def test_one_card_given_twice_under_two_names_is_refused(tmp_path, capsys):
    """A card and its own detections.db.backup (a glob such as cards/*/detections.db*
    picks both up), or a copy of it: every row was counted twice."""
    a = _recorder(tmp_path / "a" / "detections.db", "rec-a", "plot-3", ("eurbla",))
    b = _recorder(tmp_path / "b" / "detections.db", "rec-b", "plot-7", ("eurbla",))
    with DetectionStore(a) as s:
        s.backup(tmp_path / "a" / "detections.db.backup")
    for what in ("effort", "detections"):
        argv = [
            "report",
            what,
            "--db",
            str(a),
            str(b),
            str(tmp_path / "a" / "detections.db.backup"),
        ]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"--db {a} and --db {a}.backup hold the same run" in err
        assert "one card given twice (a copy, or its .backup)" in err
    png = tmp_path / "season.png"
    assert main(["report", "activity", "--db", str(a), f"{a}.backup", "--out", str(png)]) == 2
    assert "hold the same run" in capsys.readouterr().err and not png.exists()


def test_many_cards_are_read_one_at_a_time(tmp_path):
    """Held open together until the header was known, a few hundred cards passed the
    limit of open files ("unable to open database file"); here 100 cards under 48."""
    cards = [
        _recorder(tmp_path / f"c{i:03d}" / "detections.db", f"rec-{i:03d}", "", ("eurbla",))
        for i in range(100)
    ]
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))\n"
        "from animalclap_edge.report import write_report\n"
        "n = write_report(sys.argv[2:], 'detections', open(sys.argv[1], 'w'))\n"
        "print(n)\n"
    )
    out = tmp_path / "all.csv"
    done = subprocess.run(
        [sys.executable, "-c", script, str(out), *map(str, cards)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "100"
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["device"] for r in rows] == [f"rec-{i:03d}" for i in range(100)]


def test_several_cards_spool_beside_a_report_file_not_in_tmpdir(tmp_path, monkeypatch):
    """The rows of several cards wait in a temporary as large as the report; in TMPDIR
    (a tmpfs of a few GB on many desktops) a season of cards filled it. Beside a report
    written to a file they take the disk that holds the report anyway."""
    import tempfile

    cards = [
        _recorder(tmp_path / f"c{i}" / "detections.db", f"rec-{i}", "", ("eurbla",))
        for i in range(3)
    ]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmpdir"))
    out = tmp_path / "reports" / "all.csv"
    out.parent.mkdir()
    with out.open("w", encoding="utf-8", newline="") as f:
        assert write_report(cards, "detections", f) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["all.csv"]  # nothing left over


def test_reports_say_what_retention_deleted(tmp_path, capsys):
    """After the age rule deleted a card's old detections, `effort` showed their day as
    audio with nothing heard, and no report said why (found in a deployment trial)."""
    from datetime import datetime, timedelta, timezone

    from animalclap_edge.records import utc_ms
    from animalclap_edge.retention import Retention

    from .factories import recording

    old = datetime.now(timezone.utc) - timedelta(days=40)
    db = tmp_path / "d.db"
    with DetectionStore(db) as s:
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections(
            [
                detection(k * 72000, created_utc=utc_ms(old), start_time_utc=utc_ms(old))
                for k in range(3)
            ]
        )
        s.record_recording(recording(start_time_utc=utc_ms(old)))
        assert main(["report", "effort", "--db", str(db)]) == 0
        assert "retention" not in capsys.readouterr().err  # nothing deleted yet: no note
        Retention(clips_dir=None, retention_days=30).maybe_apply(s, start=True)
        s.finish_run(RUN)
    for what in ("effort", "summary", "detections"):
        assert main(["report", what, "--db", str(db)]) == 0
        err = capsys.readouterr().err
        assert "storage.retention_days deleted 3 detections" in err, what
    assert main(["report", "runs", "--db", str(db)]) == 0  # not a report of detections
    assert "retention_days" not in capsys.readouterr().err


# Late October 2026 in Europe/Berlin: at 01:00 UTC on the 25th the clocks go from 03:00
# CEST (+02:00) back to 02:00 CET (+01:00), so 02:00-03:00 local comes twice.
AUTUMN = (
    "2026-10-22T04:30:00+00:00",  # 06:30 CEST: a dawn before the change
    "2026-10-24T21:30:00+00:00",  # 23:30 CEST on the 24th
    "2026-10-24T22:30:00+00:00",  # 00:30 CEST on the 25th (a fixed +1 says the 24th)
    "2026-10-25T00:15:00+00:00",  # 02:15 CEST: the first 02:00-03:00
    "2026-10-25T00:45:00+00:00",  # 02:45 CEST
    "2026-10-25T01:15:00+00:00",  # 02:15 CET: the second
    "2026-10-25T01:45:00+00:00",  # 02:45 CET
    "2026-10-25T02:30:00+00:00",  # 03:30 CET: the technician's, which +2 made 04:30
    "2026-10-25T22:30:00+00:00",  # 23:30 CET on the 25th (a fixed +2 says the 26th)
    "2026-10-25T23:30:00+00:00",  # 00:30 CET on the 26th
    "2026-10-28T04:30:00+00:00",  # 05:30 CET: the same dawn, an hour earlier by the clock
)


@pytest.fixture
def autumn(tmp_path: Path) -> Path:
    """A card whose detections span Berlin's change from summer time, and a recording
    of 48 hours from local midnight on the 25th (a day of 25 hours)."""
    from .factories import recording

    db = tmp_path / "autumn" / "detections.db"
    with DetectionStore(db) as s:
        s.start_run(RUN, "bundle-0001", "0123456789abcdef", "test", "0.1.0")
        s.add_detections(
            [
                detection(i * 72000, start_time_utc=t, clock_trusted=True)
                for i, t in enumerate(AUTUMN)
            ]
        )
        s.record_recording(
            recording(start_time_utc="2026-10-24T22:00:00+00:00", duration_s=48 * 3600.0)
        )
        s.finish_run(RUN)
    return db


def _berlin(utc: str):
    """The local time of `utc` in Europe/Berlin, by zoneinfo itself."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(utc).astimezone(ZoneInfo("Europe/Berlin"))


def test_a_time_zone_gives_each_row_the_offset_and_day_of_its_own_instant(autumn):
    """--utc-offset took fixed hours only: across a change to winter time, `+2` wrote
    02:30 UTC as 04:30+02:00 where Berlin's clocks said 03:30 CET, and counted the
    days by summer time all season."""
    from collections import Counter

    dets = _report(autumn, "detections", utc_offset_h="Europe/Berlin")
    assert [d["start_time_local"] for d in dets] == [
        _berlin(t).isoformat(timespec="milliseconds") for t in AUTUMN
    ]
    local = {d["start_time_utc"][:19]: d["start_time_local"] for d in dets}
    assert local["2026-10-25T02:30:00"] == "2026-10-25T03:30:00.000+01:00"
    # the hour that comes twice, each time with its own offset
    assert local["2026-10-25T00:15:00"] == "2026-10-25T02:15:00.000+02:00"
    assert local["2026-10-25T01:15:00"] == "2026-10-25T02:15:00.000+01:00"

    days = Counter(_berlin(t).date().isoformat() for t in AUTUMN)
    summary = _report(autumn, "summary", utc_offset_h="Europe/Berlin")
    assert {r["day_local"]: int(r["detections"]) for r in summary} == days
    oct25 = next(r for r in summary if r["day_local"] == "2026-10-25")
    assert (oct25["first_local"], oct25["last_local"]) == (
        "2026-10-25T00:30:00.000+02:00",
        "2026-10-25T23:30:00.000+01:00",
    )

    effort = {r["day_local"]: r for r in _report(autumn, "effort", utc_offset_h="Europe/Berlin")}
    assert {d: int(r["detections"]) for d, r in effort.items() if int(r["detections"])} == days
    # 48 hours from local midnight: all of the 25-hour day, then 23 of the 26th
    assert (float(effort["2026-10-25"]["audio_h"]), float(effort["2026-10-26"]["audio_h"])) == (
        25.0,
        23.0,
    )


def test_fixed_hours_still_give_one_offset_to_every_row(autumn):
    """Hours, as the command line gives them (text) or as numbers, keep their meaning:
    one offset for every row, the days SQLite's own '+N hours' gives."""
    want = _report(autumn, "detections", utc_offset_h=2)
    assert {d["start_time_local"][-6:] for d in want} == {"+02:00"}
    assert want[7]["start_time_local"] == "2026-10-25T04:30:00.000+02:00"
    for text in ("2", " 2 ", "+2", "2.0"):
        assert _report(autumn, "detections", utc_offset_h=text) == want, text
    for text, hours in (("-5", -5), ("5.5", 5.5)):
        got = _report(autumn, "summary", utc_offset_h=text)
        with sqlite3.connect(autumn) as c:
            sql = "SELECT strftime('%Y-%m-%d', start_time_utc, ?), count(*) FROM detections GROUP BY 1"
            days = dict(c.execute(sql, (f"{hours:+.4f} hours",)).fetchall())
        assert {r["day_local"]: int(r["detections"]) for r in got} == days
        assert got == _report(autumn, "summary", utc_offset_h=hours)
    with pytest.raises(ReportError, match="between -14 and 14 hours, got 20"):
        _report(autumn, "detections", utc_offset_h="20")


def test_the_command_line_takes_a_time_zone_name_and_names_a_wrong_one(autumn, capsys):
    assert main(["report", "detections", "--db", str(autumn), "--utc-offset", "Europe/Berlin"]) == 0
    rows = _csv(capsys.readouterr().out)
    assert rows[7]["start_time_local"] == "2026-10-25T03:30:00.000+01:00"
    assert rows[0]["start_time_local"] == "2026-10-22T06:30:00.000+02:00"
    assert main(["report", "summary", "--db", str(autumn), "--utc-offset", "-5"]) == 0
    assert _csv(capsys.readouterr().out)[0]["first_local"].endswith("-05:00")
    for what in ("detections", "summary", "effort"):
        assert main(["report", what, "--db", str(autumn), "--utc-offset", "Europe/Berln"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err == (
            "animalclap-edge: error: --utc-offset 'Europe/Berln': neither hours nor a time "
            "zone name known here: give hours such as 2, -5 or 5.5, or a time zone name such "
            "as Europe/Berlin; did you mean Europe/Berlin?\n"
        ), what
    out = autumn.parent / "tables"
    raven = ["report", "raven", "--db", str(autumn), "--out", str(out)]
    assert main([*raven, "--utc-offset", "Europe/Berlin"]) == 0
    text = (out / "dawn.AnimalCLAP.selection.table.txt").read_text()
    table = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    assert table[7]["Begin Time Local"] == "2026-10-25T03:30:00.000+01:00"
    for args in (raven, ["report", "activity", "--db", str(autumn), "--out", "a.png"]):
        assert main([*args, "--utc-offset", "Europe/Berln"]) == 2
        assert "error: --utc-offset 'Europe/Berln': neither hours" in capsys.readouterr().err
    with pytest.raises(ReportError, match=r"--utc-offset 'Mars/Olympus_Mons': neither hours"):
        write_report(autumn, "events", io.StringIO(), utc_offset_h="Mars/Olympus_Mons")
    with pytest.raises(ReportError, match=r"'berlin': .*did you mean Europe/Berlin\?"):
        write_report(autumn, "runs", io.StringIO(), utc_offset_h="berlin")
