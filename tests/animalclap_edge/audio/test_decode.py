"""Decoding and resampling on real recordings and on generated files at awkward rates."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from animalclap_edge.audio import (
    SUPPORTED_EXTENSIONS,
    AudioError,
    probe,
    read_all,
    read_blocks,
    resample,
    to_mono,
)

REALAUDIO = Path(__file__).resolve().parents[3] / ".." / "shared" / "realaudio"
needs_real = pytest.mark.skipif(
    not REALAUDIO.is_dir(), reason=f"real audio folder {REALAUDIO} not present"
)
TARGET = 48_000


def assert_one_line(msg: str) -> None:
    assert msg and "\n" not in msg and msg == msg.strip() and len(msg) < 300, repr(msg)


def real_files() -> list[Path]:
    return sorted(p for p in REALAUDIO.iterdir() if p.suffix.lower() in SUPPORTED_EXTENSIONS)


def peak_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spec) * sr / len(y))


def sine(sr: int, seconds: float, hz: float = 1000.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(round(sr * seconds)) / sr)).astype(np.float32)


@needs_real
def test_every_real_file_decodes_to_48k_with_expected_length():
    with open(REALAUDIO / "manifest.csv", newline="") as f:
        manifest = {row["path"]: row for row in csv.DictReader(f)}
    files = real_files()
    assert {p.name for p in files} == set(manifest)
    failures: dict[str, str] = {}
    for p in files:
        try:
            info = probe(p)
            y = read_all(p, TARGET)
        except AudioError as e:
            assert_one_line(str(e))
            failures[p.name] = str(e)
            continue
        row = manifest[p.name]
        assert info.sample_rate == int(row["sample_rate"])
        assert abs(info.duration_s - float(row["duration_s"])) < 0.002  # manifest rounds to ms
        assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()
        expected = info.duration_s * TARGET
        assert abs(len(y) - expected) <= 0.01 * expected, (p.name, len(y), expected)
    # A corrupt file may join the collection; it must fail with a reason, not take the run down.
    assert len(failures) <= len(files) // 20, failures


@needs_real
def test_streaming_equals_one_shot_on_real_audio():
    # 44.1 kHz stereo OGG, 22.05 kHz WAV, 200 kHz 8-bit WAV.
    picks = [
        next(p for p in real_files() if sf.info(str(p)).channels == 2),
        next(p for p in real_files() if sf.info(str(p)).samplerate == 22050),
        next(p for p in real_files() if sf.info(str(p)).samplerate == 200_000),
    ]
    for p in picks:
        blocks = list(read_blocks(p, TARGET, block_seconds=0.05))
        assert len(blocks) > 1
        streamed = np.concatenate(blocks)
        native, sr = sf.read(str(p), dtype="float32", always_2d=True)
        direct = resample(to_mono(native), sr, TARGET)
        assert abs(len(streamed) - len(direct)) <= 1
        n = min(len(streamed), len(direct))
        assert np.abs(streamed[:n] - direct[:n]).max() < 1e-4


@pytest.mark.parametrize("sr", [8000, 22050, 96000, 200_000, 500_000])
def test_generated_rates_keep_a_1khz_sine(tmp_path, sr):
    path = tmp_path / f"sine_{sr}.wav"
    sf.write(path, sine(sr, 1.5), sr, subtype="FLOAT")
    y = read_all(path, TARGET)
    assert abs(len(y) - 1.5 * TARGET) <= 2
    assert abs(peak_hz(y, TARGET) - 1000.0) <= TARGET / len(y)
    core = y[TARGET // 10 : -TARGET // 10]  # skip filter edges
    assert abs(np.sqrt(np.mean(core**2)) - 0.5 / np.sqrt(2)) < 0.01


def test_stereo_is_averaged(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (TARGET, 2)).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, x, TARGET, subtype="FLOAT")
    y = read_all(path, TARGET)  # same rate: no resampling, exact
    np.testing.assert_allclose(y, x.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [("FLAC", "PCM_16", ".flac"), ("OGG", "VORBIS", ".ogg"), ("MP3", "MPEG_LAYER_III", ".mp3")],
)
def test_compressed_round_trip(tmp_path, fmt, subtype, ext):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}")
    assert ext in SUPPORTED_EXTENSIONS
    path = tmp_path / f"sine{ext}"
    sf.write(path, sine(44100, 2.0), 44100, format=fmt, subtype=subtype)
    info = probe(path)
    assert info.format == fmt and info.sample_rate == 44100
    y = read_all(path, TARGET)
    assert abs(len(y) - 2.0 * TARGET) <= 0.01 * 2.0 * TARGET
    assert abs(peak_hz(y, TARGET) - 1000.0) <= 2 * TARGET / len(y)


def test_empty_wav(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), TARGET)
    with pytest.raises(AudioError, match=r"^empty file \(0 samples\)$"):
        probe(path)
    with pytest.raises(AudioError, match="empty file"):
        next(read_blocks(path, TARGET))
    zero = tmp_path / "zero.wav"
    zero.touch()
    with pytest.raises(AudioError, match=r"empty file \(0 bytes\)"):
        probe(zero)


def test_unfinalized_wav_header(tmp_path):
    # A recorder that lost power before writing the data size: 0 or 0xFFFFFFFF.
    path = tmp_path / "a.wav"
    sf.write(path, sine(TARGET, 1.0), TARGET, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data") + 4
    raw[at : at + 4] = (0xFFFFFFFF).to_bytes(4, "little")
    path.write_bytes(raw)
    assert len(read_all(path, TARGET)) == TARGET  # libsndfile reads to the end of the file
    raw[at : at + 4] = (0).to_bytes(4, "little")
    path.write_bytes(raw)
    with pytest.raises(AudioError, match="header declares no data") as e:
        probe(path)
    assert_one_line(str(e.value))


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("site 4, mic faces north\n" * 20)
    with pytest.raises(AudioError, match=r"^cannot decode: ") as e:
        probe(path)
    assert_one_line(str(e.value))
    assert str(tmp_path) not in str(e.value)


def test_rate_outside_supported_range(tmp_path):
    path = tmp_path / "low.wav"
    sf.write(path, sine(4000, 0.5, hz=500), 4000)
    with pytest.raises(AudioError) as e:
        probe(path)
    assert str(e.value) == "sample rate 4000 Hz outside the supported 8000-768000 Hz"


@needs_real
def test_truncated_real_wav_streams_then_names_the_cut(tmp_path):
    src = max(
        (p for p in real_files() if p.suffix == ".wav" and sf.info(str(p)).subtype == "PCM_16"),
        key=lambda p: p.stat().st_size,
    )
    raw = src.read_bytes()
    cut = tmp_path / src.name
    cut.write_bytes(raw[: int(len(raw) * 0.6) + 1])  # +1: mid-sample
    info = probe(cut)
    assert info.truncated == f"the header promises {sf.info(str(src)).duration:.2f} s"
    got: list[np.ndarray] = []
    with pytest.raises(AudioError, match=r"^truncated or corrupt after \d+\.\d\d s: ") as e:
        for b in read_blocks(cut, TARGET, block_seconds=0.25):
            got.append(b)
    assert_one_line(str(e.value))
    seconds = sum(len(b) for b in got) / TARGET
    assert abs(seconds - 0.6 * sf.info(str(src)).duration) < 0.05
    assert f"after {info.duration_s:.2f} s" in str(e.value)


@needs_real
def test_truncated_real_ogg(tmp_path):
    src = max((p for p in real_files() if p.suffix == ".ogg"), key=lambda p: p.stat().st_size)
    cut = tmp_path / src.name
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert probe(src).truncated == ""
    got: list[np.ndarray] = []
    with pytest.raises(AudioError, match=r"^truncated or corrupt after \d+\.\d\d s: ") as e:
        for b in read_blocks(cut, TARGET):
            got.append(b)
    assert_one_line(str(e.value))
    assert got  # pages before the cut decode


def test_truncated_flac_fails_mid_stream(tmp_path):
    path = tmp_path / "long.flac"
    rng = np.random.default_rng(1)
    sf.write(path, rng.uniform(-0.5, 0.5, 44100 * 4).astype(np.float32), 44100, subtype="PCM_16")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    got: list[np.ndarray] = []
    with pytest.raises(AudioError, match=r"^truncated or corrupt after (\d+\.\d\d) s") as e:
        for b in read_blocks(path, TARGET, block_seconds=0.5):
            got.append(b)
    assert_one_line(str(e.value))
    assert got  # audio before the cut was delivered


@pytest.mark.parametrize("rate", [TARGET, 44100])
def test_a_flac_cut_inside_its_first_block_keeps_what_was_before_the_cut(tmp_path, rate):
    """libsndfile drops a whole failed read: with 10 s blocks, a 12 s FLAC cut at
    half was 'skipped after 0.00 s' although 5.9 s of it decode."""
    path = tmp_path / "cut.flac"
    rng = np.random.default_rng(2)
    sf.write(path, rng.uniform(-0.5, 0.5, rate * 12).astype(np.float32), rate, subtype="PCM_16")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    readable = 0  # what libsndfile gives, read a little at a time
    with sf.SoundFile(path) as f, contextlib.suppress(sf.LibsndfileError):
        while n := len(f.read(1024, dtype="float32")):
            readable += n
    assert 5 * rate < readable < 6.5 * rate
    got: list[np.ndarray] = []
    with pytest.raises(AudioError, match=r"^truncated or corrupt after (\d+\.\d\d) s") as e:
        for b in read_blocks(path, TARGET):
            got.append(b)
    assert_one_line(str(e.value))
    after = float(e.value.args[0].split("after ")[1].split(" s")[0])
    assert readable / rate - 0.03 <= after <= readable / rate  # a piece of ~1000 frames
    assert abs(sum(len(b) for b in got) - after * TARGET) <= TARGET * 0.01


def test_nan_filled_float_wav(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.full(TARGET, np.nan, np.float32), TARGET, subtype="FLOAT")
    with pytest.raises(AudioError) as e:
        read_all(path, TARGET)
    assert str(e.value) == "non-finite samples (NaN/Inf) at 0.00 s"


def test_inf_midway_is_timed_and_earlier_blocks_survive(tmp_path):
    x = sine(TARGET, 3.0)
    x[int(1.5 * TARGET)] = np.inf
    path = tmp_path / "inf.wav"
    sf.write(path, x, TARGET, subtype="FLOAT")
    got: list[np.ndarray] = []
    with pytest.raises(AudioError, match=r"^non-finite samples \(NaN/Inf\) at 1\.50 s$"):
        for b in read_blocks(path, TARGET, block_seconds=1.0):
            got.append(b)
    assert len(got) == 1 and np.array_equal(got[0], x[:TARGET])


def test_blocks_are_bounded_by_block_seconds(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, sine(44100, 5.0), 44100)
    sizes = [len(b) for b in read_blocks(path, TARGET, block_seconds=0.5)]
    assert max(sizes) <= 0.5 * TARGET * 1.05
    assert abs(sum(sizes) - 5 * TARGET) <= 2


def test_array_helpers():
    x = np.stack([np.ones(100), -np.ones(100) * 0.5], axis=1)
    np.testing.assert_allclose(to_mono(x), 0.25)
    assert to_mono(np.zeros(5, np.float64)).dtype == np.float32
    with pytest.raises(AudioError, match=r"looks like \(channels, samples\)"):
        to_mono(x.T)
    with pytest.raises(AudioError):
        to_mono(np.zeros((2, 2, 2)))
    y = resample(sine(22050, 1.0), 22050, TARGET)
    assert y.dtype == np.float32 and abs(len(y) - TARGET) <= 1
    assert abs(peak_hz(y, TARGET) - 1000) <= 1
    z = np.ones(10, np.float32)
    assert resample(z, TARGET, TARGET) is not z
    with pytest.raises(AudioError):
        resample(z, 0, TARGET)
