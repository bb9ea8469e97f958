"""Shards round-trip, are byte-identical for identical input, and appear atomically."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from training.prepare.shards import (
    SAMPLE_RATE,
    ShardWriter,
    iter_shard,
    read_index,
    read_record,
    stale_temporaries,
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


def test_a_writer_names_its_temporary_file_and_a_rerun_removes_only_dead_ones(tmp_path):
    """Two writers of one shard (a rerun beside an orphaned worker) never share a
    temporary file, and a rerun clears those of writers that are gone."""
    w = ShardWriter(tmp_path, 1)
    (mine,) = tmp_path.glob("shard-000001.tar.*.tmp")
    assert mine.name == f"shard-000001.tar.{socket.gethostname()}-{os.getpid()}.tmp"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    host = socket.gethostname()
    for name in (
        "shard-000001.tar.tmp",  # written before temporaries were tagged
        f"shard-000001.tar.{host}-{gone}.tmp",
        f"shard-000001.json.{host}-{gone}.tmp",
        f"shard-000001.tar.other.host-{os.getpid()}.tmp",  # another machine's: may be live
        f"shard-000002.tar.{host}-{gone}.tmp",  # another shard
    ):
        (tmp_path / name).write_bytes(b"partial")
    stale = sorted(p.name for p in stale_temporaries(tmp_path, 1))
    assert stale == sorted(
        [
            f"shard-000001.json.{host}-{gone}.tmp",
            f"shard-000001.tar.{host}-{gone}.tmp",
            "shard-000001.tar.tmp",
        ]
    )
    # another host's, untouched for over an hour: its node is gone (a pre-empted node
    # comes back under another name), so it is stale too
    later = time.time() + 3601
    assert f"shard-000001.tar.other.host-{os.getpid()}.tmp" in {
        p.name for p in stale_temporaries(tmp_path, 1, now=later)
    }
    w.abort()


def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    """prepare's workers watch their parent: after a SIGKILL of `prepare` they went on
    writing shards. A real parent, killed, and its worker pool as prepare builds it."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import multiprocessing as mp, os, sys, time\n"
            "from concurrent.futures import ProcessPoolExecutor\n"
            "from training.prepare.run import _worker_init\n"
            "if __name__ == '__main__':\n"
            "    ctx = mp.get_context('spawn')\n"
            "    pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_worker_init,\n"
            "                               initargs=(os.getpid(), ctx.SimpleQueue()))\n"
            "    pid = pool.submit(os.getpid).result()\n"
            "    open(sys.argv[1], 'w').write(str(pid))\n"
            "    pool.submit(time.sleep, 600)\n"
            "    time.sleep(600)\n",
            str(pid_file),
        ],
    )
    try:
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        for _ in range(100):  # it polls twice a second
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(child, 9)
            pytest.fail("the child outlived its killed parent by 10 s")
    finally:
        parent.kill()


def test_a_newer_index_version_is_refused(tmp_path):
    path = _write(tmp_path, _waves(1))
    index = json.loads(path.read_text())
    path.write_text(json.dumps({**index, "version": 99}))
    with pytest.raises(ValueError, match="upgrade animalclap-edge"):
        read_index(path)
