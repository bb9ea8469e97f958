"""File and folder sources on real recordings: every file accounted for, times read from names and headers, truncation and release."""

from __future__ import annotations

import io
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from animalclap_edge.audio import SUPPORTED_EXTENSIONS, AudioError
from animalclap_edge.sources import (
    FileSource,
    FolderSource,
    Recording,
    Skipped,
    Source,
    SourceError,
    StdinSource,
    time_from_name,
)

from .helpers import REALAUDIO, TARGET, a_real_wav, needs_real, sine


@needs_real
def test_folder_source_accounts_for_every_real_file():
    files = sorted(p for p in REALAUDIO.iterdir() if not p.name.startswith("."))
    with FolderSource(REALAUDIO, TARGET) as src:
        assert isinstance(src, Source)
        items = list(src.recordings())
        # Blocks are lazy and closed with the source; decode a few while it is open.
        for r in [i for i in items if isinstance(i, Recording)][::67]:
            y = np.concatenate(list(r.blocks))
            assert y.dtype == np.float32 and len(y) > 0
    # sorted, one item per audio file, named by its absolute path (one id however it was
    # given); the folder's manifest and attribution are no recordings, only tallied
    audio = [p for p in files if p.suffix.lower() in SUPPORTED_EXTENSIONS]
    assert [i.id for i in items] == [os.path.abspath(p) for p in audio]
    recs = [i for i in items if isinstance(i, Recording)]
    assert len(recs) == len(items) == 201
    assert src.not_audio == {".csv": 1, ".md": 1}
    for r in recs:
        assert r.sample_rate == TARGET and r.start_time is not None and r.start_time.tzinfo
        assert not r.clock_trusted and r.clock_note == "time from file mtime: not a recorder clock"


def test_folder_rules(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".cache").mkdir()
    sf.write(tmp_path / "b" / "x.flac", sine(22050, 0.5), 22050)
    sf.write(tmp_path / "a.WAV", sine(16000, 0.5), 16000)
    sf.write(tmp_path / ".hidden.wav", sine(16000, 0.5), 16000)
    sf.write(tmp_path / ".cache" / "y.wav", sine(16000, 0.5), 16000)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "c.m4a").write_bytes(b"\0" * 64)
    (tmp_path / "README").write_text("x")
    (tmp_path / "bad.wav").write_text("not audio at all")
    items = {
        Path(i.id).relative_to(tmp_path).as_posix(): i
        for i in FolderSource(tmp_path, TARGET).recordings()
    }
    assert list(items) == ["a.WAV", "b/x.flac", "bad.wav", "c.m4a"]  # README, notes.txt: no audio
    assert items["c.m4a"].reason.startswith("audio format not supported (.m4a)")
    assert items["bad.wav"].reason.startswith("cannot decode: ")
    assert isinstance(items["a.WAV"], Recording) and isinstance(items["b/x.flac"], Recording)
    flat = [
        (Path(i.id).name, getattr(i, "reason", None))
        for i in FolderSource(tmp_path, TARGET, recursive=False).recordings()
    ]
    assert ("b", "folder not searched (recursive=False)") in flat
    assert "x.flac" not in [n for n, _ in flat]


