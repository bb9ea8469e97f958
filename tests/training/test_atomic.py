"""Files written whole or not at all, and on disk before they are renamed in.

A power cut cannot be staged in a test; what can be checked is the order of the real
system calls (each still runs): the temporary's data fsynced before the rename, the
folder after it, so the rename is never on disk without the data."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from training import atomic
from training.atomic import write_whole
from training.prepare.shards import ShardWriter


@pytest.fixture
def calls(monkeypatch):
    """fsync and replace as (call, path) in the order they ran, passed through."""
    seen = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        seen.append(("replace", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def test_the_data_is_on_disk_before_the_rename_and_the_rename_after_it(tmp_path, calls):
    target = tmp_path / "report.md"
    write_whole(target, lambda tmp: tmp.write_text("whole", encoding="utf-8"))
    assert target.read_text(encoding="utf-8") == "whole"
    (_, synced), (_, tmp, dst), (_, folder) = calls
    assert synced == tmp and dst == str(target)  # the temporary's data, then the rename
    assert folder == str(tmp_path)  # then the folder holding the new name


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "catalogue.csv"
    target.write_text("old", encoding="utf-8")

    def half(tmp):
        tmp.write_text("half", encoding="utf-8")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_whole(target, half)
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["catalogue.csv"]


def test_a_shards_tar_is_on_disk_before_the_index_that_vouches_for_it(tmp_path, calls):
    writer = ShardWriter(tmp_path, 0, codec="wav")
    writer.add("a", np.zeros(4800, np.float32), {"species_id": "x"})
    index = writer.close()
    order = [c[0] + ":" + os.path.basename(c[-1]) for c in calls]
    tar_synced = order.index(f"fsync:{writer._tmp.name}")
    assert order[tar_synced + 1] == f"replace:{writer.tar_path.name}"
    index_renamed = order.index(f"replace:{index.name}")
    assert tar_synced < index_renamed
    assert order[index_renamed + 1] == f"fsync:{tmp_path.name}"
    assert json_records(index) == ["a"]


def test_folders_that_refuse_fsync_are_let_be_and_files_are_not(tmp_path, monkeypatch):
    def refuse(fd):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "fsync", refuse)
    atomic.fsync(tmp_path)  # some network file systems refuse it on folders
    (tmp_path / "f").write_text("x", encoding="utf-8")
    with pytest.raises(OSError):
        atomic.fsync(tmp_path / "f")


def json_records(index) -> list[str]:
    return [r["key"] for r in json.loads(index.read_text(encoding="utf-8"))["records"]]


@pytest.mark.parametrize("host", ["recorder-lab", "node1.cluster.example"])
def test_a_write_clears_its_targets_temporaries_that_dead_writers_left(tmp_path, monkeypatch, host):
    monkeypatch.setattr(socket, "gethostname", lambda: host)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    dead = [f".report.md.{host}-{ended}.0a1b2c3d.tmp", f".report.md.{host}-{ended}.old.tmp"]
    kept = [
        f".report.md.{host}-1.0a1b2c3d.tmp",  # pid 1 runs
        f".report.md.other-{ended}.0a1b2c3d.tmp",  # another host's: cannot be asked
        f".notes.md.{host}-{ended}.0a1b2c3d.tmp",  # another file's
        ".report.md.tmp",  # no writer's tag
    ]
    for name in dead + kept:
        (tmp_path / name).write_text("half", encoding="utf-8")
    write_whole(tmp_path / "report.md", lambda tmp: tmp.write_text("whole", encoding="utf-8"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["report.md", *kept])
