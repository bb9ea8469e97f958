"""`animalclap-edge run` as a user runs it: every file accounted for, bad input named."""

import json
import os
import re
import shutil
import sqlite3
import tarfile

import numpy as np
import pytest
import soundfile as sf

from animalclap_edge.cli import main


def _rows(db, sql):
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def test_run_over_real_audio_accounts_for_every_file(tiny_bundle, realaudio, tmp_path, capsys):
    db = tmp_path / "det.db"
    # Random weights give near-uniform probabilities (~1/24): a low threshold makes
    # every window write detections, so the store/outbox/JSONL plumbing is exercised.
    cfg = tmp_path / "low.yaml"
    cfg.write_text("scoring:\n  threshold: 0.01\n")
    assert (
        main(
            [
                "run",
                "--bundle",
                str(tiny_bundle),
                "--source",
                str(realaudio),
                "--db",
                str(db),
                "--config",
                str(cfg),
                "--jsonl",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    files = sorted(p for p in realaudio.iterdir() if not p.name.startswith("."))
    audio = [p for p in files if p.suffix in (".wav", ".ogg")]
    recs = dict(_rows(db, "select source_path, status from recordings"))
    assert sorted(recs) == sorted(str(p) for p in audio)  # every audio file has a row
    # its manifest.csv and ATTRIBUTION.md are no recordings, but not hidden either
    assert f"{len(audio)} recordings: " in err
    assert "note: 2 files passed over as not audio (1 .csv, 1 .md): not counted as" in err
    for (path,) in _rows(db, "select source_path from recordings where status != 'ok'"):
        assert path in err  # and a one-line reason on stderr
    reasons = [r for (r,) in _rows(db, "select reason from recordings where status != 'ok'")]
    assert all(r and "\n" not in r for r in reasons)
    lines = [json.loads(x) for x in out.splitlines()]
    dets = [x for x in lines if x["type"] == "detection"]
    assert len(dets) == _rows(db, "select count(*) from detections")[0][0]
    n_events = _rows(db, "select count(*) from events")[0][0]
    assert f"{len(dets)} detections in {n_events} events -> {db}" in err and n_events > 0
    assert {x["path"]: x["status"] for x in lines if x["type"] == "recording"} == recs
    assert "NOTE: test bundle" in err
    n_ok = sum(s == "ok" for s in recs.values())
    assert n_ok > 150  # 201 real recordings; only sub-0.5 s clips are skipped
    # every detection carries the bundle id, the config hash, and its window's clock status
    assert _rows(
        db, "select count(distinct bundle_id), count(distinct config_hash) from detections"
    ) == [(1, 1)]
    # each is queued to be sent (its message is its row)
    queued = "select count(*) from detections where queued = 1 and delivered_utc is null"
    assert _rows(db, queued)[0][0] == len(dets) > n_ok


def test_bad_files_are_skipped_with_reasons_and_the_run_goes_on(
    tiny_bundle, tmp_path, capsys, monkeypatch
):
    d = tmp_path / "field"
    d.mkdir()
    t = np.arange(48000 * 4) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32)
    sf.write(d / "a_stereo.flac", np.stack([tone, tone], 1), 48000)
    sf.write(d / "b_8k.wav", tone[::6], 8000)
    t5 = np.arange(500000 * 4) / 500000
    sf.write(d / "c_500k.wav", (0.3 * np.sin(2 * np.pi * 3000 * t5)).astype(np.float32), 500000)
    sf.write(d / "d.mp3", tone, 48000, format="MP3")
    sf.write(d / "e.ogg", tone, 48000)
    nan = tone.copy()
    nan[1000:] = np.nan
    sf.write(d / "f_nan.wav", nan, 48000, subtype="FLOAT")
    (d / "g_empty.wav").write_bytes(b"")
    (d / "h_notes.wav").write_text("not audio")
    good = (d / "a_stereo.flac").read_bytes()
    (d / "i_truncated.flac").write_bytes(good[: len(good) // 2])
    db = tmp_path / "x.db"
    assert (
        main(["run", "--bundle", str(tiny_bundle), "--source", str(d), "--db", str(db), "--quiet"])
        == 0
    )
    recs = {
        p.rsplit("/", 1)[-1]: (s, r)
        for p, s, r in _rows(db, "select source_path, status, reason from recordings")
    }
    assert len(recs) == 9
    for name in ("a_stereo.flac", "b_8k.wav", "c_500k.wav", "d.mp3", "e.ogg"):
        assert recs[name][0] == "ok", (name, recs[name])
    assert recs["f_nan.wav"][0] in ("skipped", "partial") and "NaN" in recs["f_nan.wav"][1]
    assert recs["g_empty.wav"][0] == "skipped" and recs["h_notes.wav"][0] == "skipped"
    assert recs["i_truncated.flac"][0] in ("skipped", "partial")
    err = capsys.readouterr().err
    assert "9 recordings" in err
    # the 8 and 500 kHz files are analysed; their rows and stderr say what is not heard
    notes = dict(_rows(db, "select source_path, audio_note from recordings"))
    notes = {p.rsplit("/", 1)[-1]: n for p, n in notes.items()}
    assert "500000 Hz" in notes["c_500k.wav"] and "above 24000 Hz" in notes["c_500k.wav"]
    assert "holds nothing above 4000 Hz" in notes["b_8k.wav"]
    assert notes["a_stereo.flac"] == notes["e.ogg"] == ""
    assert [line for line in err.splitlines() if line.startswith("note:")] == [
        f"note: {d / name}: {notes[name]} (said once; every file's note is "
        "in recordings.audio_note)"
        for name in ("b_8k.wav", "c_500k.wav")
    ]
    # the same database again: the five finished files are passed over, the rest retried
    before = _rows(db, "select count(*) from detections")[0][0]
    args = ["run", "--bundle", str(tiny_bundle), "--source", str(d), "--db", str(db), "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "4 recordings" in err and "5 recording(s) already done" in err
    assert _rows(db, "select count(*) from detections")[0][0] == before
    # the same files named from elsewhere (relative here, absolute above) are the same
    # recordings: passed over, not logged twice
    with monkeypatch.context() as m:
        m.chdir(d)
        rel = ["run", "--bundle", str(tiny_bundle), "--source", ".", "--db", str(db), "--quiet"]
        assert main(rel) == 0
        assert "5 recording(s) already done" in capsys.readouterr().err
        assert main([*rel[:4], "e.ogg", *rel[5:]]) == 0
        assert "0 recordings" in capsys.readouterr().err
    assert _rows(db, "select count(*) from detections")[0][0] == before
    assert main([*args, "--redo"]) == 0
    assert "9 recordings" in capsys.readouterr().err
    # another config is another analysis: every file again, logged under its own hash
    cfg = tmp_path / "strict.yaml"
    cfg.write_text("scoring:\n  threshold: 0.3\n")
    assert main([*args, "--config", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "9 recordings" in err and "already done" not in err
    assert _rows(db, "select count(distinct config_hash) from runs")[0][0] == 2
    # the recorder's name, its output and its uplink are not the analysis: passed over
    named = tmp_path / "named.yaml"
    named.write_text(
        "scoring:\n  threshold: 0.3\ndevice:\n  name: rec-07\n  site: ridge\n"
        "output:\n  jsonl: true\nmessaging:\n  mqtt:\n    host: broker.lan\n"
    )
    assert main([*args, "--config", str(named)]) == 0
    err = capsys.readouterr().err
    # the five analysed are passed over; the four bad files are tried again, as always
    assert "recorder rec-07, site ridge" in err and "5 recording(s) already done" in err


def test_a_second_card_with_the_same_file_names_at_the_same_mount_is_not_passed_over(
    tiny_bundle, realaudio, tmp_path, capsys
):
    """Two AudioMoths name their files by time alone; their cards, mounted in turn at
    one path, hold different recordings under the same paths. The second card must be
    analysed and kept apart; the first card read again is still passed over."""
    import shutil

    ogg = sorted(realaudio.glob("*.ogg"))
    mount, db = tmp_path / "media" / "card", tmp_path / "det.db"
    cfg = tmp_path / "low.yaml"
    cfg.write_text("scoring:\n  threshold: 0.01\n")
    args = ["run", "--bundle", str(tiny_bundle), "--source", str(mount), "--db", str(db)]
    args += ["--config", str(cfg), "--quiet"]

    def insert(card: list) -> None:
        shutil.rmtree(mount, ignore_errors=True)
        mount.mkdir(parents=True)
        for i, src in enumerate(card):
            shutil.copy(src, mount / f"20240514_05{i:02d}00.ogg")

    insert(ogg[:2])
    assert main(args) == 0
    assert "2 recordings" in capsys.readouterr().err
    insert(ogg[2:4])  # card 2: the same names, other audio
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2 recordings" in err and "already done" not in err
    rows = _rows(db, "select recording_id, source_path, content_digest from recordings")
    assert len(rows) == 4 and len({d for _, _, d in rows}) == 4
    assert sorted(p for _, p, _ in rows) == sorted(2 * [str(mount / n) for n in os.listdir(mount)])
    assert {r for r, p, _ in rows if r != p} == {
        f"{p}#{d[:12]}" for r, p, d in rows if r != p
    } and len({r for r, _, _ in rows}) == 4
    per_rec = dict(_rows(db, "select recording_id, n_detections from recordings"))
    logged = dict(_rows(db, "select recording_id, count(*) from detections group by 1"))
    assert logged == {r: n for r, n in per_rec.items() if n}  # each card's own detections
    insert(ogg[:2])  # card 1 again: done already
    assert main(args) == 0
    assert "2 recording(s) already done" in capsys.readouterr().err


def test_a_rerun_with_other_settings_adds_only_new_labels_and_says_what_it_found_logged(
    tiny_bundle, realaudio, tmp_path, capsys
):
    """A detection is logged once, by the first run that found it. The second run's
    line counted every label it found as written "-> db" (found in a walkthrough)."""
    import shutil

    db, card = tmp_path / "d.db", tmp_path / "card"
    card.mkdir()
    for f in sorted(realaudio.glob("*.ogg"))[:3]:
        shutil.copy(f, card)
    base = ["run", "--bundle", str(tiny_bundle), "--db", str(db), "--quiet", "--source", str(card)]
    for threshold in ("0.05", "0.03"):
        cfg = tmp_path / f"t{threshold}.yaml"
        cfg.write_text(f"scoring:\n  threshold: {threshold}\n  top_k: 5\n")
        before = _rows(db, "select count(*) from detections")[0][0] if db.exists() else 0
        assert main([*base, "--config", str(cfg)]) == 0
        err = capsys.readouterr().err
        m = re.search(
            r"(\d+) detections in \d+ events -> \S+(?: \((\d+) of them already logged)?", err
        )
        found, again = int(m[1]), int(m[2] or 0)
        added = _rows(db, "select count(*) from detections")[0][0] - before
        assert found == added + again and found > 0
    assert again > 0 and added > 0  # the lower threshold: old labels, and new ones
    hashes = _rows(db, "select count(distinct config_hash) from detections")[0][0]
    assert hashes == 2  # each row keeps the run that logged it


def test_bad_config_is_refused_naming_the_key(tiny_bundle, tmp_path, capsys):
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("scoring:\n  threshhold: 0.3\n")
    rc = main(
        ["run", "--bundle", str(tiny_bundle), "--source", str(tmp_path), "--config", str(cfg)]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "scoring.threshhold" in err and "did you mean 'threshold'" in err


def test_corrupt_bundle_is_refused_by_file(bundle_copy, tmp_path, capsys):
    (bundle_copy / "species.csv").write_text("id\n")
    rc = main(["run", "--bundle", str(bundle_copy), "--source", str(tmp_path)])
    assert rc == 2
    assert "bundle refused: species.csv: checksum mismatch" in capsys.readouterr().err


def test_missing_source_is_a_one_line_error(tiny_bundle, tmp_path, capsys):
    assert main(["run", "--bundle", str(tiny_bundle), "--source", str(tmp_path / "nope.wav")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err
    empty = tmp_path / "card"
    empty.mkdir()  # a card copied to the wrong folder: said, not just "0 recordings"
    db = str(tmp_path / "d.db")
    assert main(["run", "--bundle", str(tiny_bundle), "--source", str(empty), "--db", db]) == 0
    assert f"note: no recordings found in {empty}" in capsys.readouterr().err


def test_inspect_and_config_commands(tiny_bundle, tmp_path, capsys):
    assert main(["inspect", str(tiny_bundle)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] and info["embedding_dim"] == 64 and len(info["traits"]) == 22
    # a .tar is named as given (not its unpacked temporary folder); --species stays JSON
    tar = tmp_path / "b.tar"
    with tarfile.open(tar, "w") as t:
        t.add(tiny_bundle, arcname="b")
    assert main(["inspect", str(tar), "--species"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bundle"] == str(tar) and len(info["species_table"]) == info["species"] == 24
    assert set(info["species_table"][0]) == {
        "id", "scientific_name", "common_name", "class", "order", "family"
    }  # fmt: skip
    assert main(["config", "schema"]) == 0
    assert "properties" in json.loads(capsys.readouterr().out)


def test_config_check_names_a_password_file_run_would_refuse(tmp_path, capsys):
    cfg = tmp_path / "edge.yaml"
    mqtt = "messaging:\n  mqtt:\n    enabled: true\n    username: rec\n    password_file: "
    cfg.write_text(mqtt + f"{tmp_path / 'nope'}\n")
    assert main(["config", "check", str(cfg)]) == 1
    assert "password_file" in capsys.readouterr().err  # it said "ok" before
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "pw").chmod(0o600)  # private, as run requires since 2026-11-29
    cfg.write_text(mqtt + f"{tmp_path / 'pw'}\n")
    assert main(["config", "check", str(cfg)]) == 0
    assert capsys.readouterr().out.strip() == f"{cfg}: ok"


def _real_clips(realaudio, shortest_s: float, longest_s: float) -> list:
    clips = [
        p
        for p in sorted(realaudio.iterdir())
        if p.suffix in (".wav", ".ogg") and shortest_s < sf.info(p).duration < longest_s
    ]
    assert clips, f"no real clip of {shortest_s}-{longest_s} s in {realaudio}"
    return clips


def _every_window_detects(tiny_bundle):
    """The tiny bundle's random weights give near-uniform probabilities: with threshold
    0 and one label per window, every window yields exactly one detection."""
    from animalclap_edge.config import EdgeConfig

    cfg = EdgeConfig.model_validate({"scoring": {"threshold": 0.0, "top_k": 1}})
    return _load_quiet(tiny_bundle, cfg)


@pytest.mark.parametrize("sr", [22050, 96000])
def test_detector_api_on_arrays(tiny_bundle, sr):
    det = _every_window_detects(tiny_bundle)
    x = np.random.default_rng(0).standard_normal(sr * 5).astype(np.float32) * 0.1
    a = det.detect_array(x, sr)
    b = det.detect_array(x, sr)
    assert [d.detection_id for d in a] == [d.detection_id for d in b]  # deterministic
    # 5 s, resampled to 48 kHz without losing time: windows of 3 s every 1.5 s
    assert [(d.window_start_s, d.window_end_s) for d in a] == [(0.0, 3.0), (1.5, 4.5)]


def test_detector_api_on_a_file_matches_the_array_route(tiny_bundle, realaudio, tmp_path):
    from animalclap_edge.audio.decode import AudioError, read_all

    det = _every_window_detects(tiny_bundle)
    path = _real_clips(realaudio, 6, 30)[0]
    dets = det.detect_file(path)
    same = det.detect_array(read_all(path, det.sample_rate), det.sample_rate, name=str(path))
    assert len(dets) >= 3
    assert [(d.detection_id, d.window_start_s, d.probability) for d in dets] == [
        (d.detection_id, d.window_start_s, d.probability) for d in same
    ]
    events = det.detect_file(path, events=True)
    assert sum(e.n_windows for e in events) == len(dets)  # each window in one event
    assert min(e.start_s for e in events) == 0.0
    assert max(e.end_s for e in events) == max(d.window_end_s for d in dets)
    fake = tmp_path / "notes.wav"
    fake.write_text("field notes, not audio")
    with pytest.raises(AudioError, match=r"notes\.wav: cannot decode"):
        det.detect_file(fake)


def test_detector_api_takes_int16_as_soundfile_scales_it(tiny_bundle, realaudio):
    """`scipy.io.wavfile.read` gives int16: the same file must give the same detections
    as its float samples (they were taken unscaled, 32768x too loud, before)."""
    from animalclap_edge.audio.decode import AudioError

    det = _load_quiet(tiny_bundle)
    path = _real_clips(realaudio, 4, 30)[0]
    as_float, sr = sf.read(path, dtype="float32")
    as_int16, _ = sf.read(path, dtype="int16")
    a, b = det.detect_array(as_float, sr), det.detect_array(as_int16, sr)
    assert [(d.label, d.window_start_s) for d in a] == [(d.label, d.window_start_s) for d in b]
    np.testing.assert_allclose(
        [d.probability for d in a], [d.probability for d in b], rtol=0, atol=1e-3
    )
    with pytest.raises(AudioError, match="dtype uint8"):
        det.detect_array(np.zeros(48_000, np.uint8), 48_000)
    with pytest.raises(AudioError, match="sample_rate 1000 Hz outside the supported 8000-"):
        det.detect_array(as_float, 1000)


def _load_quiet(bundle, config=None):
    import warnings

    from animalclap_edge.detector import Detector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Detector.load(bundle, config)


def test_detector_api_says_what_run_would_log(tiny_bundle, tmp_path):
    """A config path is taken as `run --config` takes it; a bundle's notice is a
    warning; a file `run` would skip raises, a partial one warns."""
    from animalclap_edge.audio.decode import AudioError
    from animalclap_edge.bundle import demo_bundle_path
    from animalclap_edge.detector import Detector

    cfg = tmp_path / "edge.yaml"
    cfg.write_text("scoring:\n  top_k: 1\n  threshold: 0.0\n")
    det = _load_quiet(tiny_bundle, cfg)
    assert (det.config.scoring.top_k, det.config.scoring.threshold) == (1, 0.0)
    with pytest.warns(UserWarning, match="not a field model"):
        Detector.load(demo_bundle_path())
    tone = (0.1 * np.sin(np.arange(48_000 * 5) / 10)).astype(np.float32)
    all_nan = np.full_like(tone, np.nan)
    sf.write(tmp_path / "nan.wav", all_nan, 48_000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: .*NaN"):
        det.detect_file(tmp_path / "nan.wav")
    late_nan = np.tile(tone, 6)
    late_nan[48_000 * 25 :] = np.nan  # 25 good seconds, then a broken card sector
    sf.write(tmp_path / "late.wav", late_nan, 48_000, subtype="FLOAT")
    with pytest.warns(UserWarning, match=r"late\.wav: partial \(.*NaN"):
        dets = det.detect_file(tmp_path / "late.wav")
    assert dets and max(d.window_end_s for d in dets) <= 25.0
    # a clip shorter than the window: its detections end where its audio does (they
    # ended at the padded window's end, past the end of the file)
    sf.write(tmp_path / "short.wav", tone[: 48_000 * 2], 48_000)
    (short,) = det.detect_file(tmp_path / "short.wav")
    assert (short.window_start_s, short.window_end_s) == (0.0, 2.0)


def test_detections_are_in_the_database_before_any_sink_hears_of_them(
    tiny_bundle, realaudio, tmp_path
):
    """A sink may publish what it is told (MQTT, the live view): a power cut right
    after must not leave a published detection missing from the card."""
    from animalclap_edge.sources import FolderSource
    from animalclap_edge.store import DetectionStore

    det = _every_window_detects(tiny_bundle)
    card = tmp_path / "card"
    card.mkdir()
    for p in _real_clips(realaudio, 3, 30)[:4]:
        (card / p.name).write_bytes(p.read_bytes())

    class Checking:
        def __init__(self, store):
            self.store, self.told = store, {"detection": 0, "event": 0}

        def on_detection(self, d):
            assert d.detection_id in {x.detection_id for x in self.store.detections()}
            self.told["detection"] += 1

        def on_event(self, e):
            assert e.event_id in {x.event_id for x in self.store.events()}
            self.told["event"] += 1

        def on_recording(self, r):
            pass

    with DetectionStore(tmp_path / "d.db") as store, FolderSource(card, det.sample_rate) as src:
        sink = Checking(store)
        summary = det.run(src, store, [sink])
    assert sink.told["detection"] == summary.detections > 0 and sink.told["event"] > 0


def test_detector_api_holds_one_batch_of_windows_not_the_whole_array(tiny_bundle):
    import tracemalloc

    from animalclap_edge.detector import Detector

    det = Detector.load(tiny_bundle)
    x = np.zeros(300 * 48_000, np.float32)  # 5 min: 199 windows of 3 s, 115 MB as arrays
    tracemalloc.start()
    try:
        det.detect_array(x, 48_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6  # bytes: one batch, the windower's history, the detections


def test_detector_api_refuses_a_nan_past_the_first_slice_it_checks(tiny_bundle):
    from animalclap_edge.audio.decode import AudioError
    from animalclap_edge.detector import Detector

    x = np.zeros(3 << 20, np.float32)  # three of the slices the check reads at a time
    x[(5 << 19) + 7] = np.nan
    with pytest.raises(AudioError, match="non-finite"):
        Detector.load(tiny_bundle).detect_array(x, 48_000)


def test_a_reader_that_closes_the_jsonl_stream_stops_the_run_cleanly(
    tiny_bundle, realaudio, tmp_path
):
    """`run --jsonl | head -1`: one line on stderr instead of a traceback, the shell's
    SIGPIPE status, and the database closed with what was logged."""
    import subprocess
    import sys
    from pathlib import Path

    card = tmp_path / "card"
    card.mkdir()
    # 20 clips, every label of every window written: far more than a pipe buffers
    # (64 KB), so the run is still writing when the reader goes
    for p in _real_clips(realaudio, 3, 30)[:20]:
        (card / p.name).write_bytes(p.read_bytes())
    cfg = tmp_path / "low.yaml"
    cfg.write_text("scoring:\n  threshold: 0.0\n")
    db = tmp_path / "d.db"
    run = ["run", "--bundle", str(tiny_bundle), "--source", str(card), "--db", str(db)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "animalclap_edge", *run, "--config", str(cfg), "--jsonl"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert json.loads(proc.stdout.readline())["type"] in ("detection", "event", "recording")
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read()
    assert proc.wait(60) == 141, err
    assert "Traceback" not in err and "stopped: the program reading our output closed it" in err
    assert _rows(db, "select count(*) from runs where finished_utc is not null") == [(1,)]
    assert _rows(db, "select count(*) from detections")[0][0] >= 1


@pytest.mark.timeout(120)  # a read of its stderr waits for lines that may never come
def test_a_named_pipe_without_a_writer_says_it_is_waiting(tiny_bundle, tmp_path):
    """The open blocks until a writer comes: the run used to sit there in silence. A pipe
    is live, so when its writer leaves the run waits for the next one, and says so again."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import numpy as np

    fifo = tmp_path / "mic.pcm"
    os.mkfifo(fifo)
    run = ["run", "--bundle", str(tiny_bundle), "--source", str(fifo), "--stdin-rate", "48000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "animalclap_edge", *run, "--db", str(tmp_path / "d.db"), "--quiet"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    waiting = f"waiting for a writer on {fifo}"
    try:
        before = [proc.stderr.readline() for _ in range(3)]  # before any writer exists
        assert before[0].startswith("bundle ") and before[-1].startswith(waiting), before
        # while it waits it holds the database: a second run is refused at once (it ran
        # to the end beside it, the lock being taken only once the pipe had a writer)
        audio = tmp_path / "files"
        audio.mkdir()
        second = subprocess.run(
            [sys.executable, "-m", "animalclap_edge", "run", "--bundle", str(tiny_bundle),
             "--source", str(audio), "--db", str(tmp_path / "d.db")],
            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2 and "another run (pid" in second.stderr, second.stderr
        with open(fifo, "wb") as w:  # a writer: 4 s of silence, then it leaves
            w.write(np.zeros(4 * 48_000, np.int16).tobytes())
        deadline, lines = time.monotonic() + 60, []
        while time.monotonic() < deadline and not any(x.startswith(waiting) for x in lines):
            line = proc.stderr.readline()
            assert line, f"the run ended instead of waiting again: {lines}"
            lines.append(line)
        assert any("stream ended after 4.0 s" in x for x in lines), lines
        proc.send_signal(signal.SIGTERM)  # how systemd stops it while it waits
        assert proc.wait(30) == 130, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert _rows(tmp_path / "d.db", "select count(*) from recordings") == [(1,)]


def test_every_option_of_every_command_has_help_and_shows_its_default():
    """bench's --threads, --birdnet and --species and build-engine's --workspace-gb had none."""
    import argparse

    from animalclap_edge.cli.parser import build_parser

    def commands(p: argparse.ArgumentParser, path: str = ""):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    yield f"{path}{name}", sp
                    yield from commands(sp, f"{path}{name} ")

    found = dict(commands(build_parser()))
    assert {"run", "bench", "build-engine", "config check", "report"} <= set(found)
    for name, parser in found.items():
        flat = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            what = f"{name} {(action.option_strings or [action.dest])[0]}"
            assert action.help, f"{what} has no help"
            default = action.default
            if default in (None, [], argparse.SUPPRESS) or default is False or action.required:
                continue
            shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
            assert f"(default: {shown})" in flat or "default" in action.help, what


def test_inspect_opens_the_graph_as_run_does(bundle_copy, capsys):
    """A graph that is no graph, checksummed and with its id renewed, passed `inspect`
    as "verified" while `run` refused it (found in an export walkthrough)."""
    from animalclap_edge.contracts import bundle as B

    (bundle_copy / "audio_encoder.onnx").write_text("garbage")
    m = json.loads((bundle_copy / B.MANIFEST).read_text())
    m["files"]["audio_encoder.onnx"] = B.sha256_file(bundle_copy / "audio_encoder.onnx")
    m["bundle_id"] = B.bundle_id_from_files(m["files"])
    (bundle_copy / B.MANIFEST).write_text(json.dumps(m))
    assert main(["inspect", str(bundle_copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert "audio_encoder.onnx" in err and "onnxruntime cannot load it" in err
    assert "\n" not in err


def test_detector_api_refuses_integer_pcm_held_as_floats_and_too_short_arrays(
    tiny_bundle, realaudio
):
    """`detect_array(x * 32768)` (PCM scaled twice, or int16 cast to float) gave another
    species at 0.79 in silence; an array shorter than a window returned [] where
    `detect_file` said "too short"."""
    from animalclap_edge.audio.decode import AudioError

    det = _load_quiet(tiny_bundle)
    path = _real_clips(realaudio, 4, 30)[0]
    x, sr = sf.read(path, dtype="float32")
    with pytest.raises(AudioError, match=r"float samples peak at .*divide integer PCM"):
        det.detect_array(x * 32768, sr)
    loud = np.clip(x * 4 / np.abs(x).max(), -8, 8)  # 12 dB over full scale: still audio
    assert isinstance(det.detect_array(loud[: 3 * sr], sr), list)
    with pytest.raises(AudioError, match="too short"):
        det.detect_array(np.zeros(10, np.float32), 48_000)


def test_a_run_over_files_that_finishes_leaves_its_rows_in_the_backup(
    tiny_bundle, realaudio, tmp_path
):
    """The backup was made at a run's start when there was none: after a card processed
    in one run it held none of that run's detections, and a restore gave back none."""
    from animalclap_edge.health import backup_path_for
    from animalclap_edge.store import DetectionStore

    card = tmp_path / "card"
    card.mkdir()
    for clip in _real_clips(realaudio, 4, 30)[:2]:
        shutil.copy(clip, card / clip.name)
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("scoring: {threshold: 0.0, top_k: 1}\n")
    db = tmp_path / "x.db"
    run = ["run", "--bundle", str(tiny_bundle), "--source", str(card), "--db", str(db)]
    assert main([*run, "--config", str(cfg), "--quiet"]) == 0
    with DetectionStore(db) as s, DetectionStore(backup_path_for(db)) as b:
        assert len(s.detections()) > 0
        assert [d.detection_id for d in b.detections()] == [d.detection_id for d in s.detections()]
        assert [h["kind"] for h in s.health()].count("backup") == 2  # at start, and at the end


@pytest.mark.parametrize(
    ("output", "per_detection"),
    [
        ("console: true", "text"),
        ("console: false", None),
        ("jsonl: true\n  console: false", "json"),
    ],
)
def test_output_console_false_prints_nothing_per_detection(
    tiny_bundle, realaudio, tmp_path, capsys, output, per_detection
):
    """`output.console: false` was read by nothing: the Jetson profiles set it and still
    printed a line per detection into the journal (found in a deployment trial)."""
    audio = tmp_path / "in"
    audio.mkdir()
    (audio / "a.ogg").symlink_to(sorted(realaudio.glob("*bird*.ogg"))[0])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"scoring:\n  threshold: 0.01\noutput:\n  {output}\n")
    db = tmp_path / "d.db"
    args = ["run", "--bundle", str(tiny_bundle), "--source", str(audio), "--db", str(db)]
    assert main([*args, "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert _rows(db, "select count(*) from detections")[0][0] > 0
    if per_detection is None:
        assert out == ""
    elif per_detection == "json":
        kinds = {json.loads(line)["type"] for line in out.splitlines()}
        assert kinds == {"detection", "event", "recording"}
    else:
        assert "a.ogg" in out and not out.lstrip().startswith("{")


def test_a_microphone_missing_at_start_is_written_in_the_cards_health_log(
    tiny_bundle, tmp_path, capsys
):
    """A recorder whose microphone was absent at boot exited before its database was
    opened: the card showed an unexplained gap, the reason only in the journal (found in
    a deployment trial). Whether PortAudio is installed or not, the open fails."""
    db = tmp_path / "d.db"
    args = ["run", "--bundle", str(tiny_bundle), "--source", "mic:no such device 7f3a"]
    assert main([*args, "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    ((kind, source, detail),) = _rows(
        db, "select kind, source, detail_json from health where kind = 'open_failed'"
    )
    assert (kind, source) == ("open_failed", "mic:no such device 7f3a")
    assert json.loads(detail)["why"] in err
