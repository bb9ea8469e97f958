"""Shards round-trip, are byte-identical for identical input, and appear atomically."""

import hashlib
import json
import tarfile

import numpy as np
import pytest

from training.prepare.shards import (
    SAMPLE_RATE,
    ShardWriter,
    iter_shard,
    read_index,
    read_record,
)


def _waves(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        f"rec{i}": (0.3 * rng.standard_normal(SAMPLE_RATE * (i + 1) // 2)).astype(np.float32)
        for i in range(n)
    }


def _write(folder, waves, index=0):
    w = ShardWriter(folder, index)
    for key, wave in waves.items():
        w.add(key, wave, {"species_id": "sp", "site": "S", "date": "d"})
    w.reject("bad", "/x/bad.wav", "silent", "peak all zeros")
    return w.close()


def test_records_round_trip_by_stream_and_by_offset(tmp_path):
    waves = _waves()
    index = read_index(_write(tmp_path, waves))
    tar = tmp_path / index["tar"]
    streamed = {r.key: r for r in iter_shard(tar)}
    assert list(streamed) == list(waves)
    for rec in index["records"]:
        original = np.clip(waves[rec["key"]], -1, 1)
        by_offset = read_record(tar, rec["offset"], rec["size"])
        # FLAC is lossless on the 16-bit samples: only quantisation error is left
        assert np.max(np.abs(by_offset - original)) <= 1 / 32768 + 1e-7
        np.testing.assert_array_equal(by_offset, streamed[rec["key"]].wave)
        assert streamed[rec["key"]].meta["duration_s"] == rec["duration_s"]
    assert index["rejected"] == [
        {"key": "bad", "uri": "/x/bad.wav", "reason": "silent", "detail": "peak all zeros"}
    ]
    # a plain tar that any WebDataset reader splits into samples by key
    with tarfile.open(tar) as t:
        assert t.getnames()[:2] == ["rec0.flac", "rec0.json"]


def test_identical_input_gives_identical_shards(tmp_path):
    a = _write(tmp_path / "a", _waves())
    b = _write(tmp_path / "b", _waves())

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert digest(a.with_suffix(".tar")) == digest(b.with_suffix(".tar"))
    assert json.loads(a.read_text()) == json.loads(b.read_text())


def test_an_aborted_shard_leaves_nothing_behind(tmp_path):
    w = ShardWriter(tmp_path, 3)
    w.add("rec0", np.zeros(4800, np.float32), {})
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_newer_index_version_is_refused(tmp_path):
    path = _write(tmp_path, _waves(1))
    index = json.loads(path.read_text())
    path.write_text(json.dumps({**index, "version": 99}))
    with pytest.raises(ValueError, match="upgrade animalclap-edge"):
        read_index(path)
