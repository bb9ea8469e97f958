"""Sources on real files and folders, raw PCM streams, and (where present) a real input device."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from animalclap_edge.audio import SUPPORTED_EXTENSIONS, AudioError
from animalclap_edge.sources import (
    MIC_INSTALL_HINT,
    FileSource,
    FolderSource,
    MicSource,
    Recording,
    Skipped,
    Source,
    SourceError,
    StdinSource,
    _FloatRing,
    open_source,
    system_clock_synchronized,
    time_from_name,
)

REALAUDIO = Path(__file__).resolve().parents[2] / ".." / "shared" / "realaudio"
needs_real = pytest.mark.skipif(
    not REALAUDIO.is_dir(), reason=f"real audio folder {REALAUDIO} not present"
)
TARGET = 48_000


def sine(sr: int, seconds: float, hz: float = 1000.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(round(sr * seconds)) / sr)).astype(np.float32)


def peak_hz(y: np.ndarray, sr: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(y * np.hanning(len(y))))) * sr / len(y))


def a_real_wav() -> Path:
    return min(
        (p for p in REALAUDIO.glob("*.wav") if sf.info(str(p)).samplerate == 44100),
        key=lambda p: p.stat().st_size,
    )


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


def test_stdin_s16le_stereo_resampled():
    sr = 16000
    x = np.stack([sine(sr, 2.0), sine(sr, 2.0)], axis=1)
    pcm = (x * 32767).astype("<i2").tobytes()
    src = StdinSource(io.BytesIO(pcm), sr, 2, "s16le", TARGET, block_seconds=0.3)
    (rec,) = src.recordings()
    assert rec.id.startswith("stdin@undated#") and rec.start_time is None and not rec.clock_trusted
    blocks = list(rec.blocks)
    y = np.concatenate(blocks)
    assert len(blocks) > 3 and abs(len(y) - 2 * TARGET) <= 2
    assert abs(peak_hz(y, TARGET) - 1000) <= 1
    assert abs(np.abs(y).max() - 0.5) < 0.01


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


class Trickle(io.RawIOBase):
    """A pipe that returns at most 7 bytes per read, splitting frames."""

    def __init__(self, data: bytes):
        self.buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self.buf.read(min(n, 7) if n >= 0 else 7)


def test_stdin_f32le_short_reads_and_errors():
    x = sine(TARGET, 0.1)
    (rec,) = StdinSource(
        Trickle(x.astype("<f4").tobytes()), TARGET, 1, "f32le", TARGET
    ).recordings()
    assert np.array_equal(np.concatenate(list(rec.blocks)), x)  # same rate: bit-exact

    bad = x.copy()
    bad[TARGET // 20] = np.nan
    (rec,) = StdinSource(io.BytesIO(bad.tobytes()), TARGET, 1, "f32le", TARGET).recordings()
    with pytest.raises(AudioError, match=r"^non-finite samples \(NaN/Inf\) at 0\.05 s$"):
        list(rec.blocks)

    (rec,) = StdinSource(io.BytesIO(b"\0" * 9), TARGET, 1, "s16le", TARGET).recordings()
    with pytest.raises(AudioError, match=r"stdin ended mid-frame \(1 stray bytes\)"):
        list(rec.blocks)
    with pytest.raises(SourceError):
        StdinSource(io.BytesIO(), 48000, 1, "s24le", TARGET)  # type: ignore[arg-type]


@needs_real
def test_open_source_dispatch(tmp_path):
    assert isinstance(open_source(str(REALAUDIO), TARGET), FolderSource)
    cli_kwargs = dict(input_device=None, capture_sample_rate=None, channels=1, block_s=0.5)
    assert isinstance(open_source(str(a_real_wav()), TARGET, **cli_kwargs), FileSource)
    with pytest.raises(SourceError, match="needs its sample rate"):
        open_source("-", TARGET)
    src = open_source("-", TARGET, stdin=io.BytesIO(b"\0\0" * 800), stdin_rate=16000)
    assert isinstance(src, StdinSource)
    (rec,) = src.recordings()
    assert sum(len(b) for b in rec.blocks) == 2400
    live = open_source(
        "-", TARGET, stdin=io.BytesIO(b"\0\0" * 48_000), stdin_rate=48_000, stdin_live=True
    )
    (rec,) = live.recordings()
    assert rec.start_time is not None and rec.clock_note.startswith("wall clock when")
    with pytest.raises(SourceError, match="empty --source"):
        open_source(" ", TARGET)
    with pytest.raises(SourceError) as e:
        open_source(str(tmp_path / "nope.wav"), TARGET)
    assert str(e.value) == (
        f"source '{tmp_path / 'nope.wav'}' not found: give a WAV/FLAC/OGG/MP3 file, "
        "a folder of them, 'mic', or '-' for raw PCM on stdin"
    )


def test_system_clock_check_never_raises():
    ok, why = system_clock_synchronized()
    assert isinstance(ok, bool) and why and "\n" not in why


@pytest.mark.skipif(
    Path("/run/systemd/timesync/synchronized").exists(),
    reason="timesyncd's flag file answers before timedatectl is asked",
)
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("yes", (True, "system clock synchronized (timedatectl NTPSynchronized=yes)")),
        ("no", (False, "system clock not synchronized (timedatectl NTPSynchronized=no)")),
        (
            "",
            (
                False,
                "cannot tell whether the system clock is synchronized (timedatectl gave no answer)",
            ),
        ),
        (None, (False, "cannot tell whether the system clock is synchronized (FileNotFoundError)")),
    ],
)
def test_system_clock_check_reads_timedatectl(tmp_path, monkeypatch, answer, expected):
    """Every live detection's clock_trusted comes from this answer."""
    if answer is not None:  # None: no timedatectl at all (a minimal image)
        fake = tmp_path / "timedatectl"
        fake.write_text(f"#!/bin/sh\nprintf '{answer}\\n'\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert system_clock_synchronized() == expected


def test_ring_buffer_wraps_and_refuses_when_full():
    ring = _FloatRing(10, 2)
    data = np.arange(28, dtype=np.float32).reshape(14, 2)
    assert ring.write(data[:6])
    out = np.empty((4, 2), np.float32)
    assert ring.read_into(out) == 4 and np.array_equal(out, data[:4])
    assert ring.write(data[6:14])  # wraps around the end
    assert not ring.write(data[:1])  # full: refused whole, nothing overwritten
    got = np.empty((10, 2), np.float32)
    assert ring.read_into(got) == 10 and np.array_equal(got, data[4:14])
    assert ring.available() == 0 and ring.read_into(got) == 0


def _sounddevice_or_skip():
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        pytest.skip(f"sounddevice/PortAudio not importable: {e}")
    return sounddevice


def test_mic_without_portaudio_says_how_to_install():
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        with pytest.raises(SourceError) as e:
            open_source("mic", TARGET)
        assert str(e.value) == MIC_INSTALL_HINT
    else:
        pytest.skip("sounddevice and PortAudio are installed")


def test_mic_unknown_device_lists_inputs():
    _sounddevice_or_skip()
    with pytest.raises(SourceError, match="available input devices: ") as e:
        MicSource("no such device 7f3a", target_sr=TARGET)
    assert "input device 'no such device 7f3a' not found" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.hardware
def test_mic_records_from_a_real_device():
    sd = _sounddevice_or_skip()
    if not any(d["max_input_channels"] > 0 for d in sd.query_devices()):
        pytest.skip("PortAudio finds no input device")
    src = MicSource(None, block_seconds=0.1, target_sr=TARGET, ring_seconds=5)
    with src:
        (rec,) = list(src.recordings())
        assert rec.id.startswith("mic:") and rec.start_time is not None
        n = 0
        for b in rec.blocks:
            assert b.dtype == np.float32 and b.ndim == 1 and np.isfinite(b).all()
            n += len(b)
            if n >= TARGET // 2:
                src.stop()
    assert n >= TARGET // 2
    assert isinstance(src.overflows, int)
    assert src._stream is None  # released


def test_runtime_imports_stay_light():
    code = (
        "import sys, animalclap_edge.audio, animalclap_edge.sources; "
        "heavy = {'torch', 'transformers', 'sounddevice'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2]
    )


_ALSA_CAPTURE = """
pcm.acl_file {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
pcm.acl_capture {{
    type plug
    slave {{ pcm "acl_file" format S16_LE rate 48000 channels 1 }}
    hint.description "AnimalCLAP test capture"
}}
"""

_CAPTURE_SCRIPT = """
import json, sys
import numpy as np
from animalclap_edge.sources import MicSource
src = MicSource("acl_capture", block_seconds=0.25, target_sr=48000, ring_seconds=10)
got, n = [], 0
with src:
    (rec,) = list(src.recordings())
    for b in rec.blocks:
        got.append(b)
        n += len(b)
        if n >= 48000:
            src.stop()
np.save(sys.argv[1], np.concatenate(got))
print(json.dumps({"name": src.device_name, "rate": src.capture_rate, "released": src._stream is None}))
"""


def test_mic_source_captures_a_wav_played_into_a_real_alsa_device(tmp_path):
    """PortAudio opens a real ALSA capture PCM (the `file` plugin reading a raw file
    into the `null` device) by name; the captured audio must be the file's audio.

    The null device is not paced, so ALSA overruns and PortAudio drops stretches
    without saying so: the check is that every captured chunk is an exact excerpt
    of the file, in order, not that the file arrives whole.
    """
    _sounddevice_or_skip()
    rng = np.random.default_rng(0)
    noise = (0.2 * rng.standard_normal(48_000 * 8)).astype(np.float32)
    sf.write(tmp_path / "in.raw", noise, 48_000, format="RAW", subtype="PCM_16")
    (tmp_path / ".asoundrc").write_text(_ALSA_CAPTURE.format(infile=tmp_path / "in.raw"))
    env = {**os.environ, "HOME": str(tmp_path)}  # ALSA reads ~/.asoundrc at PortAudio start
    proc = subprocess.run(
        [sys.executable, "-c", _CAPTURE_SCRIPT, str(tmp_path / "got.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"name": "acl_capture", "rate": 48_000, "released": True}
    got = np.load(tmp_path / "got.npy")
    ref = np.round(noise * 32768).clip(-32768, 32767) / 32768  # what 16-bit PCM reads back
    assert len(got) >= 48_000
    positions = []
    for i in range(0, 48_000 - 256, 4000):
        # 256 samples: long enough that noise cannot match by chance, short enough
        # that a probe straddling one drop still matches exactly on one side of it
        seg = got[i : i + 256]
        if not seg.any():
            break  # past the end of the file: the null device gives silence
        j = int(np.correlate(ref, seg, mode="valid").argmax())
        exact = np.abs(ref[j : j + 256] - seg) < 1e-4
        assert exact.sum() >= 64, (i, j, int(exact.sum()))
        positions.append(j)
    assert len(positions) >= 5 and positions == sorted(positions), positions


_REFUSED_RATE_SCRIPT = """
from animalclap_edge.sources import MicSource, SourceError
try:
    MicSource("acl_file", sample_rate=768000, target_sr=48000)
except SourceError as e:
    print("SourceError:", e)
with MicSource("acl_capture", sample_rate=96000, block_seconds=0.1, target_sr=48000) as src:
    (rec,) = list(src.recordings())
    print("note:", rec.audio_note)
"""


def test_mic_names_the_rate_a_real_alsa_device_refuses(tmp_path):
    """ALSA's `file` plugin without `plug` in front takes only the rates its slave
    does: 768 kHz, which our config allows, is refused by the device itself. With
    `plug`, 96 kHz is taken, and the recording says what 48 kHz analysis drops."""
    _sounddevice_or_skip()
    (tmp_path / "in.raw").write_bytes(bytes(9600))
    (tmp_path / ".asoundrc").write_text(_ALSA_CAPTURE.format(infile=tmp_path / "in.raw"))
    proc = subprocess.run(
        [sys.executable, "-c", _REFUSED_RATE_SCRIPT],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("SourceError:")]
    assert "acl_file refuses 768000 Hz x 1 ch" in line and "its default rate is" in line
    assert "available input devices: " in line and "acl_capture" in line
    (note,) = [x for x in proc.stdout.splitlines() if x.startswith("note:")]
    assert note.startswith("note: recorded at 96000 Hz, analysed at 48000 Hz")
