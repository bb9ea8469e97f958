"""Files written whole or not at all: into a tagged temporary beside the target, then
renamed onto it (a rename within one file system), so a reader or a rerun never sees
one cut short by a kill, a full disk, or a second job finishing at the same moment.
The temporary is fsynced before the rename and the folder after it, so a power cut
leaves the old file or the whole new one, not a renamed file whose data never reached
the disk (ext4 and XFS may write the rename before the data)."""

from __future__ import annotations

import glob
import os
import re
import socket
import uuid
from collections.abc import Callable
from pathlib import Path


def writer_tag() -> str:
    """host-pid of this process: temporary files carry their writer's, so a rerun never
    writes into the file of a writer still running (an orphaned worker, a job on
    another machine), and can tell which of them are left by dead ones."""
    return f"{socket.gethostname()}-{os.getpid()}"


def writer_gone(tag: str) -> bool:
    """Whether the writer a `writer_tag` names has ended: only this host's processes can
    be asked; a writer on another host, or a tag that is none, counts as running."""
    host, _, pid = tag.rpartition("-")
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_whole(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)`, then tmp renamed onto `path`; a failed write leaves `path` as it
    was and no temporary. The temporary names its writer's host and pid (jobs on two
    hosts may share a pid) plus a random part (two threads of one process)."""
    for dead in dead_temporaries(path):  # a kill mid-write leaves one behind
        dead.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{writer_tag()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(path.parent)


# what follows ".<name>." in a temporary's name: the writer's tag, then write_whole's
# random part or save_final's ".old"
_TEMPORARY = re.compile(r"(?P<tag>.+-\d+)(?:\.[0-9a-f]{8})?(?:\.old)?\.tmp")


def dead_temporaries(path: Path) -> list[Path]:
    """Temporaries of `path` (".<name>.<host-pid>[...].tmp") whose writer was on this
    host and has ended: a kill mid-write leaves them; nothing else removes them."""
    prefix = f".{path.name}."
    found = []
    for p in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        m = _TEMPORARY.fullmatch(p.name[len(prefix) :])
        if m and writer_gone(m["tag"]):
            found.append(p)
    return found


def fsync(path: Path) -> None:
    """fsync a file or a folder; file systems that refuse it on folders are let be."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def process_umask() -> int:
    """This process's umask, read from /proc (Linux): setting it to read it, the only
    portable way, would change it for every thread for a moment."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