def test_files_that_are_not_audio_are_no_recordings_but_are_tallied(tmp_path):
    """A card's Song Meter summary, notes and config are passed over, not counted as
    skipped recordings; audio that cannot be read still is one, skipped with its reason."""
    sf.write(tmp_path / "SMM01234_20240315_053000.wav", sine(24000, 0.5), 24000)
    (tmp_path / "SMM01234_Summary.csv").write_text("DATE,TIME,LAT,LON\n")
    (tmp_path / "notes.txt").write_text("rain from 05:40")
    (tmp_path / "more_notes.TXT").write_text("x")
    (tmp_path / "CONFIG").write_text("x")
    (tmp_path / "torn.wav").write_text("not audio at all")
    (tmp_path / "phone.m4a").write_bytes(b"\0" * 64)
    (tmp_path / "SMM01234_20240315_060000.w4v").write_bytes(b"\0" * 64)  # compressed
    src = FolderSource(tmp_path, TARGET)
    assert src.count() == 4  # the progress display's total: recordings only
    items = {Path(i.id).name: i for i in src.recordings()}
    assert sorted(items) == [
        "SMM01234_20240315_053000.wav",
        "SMM01234_20240315_060000.w4v",
        "phone.m4a",
        "torn.wav",
    ]
    w4v = items["SMM01234_20240315_060000.w4v"]
    assert isinstance(w4v, Skipped) and "not supported (.w4v)" in w4v.reason
    assert isinstance(items["SMM01234_20240315_053000.wav"], Recording)
    assert isinstance(items["torn.wav"], Skipped) and isinstance(items["phone.m4a"], Skipped)
    assert src.not_audio == {".txt": 2, ".csv": 1, "": 1}
    assert src.not_audio_note() == (
        "4 files passed over as not audio (2 .txt, 1 with no extension, 1 .csv): "
        "not counted as recordings"
    )
    only_audio = tmp_path / "only_audio"
    only_audio.mkdir()
    sf.write(only_audio / "a.wav", sine(24000, 0.5), 24000)
    assert FolderSource(only_audio, TARGET).not_audio_note() is None


def test_audio_this_libsndfile_cannot_read_is_a_skipped_recording_not_passed_over(
    tmp_path, monkeypatch
):
    """An .mp3 where libsndfile was built without MP3 (Ubuntu 22.04's 1.0.31) was
    tallied with the notes and CSVs, not skipped with its reason."""
    import animalclap_edge.sources.files as files

    monkeypatch.setattr(files, "SUPPORTED_EXTENSIONS", files.SUPPORTED_EXTENSIONS - {".mp3"})
    (tmp_path / "dawn.mp3").write_bytes(b"\0" * 64)
    src = FolderSource(tmp_path, TARGET)
    (item,) = list(src.recordings())
    assert isinstance(item, Skipped) and src.not_audio_note() is None


@needs_real
def test_time_from_recorder_file_name(tmp_path):
    src = a_real_wav()
    moth = tmp_path / "20240315_053000.WAV"
    shutil.copy(src, moth)
    (rec,) = FileSource(moth, TARGET).recordings()
    assert rec.start_time == datetime(2024, 3, 15, 5, 30, tzinfo=timezone.utc)
    assert rec.clock_trusted and rec.clock_note.startswith("time from file name")
    assert time_from_name("SMM01234_20190501_060000.wav") == datetime(
        2019, 5, 1, 6, tzinfo=timezone.utc
    )
    assert time_from_name("site12_20191399_999999.wav") is None  # not a date
    assert time_from_name("20240315053000.wav") is None
    # an offset in the name is applied (it was ignored: local time logged as UTC)
    assert time_from_name("XX_20240315_053000+0200.wav") == datetime(
        2024, 3, 15, 3, 30, tzinfo=timezone.utc
    )
    assert time_from_name("XX_20240315_053000-03:30.wav") == datetime(
        2024, 3, 15, 9, 0, tzinfo=timezone.utc
    )
    assert time_from_name("20240315T053000Z.flac") == datetime(
        2024, 3, 15, 5, 30, tzinfo=timezone.utc
    )
    # a counter after the time is no offset: UTC as before
    for counter in ("rec_20240315_053000-0001.wav", "rec_20240315_053000+0001.wav"):
        assert time_from_name(counter) == datetime(2024, 3, 15, 5, 30, tzinfo=timezone.utc)
    # an impossible date falls back to mtime, and the note says why
    odd = tmp_path / "XX_20240230_053000.wav"
    shutil.copy(src, odd)
    (rec,) = FileSource(odd, TARGET).recordings()
    assert not rec.clock_trusted
    assert rec.clock_note.endswith("(20240230_053000 in the file name is no date and time)")

    plain = tmp_path / "plain.wav"
    shutil.copy(src, plain)
    (rec,) = FileSource(plain, TARGET).recordings()
    mtime = datetime.fromtimestamp(plain.stat().st_mtime, timezone.utc)
    assert not rec.clock_trusted
    assert abs((mtime - rec.start_time).total_seconds() - sf.info(str(src)).duration) < 1e-3


