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
    # sorted, one item per file, named by its absolute path (one id however it was given)
    assert [i.id for i in items] == [os.path.abspath(p) for p in files]
    recs = [i for i in items if isinstance(i, Recording)]
    skipped = {Path(i.id).name: i.reason for i in items if isinstance(i, Skipped)}
    assert len(recs) == sum(p.suffix.lower() in SUPPORTED_EXTENSIONS for p in files) == 201
    assert skipped == {
        "manifest.csv": "not an audio file (.csv)",
        "ATTRIBUTION.md": "not an audio file (.md)",
    }
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
    assert list(items) == ["README", "a.WAV", "b/x.flac", "bad.wav", "c.m4a", "notes.txt"]
    assert items["README"].reason == "not an audio file (no extension)"
    assert items["notes.txt"].reason == "not an audio file (.txt)"
    assert items["c.m4a"].reason.startswith("audio format not supported (.m4a)")
    assert items["bad.wav"].reason.startswith("cannot decode: ")
    assert isinstance(items["a.WAV"], Recording) and isinstance(items["b/x.flac"], Recording)
    flat = [
        (Path(i.id).name, getattr(i, "reason", None))
        for i in FolderSource(tmp_path, TARGET, recursive=False).recordings()
    ]
    assert ("b", "folder not searched (recursive=False)") in flat
    assert "x.flac" not in [n for n, _ in flat]


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
