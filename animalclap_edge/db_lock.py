"""One process per role on a database: an exclusive flock on `<db>.<role>.lock`.

Roles: `uplink` (one sender per outbox: publish.UplinkLock) and `run` (one analysing
process per database: runtime.RunLock). The kernel drops a lock when its holder dies,
so a crash leaves nothing stale; the file holds the holder's pid for the message and
is never deleted (deleting a lock file lets two holders in).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DbLock:
    """Take with `acquire` (at once, or the error `busy` makes), drop with `release`.
    Subclasses say what a busy lock and an uncreatable one mean for their role."""

    role = "database"

    def __init__(self, db: str | Path):
        self.db = Path(db)
        self.path = self.db.with_name(f"{self.db.name}.{self.role}.lock")
        self._fd: int | None = None

    def busy(self, pid: int) -> Exception:
        """The error for a lock another process holds (`pid` 0: not known)."""
        who = f"pid {pid}" if pid else "pid unknown"
        return RuntimeError(f"another {self.role} process ({who}) holds {self.path}")

    def cannot(self, why: str) -> Exception:
        """The error for a lock file that cannot be made."""
        return RuntimeError(f"{self.path}: cannot create the {self.role} lock ({why})")

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # as the store makes it
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise self.cannot(e.strerror or str(e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = int(os.read(fd, 32).decode().strip() or 0)
            except ValueError:
                pid = 0
            os.close(fd)
            raise self.busy(pid) from None
        try:  # the pid only names the holder in another's message: a full card may refuse it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock
