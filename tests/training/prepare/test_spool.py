"""A recording on its way from the decoder to the shard: held in blocks and a spool, so
prepare's memory does not grow with the recording's length."""

import tarfile
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from animalclap_edge.audio.decode import read_all
from training.prepare import spool
from training.prepare.decode import DecodeSettings, load_source
from training.prepare.shards import SAMPLE_RATE, ShardWriter, read_index, read_record

SR = 44_100


def _long_stereo_wav(path, seconds):
    """A field recording's shape: stereo at 44.1 kHz, written 10 s at a time."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SR, 2, subtype="PCM_16") as f:
        for _ in range(int(seconds // 10)):
            f.write(0.2 * rng.standard_normal((10 * SR, 2)))


def test_a_long_recording_goes_to_its_shard_in_bounded_memory(tmp_path, monkeypatch):
    """Decoded whole, a recording took about 30 bytes of memory per sample at 48 kHz (the
    array, its concatenation, the 16-bit encoding's float64 copies): 5 GB for an hour,
    per worker. Streamed, a worker holds blocks of 10 s and a spool of at most
    SPOOL_MEMORY_BYTES (made 1 MiB here, so that two minutes spill to disk)."""
    monkeypatch.setattr(spool, "SPOOL_MEMORY_BYTES", 1 << 20)
    src = tmp_path / "dawn-chorus.wav"
    _long_stereo_wav(src, 120)
    whole_bytes = 120 * SAMPLE_RATE * 4  # the recording as one float32 array: 23 MB
    writer = ShardWriter(tmp_path / "shards", 0)
    tracemalloc.start()
    try:
        with load_source(str(src), DecodeSettings()) as audio:
            assert audio._spool._rolled  # spilled to a file: not held in memory
            writer.add("dawn", audio.blocks(), {"species_id": "sp"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    index = read_index(writer.close())
    assert peak < whole_bytes / 2, f"peak {peak / 1e6:.1f} MB"
    (rec,) = index["records"]
    assert rec["duration_s"] == pytest.approx(120.0, abs=1e-3)
    stored = read_record(tmp_path / "shards" / index["tar"], rec["offset"], rec["size"])
    # the runtime's decoder, whole: the same samples but for the 16 bits
    np.testing.assert_allclose(stored, read_all(src, SAMPLE_RATE), rtol=0, atol=1 / 32768)


def test_blocks_read_back_what_was_appended_scaled_only_past_full_scale():
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal(n).astype(np.float32) * 0.5 for n in (7, 0, 1000, 33)]
    with spool.Decoded() as audio:
        for p in parts:
            audio.append(p)
        whole = np.concatenate(parts)
        assert audio.samples == len(whole) and audio.peak == np.abs(whole).max()
        assert audio.peak > 1.0  # 0.5 x a normal's tail over 1,040 draws
        got = np.concatenate(list(audio.blocks(samples=64)))
        np.testing.assert_array_equal(got, whole * np.float32(1.0 / audio.peak))
        audio.clear()
        audio.append(np.full(5, 0.25, np.float32))
        np.testing.assert_array_equal(audio.read(), np.full(5, 0.25, np.float32))


@pytest.mark.parametrize("codec", ["flac", "wav"])
def test_a_record_written_in_blocks_is_the_bytes_written_whole(tmp_path, codec):
    """Shards stay byte-identical for identical input however the decoder split it."""
    wave = (0.3 * np.random.default_rng(2).standard_normal(3 * SAMPLE_RATE + 17)).astype(np.float32)
    members = {}
    for name, audio in (("whole", wave), ("blocks", iter(np.array_split(wave, 7)))):
        w = ShardWriter(tmp_path / name, 0, codec)
        w.add("r", audio, {})
        w.close()
        with tarfile.open(tmp_path / name / "shard-000000.tar") as tar:
            members[name] = tar.extractfile(f"r.{codec}").read()
    assert members["whole"] == members["blocks"]
