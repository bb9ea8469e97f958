"""A damaged database is moved aside, rebuilt from the backup, and its readable rows kept."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from animalclap_edge.health import backup_path_for
from animalclap_edge.records import Detection, RecordingResult
from animalclap_edge.recovery import check_database, open_store
from animalclap_edge.store import DetectionStore, StoreError

from .factories import BUNDLE, RUN, detection

PAGE = 4096


def _det(i: int) -> Detection:  # rows with a long traits field: many pages to damage
    return detection(
        i,
        recording_id="rec.wav",
        window_start_s=i * 1.5,
        window_end_s=i * 1.5 + 3,
        rank=1,
        score=0.3,
        probability=0.9,
        traits_json='{"activity_pattern": "diurnal", "note": "' + "x" * 300 + '"}',
        created_utc="2026-01-01T00:00:00+00:00",
    )


def _ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as c:
        return {r[0] for r in c.execute("SELECT detection_id FROM detections")}


def _fill(db: Path, lo: int, hi: int) -> None:
    with DetectionStore(db) as s:
        if lo == 0:
            s.start_run(RUN, BUNDLE, "0123456789abcdef", "test", "0.1.0")
        s.add_detections([_det(i) for i in range(lo, hi)])


def _smash(db: Path, first_page: int, pages: int) -> None:
    with open(db, "r+b") as f:
        f.seek(first_page * PAGE)
        f.write(b"\xa5" * (pages * PAGE))


def _detection_pages(db: Path) -> list[int]:
    """Pages of the detections table's rows (the only rows holding the common name), so
    that a test damages detections whatever the schema's page layout."""
    data = db.read_bytes()
    return [
        i
        for i in range(len(data) // PAGE)
        if b"Eurasian Blackbird" in data[i * PAGE : (i + 1) * PAGE]
    ]


def test_a_healthy_database_is_opened_as_it_is(tmp_path):
    db = tmp_path / "d.db"
    _fill(db, 0, 20)
    store, recovery = open_store(db, tmp_path / "none.db")
    with store:
        assert recovery is None and len(store.detections()) == 20 and store.health() == []


def test_damaged_pages_restore_the_backup_and_salvage_the_rest(tmp_path):
    db, backup = tmp_path / "d.db", tmp_path / "d.backup.db"
    _fill(db, 0, 300)
    with DetectionStore(db) as s:
        s.backup(backup)
    _fill(db, 300, 600)  # after the backup: only the damaged file has these
    before = _ids(db)
    _smash(db, first_page=40, pages=6)
    problem = check_database(db)
    assert problem != "ok" and "\n" not in problem  # quick_check's items hold newlines

    store, recovery = open_store(db, backup)
    with store:
        assert recovery is not None and recovery.restored_from == str(backup)
        assert store.integrity_check() == "ok"
        after = {d.detection_id for d in store.detections()}
        (event,) = store.health()
        assert event["kind"] == "store_recovered"
        # every detection has its message queued: nothing is stranded without an outbox row
        assert len(store.pending_outbox(10_000)) == len(after)
    assert Path(recovery.moved_to).exists() and recovery.moved_to.startswith(str(db))
    assert after <= before  # nothing invented
    assert {_det(i).detection_id for i in range(300)} <= after  # the backup's rows
    # most of the 300 newer rows live in undamaged pages and were salvaged
    assert len(after) > 300 + 200, (len(after), recovery.summary())


def test_a_recording_that_lost_detections_is_processed_again_not_passed_over(tmp_path):
    """Salvage kept the recording's "ok" row but not all its detections, so every later
    run passed the file over as done and the lost detections never came back (found
    in a field walkthrough)."""
    db = tmp_path / "d.db"
    _fill(db, 0, 400)
    with DetectionStore(db) as s:
        for rec, n in (("rec.wav", 400), ("quiet.wav", 0)):
            s.record_recording(
                RecordingResult(
                    rec,
                    RUN,
                    f"/card/{rec}",
                    "ok",
                    None,
                    600.0,
                    400,
                    n,
                    None,
                    False,
                    "",
                    "2026-01-01T00:00:00+00:00",
                )
            )
        assert s.recording_done("rec.wav", BUNDLE, "0123456789abcdef")
    _smash(db, first_page=30, pages=4)
    store, recovery = open_store(db, None)
    with store:
        kept = len(store.detections())
        assert 0 < kept < 400
        assert not store.recording_done("rec.wav", BUNDLE, "0123456789abcdef")
        assert store.recording_done("quiet.wav", BUNDLE, "0123456789abcdef")  # lost nothing
    with sqlite3.connect(db) as c:
        sql = "SELECT reason FROM recordings WHERE recording_id = 'rec.wav'"
        (reason,) = c.execute(sql).fetchone()
    assert reason == (
        f"detections lost when the damaged database was recovered ({kept} of 400 came "
        "back): processed again by the next run"
    )
    assert recovery.to_redo == 1 and "1 recording(s) lost detections" in recovery.summary()


def test_detections_retention_deleted_are_no_loss_to_redo(tmp_path):
    """Retention deletes old detections on purpose: a recovery whose rows all read back
    must not send those recordings round again (found in review)."""
    from animalclap_edge.recovery import recover

    db = tmp_path / "d.db"
    _fill(db, 0, 5)
    with DetectionStore(db) as s:
        s.record_recording(
            RecordingResult("rec.wav", RUN, "/card/rec.wav", "ok", None, 60.0, 20, 5, None,
                            False, "", "2026-01-01T00:00:00+00:00")
        )  # fmt: skip
        assert s.delete_expired("2099-01-01", undelivered_too=True)[0] == 5
    rec = recover(db, None, "quick_check said so")
    assert rec.to_redo == 0 and not rec.unreadable
    with DetectionStore(db) as s:
        assert s.recording_done("rec.wav", BUNDLE, "0123456789abcdef")


def test_a_file_that_is_not_a_database_any_more_starts_from_the_backup(tmp_path):
    db, backup = tmp_path / "d.db", tmp_path / "d.backup.db"
    _fill(db, 0, 50)
    with DetectionStore(db) as s:
        s.backup(backup)
    _smash(db, first_page=0, pages=1)  # the header: SQLite no longer recognises the file
    assert "not a database" in check_database(db)
    store, recovery = open_store(db, backup)
    with store:
        assert len(store.detections()) == 50
    assert recovery.salvaged == {"outbox requeued": 0} and "*" in recovery.unreadable


def test_without_a_backup_the_readable_rows_are_still_kept(tmp_path):
    db = tmp_path / "d.db"
    _fill(db, 0, 400)
    pages = _detection_pages(db)
    _smash(db, first_page=pages[len(pages) // 2], pages=2)
    store, recovery = open_store(db, None)
    with store:
        n = len(store.detections())
        assert store.integrity_check() == "ok"
        assert store.backlog() == n  # each message is its detection's row: none lost, none orphaned
    assert recovery.restored_from is None and 0 < n < 400
    assert "rebuilt from empty" in recovery.summary()
    assert recovery.dropped_messages == 0


def test_an_old_cards_outbox_loses_the_messages_of_unreadable_detections(tmp_path):
    """A card from before schema 9 keeps detections' messages in `outbox`: a message
    whose detection was lost cannot stay, it would point at nothing."""
    from .factories import insert_record, released_database

    db = tmp_path / "d.db"
    c = released_database(db, 8)
    c.execute(f"INSERT INTO runs (run_id, started_utc, bundle_id, config_hash, source, host, "
              f"software_version) VALUES ('{RUN}', 't', '{BUNDLE}', 'c', 'src', 'h', '0.1')")  # fmt: skip
    for i in range(400):
        insert_record(c, "detections", _det(i))
        c.execute("INSERT INTO outbox (detection_id, payload_json, created_utc) VALUES (?, '', 't')",
                  (_det(i).detection_id,))  # fmt: skip
    c.commit()
    c.close()
    pages = _detection_pages(db)
    _smash(db, first_page=pages[len(pages) // 2], pages=2)
    store, recovery = open_store(db, None)
    with store:
        n = len(store.detections())
        assert store.integrity_check() == "ok" and 0 < n < 400
        assert store.backlog() == n  # one message per detection, none pointing at nothing
    assert recovery.dropped_messages > 0
    kept = n - recovery.salvaged["outbox requeued"]
    assert recovery.dropped_messages == recovery.salvaged["outbox"] - kept


def test_run_on_a_damaged_card_warns_recovers_and_goes_on(tiny_bundle, realaudio, tmp_path, capsys):
    """What a field team sees: one WARNING line, the backup's rows kept, new files logged."""
    from animalclap_edge.cli import main
    from animalclap_edge.health import backup_path_for

    db = tmp_path / "detections.db"
    _fill(db, 0, 50)
    with DetectionStore(db) as s:
        s.backup(backup_path_for(db))
    _smash(db, first_page=0, pages=1)
    card = tmp_path / "card"
    card.mkdir()
    clip = next(p for p in sorted(realaudio.glob("*.wav")) if "srkw" in p.name)
    (card / clip.name).write_bytes(clip.read_bytes())
    run = ["run", "--bundle", str(tiny_bundle), "--source", str(card), "--db", str(db), "--quiet"]
    assert main(run) == 0
    warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("WARNING: ")]
    assert len(warnings) == 1 and "database damaged" in warnings[0]
    assert f"rebuilt from backup {backup_path_for(db)}" in warnings[0]
    with DetectionStore(db) as s:
        assert {d.detection_id for d in s.detections()} >= {_det(i).detection_id for i in range(50)}
        assert [r.source_path for r in s.recordings()] == [str(card / clip.name)]
        assert [h["kind"] for h in s.health()][:1] == ["store_recovered"]


def _read_only_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write in: chmod for a user, /proc/sys (read-only in
    containers) for root, who writes through permissions."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        return ro
    if os.path.isdir("/proc/sys") and not os.access("/proc/sys", os.W_OK):
        return Path("/proc/sys")
    pytest.skip("no read-only folder for root here")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_what_is_not_a_database_is_refused_and_left_as_it_is(realaudio, tmp_path):
    """`--db` given a folder or a recording by mistake: named, never moved aside as
    'damaged' (which renamed the user's folder before)."""
    media = tmp_path / "media"
    media.mkdir()
    wav = media / "call.wav"
    wav.write_bytes(next(iter(sorted(realaudio.glob("*.wav")))).read_bytes())
    before = _tree(tmp_path)
    with pytest.raises(StoreError, match="is a folder; the database must be a file"):
        open_store(media, backup_path_for(media))
    with pytest.raises(StoreError, match="is not a SQLite database and has no backup"):
        open_store(wav, backup_path_for(wav))
    assert _tree(tmp_path) == before  # nothing renamed, nothing created
    # with a parent that is a file, opening fails in one line too
    with pytest.raises(StoreError, match="cannot open the detection database"):
        open_store(wav / "d.db")


def test_a_read_only_place_is_refused_before_anything_moves(tmp_path):
    ro = _read_only_dir(tmp_path)
    with pytest.raises(StoreError, match=r"cannot write in .* \(read-only card or no permission\)"):
        open_store(ro / "detections.db")
    if os.geteuid() != 0:  # a good database on a write-protected card is not 'damaged'
        card = tmp_path / "card"
        card.mkdir()
        _fill(card / "d.db", 0, 5)
        before = _tree(card)
        card.chmod(0o500)
        try:
            with pytest.raises(StoreError, match="cannot write in"):
                open_store(card / "d.db", backup_path_for(card / "d.db"))
        finally:
            card.chmod(0o700)
        assert _tree(card) == before


def test_run_names_a_wrong_db_in_one_line(tiny_bundle, realaudio, tmp_path, capsys):
    from animalclap_edge.cli import main

    clip = next(iter(sorted(realaudio.glob("*.wav"))))
    run = ["run", "--bundle", str(tiny_bundle), "--source", str(clip), "--quiet", "--db"]
    assert main([*run, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder; the database must be a file" in err.strip().splitlines()[-1]
    assert "Traceback" not in err and err.count("is a folder") == 1
    assert not list(tmp_path.glob("*.corrupt-*"))