@needs_real
def test_file_source_skips_and_truncation(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    assert list(FileSource(empty, TARGET).recordings()) == [
        Skipped(str(empty), "empty file (0 samples)")
    ]
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    (rec,) = FileSource(nan, TARGET).recordings()  # the header is fine: found while streaming
    with pytest.raises(AudioError, match=r"non-finite samples \(NaN/Inf\) at 0\.00 s"):
        list(rec.blocks)
    src = max(REALAUDIO.glob("srkw*.wav"), key=lambda p: p.stat().st_size)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    (rec,) = FileSource(cut, TARGET, block_seconds=0.5).recordings()
    got = []
    with pytest.raises(AudioError, match=r"^truncated or corrupt after"):
        for b in rec.blocks:
            got.append(b)
    assert got


def test_file_source_close_releases_the_open_file(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, sine(16000, 3.0), 16000)
    src = FileSource(path, TARGET, block_seconds=0.5)
    (rec,) = src.recordings()
    next(rec.blocks)
    src.close()
    assert list(rec.blocks) == []  # the generator was closed, and its file with it


def test_a_recording_faster_than_the_model_says_what_is_not_heard(tmp_path):
    for sr in (16_000, 32_000, 38_400, 44_100, TARGET, 96_000, 384_000):
        sf.write(tmp_path / f"{sr}.wav", sine(sr, 0.5), sr, subtype="FLOAT")
    notes = {Path(r.id).name: r.audio_note for r in FolderSource(tmp_path, TARGET).recordings()}
    assert notes["48000.wav"] == notes["44100.wav"] == notes["38400.wav"] == ""
    for sr in (96_000, 384_000):  # resampling filters out the ultrasound
        assert notes[f"{sr}.wav"].startswith(f"recorded at {sr} Hz, analysed at 48000 Hz")
        assert "sound above 24000 Hz" in notes[f"{sr}.wav"]
    for sr in (16_000, 32_000):  # the recorder never captured the top of the band
        assert f"holds nothing above {sr // 2} Hz" in notes[f"{sr}.wav"]
    pcm = (sine(192_000, 0.1) * 32767).astype("<i2").tobytes()
    (rec,) = StdinSource(io.BytesIO(pcm), 192_000, 1, "s16le", TARGET).recordings()
    assert "recorded at 192000 Hz" in rec.audio_note
    (rec,) = StdinSource(io.BytesIO(pcm), 44_100, 1, "s16le", TARGET).recordings()
    assert rec.audio_note == ""


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def _named(folder: Path, name: str, comment: str | None = None) -> Path:
    """A short WAV named as a recorder names it; `comment`: an AudioMoth header."""
    path = folder / name
    with sf.SoundFile(path, "w", 16000, 1, "PCM_16") as f:
        if comment is not None:
            f.comment, f.artist = comment, "AudioMoth 24F319055FDF2F5B"
        f.write((sine(16000, 0.5) * 20000).astype(np.int16))
    return path


def _clock(path: Path, file_time_zone: str | None = None) -> tuple[datetime | None, bool, str]:
    (rec,) = FileSource(path, TARGET, file_time_zone=file_time_zone).recordings()
    assert isinstance(rec, Recording)
    return rec.start_time, rec.clock_trusted, rec.clock_note


UNSET = "not trusted: before 2001-01-01, a recorder clock never set"


def test_a_recorder_clock_never_set_is_not_trusted(tmp_path):
    """19700101_000012.WAV and 20000101_000000.WAV were trusted, so `report summary
    --trusted-clock` listed 1970 and 2000 rows (a field technician's card)."""
    for name, t in (
        ("19700101_000012.WAV", _utc(1970, 1, 1, 0, 0, 12)),
        ("20000101_000000.WAV", _utc(2000, 1, 1)),
    ):
        assert _clock(_named(tmp_path, name)) == (
            t,
            False,
            f"time from file name (read as UTC); {UNSET}",
        )
    header = "Recorded at 00:00:00 01/01/1970 (UTC) by AudioMoth 24F319055FDF2F5B at medium gain"
    start, trusted, note = _clock(_named(tmp_path, "moth.WAV", header))
    assert (start, trusted) == (_utc(1970, 1, 1), False)
    assert note == (
        f"time from the recorder's header (UTC applied; AudioMoth 24F319055FDF2F5B); {UNSET}"
    )
    # a name read in a configured zone is judged after the zone: UTC 2000-12-31 23:30
    assert _clock(_named(tmp_path, "20010101_003000.wav"), "Europe/Berlin")[1] is False
    # year 1 moved by a zone or an offset leaves the calendar: untrusted, not a crash
    assert _clock(_named(tmp_path, "x_00010101_000000.wav"), "+02:00") == (
        _utc(1, 1, 1),
        False,
        "time from file name (read as UTC: +02:00 goes out of range)",
    )
    assert time_from_name("x_00010101_000000+0200.wav") is None
    # from the floor on, a clock that was set: a card's 2024 recordings are real
    assert _clock(_named(tmp_path, "20010101_000000.WAV")) == (
        _utc(2001, 1, 1),
        True,
        "time from file name (read as UTC)",
    )
    fine = header.replace("01/01/1970", "14/05/2026")
    assert _clock(_named(tmp_path, "moth2.WAV", fine))[:2] == (_utc(2026, 5, 14), True)


def test_an_iso_basic_name_with_a_negative_offset_is_applied(tmp_path):
    """Frontier Labs BAR-LT names files "20260601T053000-0500_REC.flac": read as 05:30
    UTC, 5 hours off. After "T" the minus is an offset; after "_" it may be a counter."""
    p = _named(tmp_path, "20260601T053000-0500_REC.wav")
    assert _clock(p) == (
        _utc(2026, 6, 1, 10, 30),
        True,
        "time from file name (its offset -05:00 applied)",
    )
    assert time_from_name("20260601T053000-0500_REC.flac") == _utc(2026, 6, 1, 10, 30)
    assert time_from_name("20260601T053000+0530.flac") == _utc(2026, 6, 1, 0, 0)
    assert time_from_name("20260601T053000-0001.flac") == _utc(2026, 6, 1, 5, 30)  # no zone
    # still a counter, not an offset, after "_" or "-"; with its colon, an offset
    for counter in ("rec_20260601_053000-0500.wav", "rec_20260601-053000-0500.wav"):
        assert time_from_name(counter) == _utc(2026, 6, 1, 5, 30)
    assert time_from_name("rec_20260601_053000-05:00.wav") == _utc(2026, 6, 1, 10, 30)


def test_a_song_meter_gps_synchronised_name_is_dated(tmp_path):
    """Song Meters put "$" between date and time when GPS set the clock
    ("SM4A01234_20260601$053000.wav", Wildlife Acoustics' SM3BAT/SM4 manuals)."""
    p = _named(tmp_path, "SM4A01234_20260601$053000.wav")
    assert _clock(p) == (_utc(2026, 6, 1, 5, 30), True, "time from file name (read as UTC)")
    assert _clock(p, "Europe/Berlin")[:2] == (_utc(2026, 6, 1, 3, 30), True)


def test_file_time_zone_reads_names_in_the_recorders_local_time(tmp_path):
    """A Song Meter names files in its local time: device.file_time_zone says which."""
    summer = _named(tmp_path, "SMM01234_20260601_053000.wav")
    winter = _named(tmp_path, "SMM01234_20261201_053000.wav")
    assert _clock(summer) == (_utc(2026, 6, 1, 5, 30), True, "time from file name (read as UTC)")
    assert _clock(summer, "Europe/Berlin") == (
        _utc(2026, 6, 1, 3, 30),
        True,
        "time from file name (device.file_time_zone Europe/Berlin applied: +02:00)",
    )
    assert _clock(winter, "Europe/Berlin") == (  # daylight saving by the file's own date
        _utc(2026, 12, 1, 4, 30),
        True,
        "time from file name (device.file_time_zone Europe/Berlin applied: +01:00)",
    )
    assert _clock(summer, "-05:00") == (
        _utc(2026, 6, 1, 10, 30),
        True,
        "time from file name (device.file_time_zone -05:00 applied)",
    )
    # a zone of the name's own wins: an offset, Z, or an AudioMoth header's zone
    own = _named(tmp_path, "SMM01234_20260601_053000+0100.wav")
    assert _clock(own, "Europe/Berlin")[:2] == (_utc(2026, 6, 1, 4, 30), True)
    zulu = _named(tmp_path, "20260601T053000Z.wav")
    assert _clock(zulu, "Europe/Berlin")[:2] == (_utc(2026, 6, 1, 5, 30), True)
    moth = _named(
        tmp_path,
        "20260601_053000.WAV",
        "Recorded at 05:30:00 01/06/2026 (UTC+3) by AudioMoth 24F319055FDF2F5B at medium gain",
    )
    assert _clock(moth, "Europe/Berlin") == (
        _utc(2026, 6, 1, 2, 30),
        True,
        "time from the recorder's header (UTC+3 applied; AudioMoth 24F319055FDF2F5B)",
    )
    # a folder applies it to each of its files; the CLI sets it after opening
    folder = FolderSource(tmp_path, TARGET, file_time_zone="Europe/Berlin")
    starts = {Path(r.id).name: r.start_time for r in folder.recordings()}
    assert starts["SMM01234_20261201_053000.wav"] == _utc(2026, 12, 1, 4, 30)
    folder.file_time_zone = None
    starts = {Path(r.id).name: r.start_time for r in folder.recordings()}
    assert starts["SMM01234_20261201_053000.wav"] == _utc(2026, 12, 1, 5, 30)
    with pytest.raises(SourceError, match=r"^file_time_zone: 'Europe/Berln' is no time zone"):
        FileSource(summer, TARGET, file_time_zone="Europe/Berln")


def test_a_local_time_that_happens_twice_or_never_is_not_trusted(tmp_path):
    """Europe/Berlin: 2026-10-25 02:30 happens twice (clocks put back at 03:00) and is
    read as the first (zoneinfo's fold=0, +02:00); 2026-03-29 02:30 never happens
    (clocks put forward at 02:00) and is read with the offset before (+01:00). Neither
    is trusted: the note says why."""
    twice = _named(tmp_path, "SMM01234_20261025_023000.wav")
    assert _clock(twice, "Europe/Berlin") == (
        _utc(2026, 10, 25, 0, 30),
        False,
        "time from file name (device.file_time_zone Europe/Berlin applied: +02:00); not "
        "trusted: 2026-10-25 02:30:00 happens twice there (clocks put back): read as the first",
    )
    never = _named(tmp_path, "SMM01234_20260329_023000.wav")
    assert _clock(never, "Europe/Berlin") == (
        _utc(2026, 3, 29, 1, 30),
        False,
        "time from file name (device.file_time_zone Europe/Berlin applied: +01:00); not "
        "trusted: 2026-03-29 02:30:00 does not exist there (clocks put forward): read with "
        "the offset in force before",
    )
    # the hours either side are sure
    for name, t in (
        ("x_20261025_033000.wav", _utc(2026, 10, 25, 2, 30)),
        ("x_20261025_013000.wav", _utc(2026, 10, 24, 23, 30)),
        ("x_20260329_033000.wav", _utc(2026, 3, 29, 1, 30)),
        ("x_20260329_013000.wav", _utc(2026, 3, 29, 0, 30)),
    ):
        assert _clock(_named(tmp_path, name), "Europe/Berlin")[:2] == (t, True)
