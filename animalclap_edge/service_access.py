"""Can the service's user reach what its unit names? Permission bits, read as the kernel would.

`install-service` runs as root, for whom every path opens; the unit then runs as
another user, and a folder it cannot enter shows only as a restart every 10 s. So
each path is walked as the kernel walks it (every directory searched, symlinks
followed) and the mode bits are judged for the service user's uid and groups.
Standard library only; nothing is run as that user (no su, runuser or sudo).

POSIX ACLs are not read: a path that has one is left out and named as not checked.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

_BITS = {"r": 4, "w": 2, "x": 1}
_MAX_SYMLINKS = 40  # the kernel's limit (ELOOP)


class AccessError(Exception):
    """The service user cannot use a path; `str(e)` is one line naming it and the fix."""


@dataclass(frozen=True)
class Account:
    """Whom the unit runs as: the uid and every group systemd gives it."""

    name: str
    uid: int
    gids: frozenset[int]


def account(user: str, extra_groups: list[str] | tuple[str, ...] = ()) -> Account:
    """`user`'s uid and groups: its primary group, the groups that list it, and
    `extra_groups` (the unit's SupplementaryGroups=). Raises KeyError for no such user."""
    pw = pwd.getpwnam(user)
    # getgrouplist asks NSS as systemd's initgroups() does, LDAP groups included
    gids = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    for name in extra_groups:
        # a unit naming a missing group does not start: the caller leaves those out
        with contextlib.suppress(KeyError):
            gids.add(grp.getgrnam(name).gr_gid)
    return Account(pw.pw_name, pw.pw_uid, frozenset(gids))


@dataclass(frozen=True)
class Need:
    """`path` must allow `want` ("r", "rw", "rx", "wx", "x") to the service user.

    `what` names the path in the message ("the config"), `fix` says what to do.
    `create`: the path may not exist yet (a folder `run` makes): then its nearest
    existing ancestor must allow writing into it instead.
    """

    path: Path
    want: str
    what: str
    fix: str
    create: bool = False


def _walk(path: Path) -> tuple[list[Path], Path]:
    """The directories the kernel searches to reach `path`, in order, and where it lands.

    Symlinks are followed component by component: a link's own directory and
    everything on its target's way must be searchable, as in path resolution(7).
    """
    searched: list[Path] = []
    parts = list(Path(os.path.abspath(path)).parts[1:])
    cur, hops = Path("/"), 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if cur not in searched:
            searched.append(cur)
        if name == "..":
            cur = cur.parent
            continue
        nxt = cur / name
        if nxt.is_symlink():
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
            target = Path(os.readlink(nxt))
            if target.is_absolute():
                cur = Path("/")
                parts = list(target.parts[1:]) + parts
            else:
                parts = list(target.parts) + parts
        else:
            cur = nxt
    return searched, cur


def _has_acl(path: Path) -> bool:
    try:
        return "system.posix_acl_access" in os.listxattr(path, follow_symlinks=False)
    except (OSError, AttributeError):  # no xattr support here: no ACL either
        return False


def _missing(st: os.stat_result, who: Account, want: str) -> str:
    """The bits of `want` the mode denies `who` ("" when all are granted)."""
    if who.uid == 0:
        # root overrides read/write/search, but runs a file only with some x bit set
        if "x" in want and not stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o111:
            return "x"
        return ""
    # one class only, owner before group before other: an owner denied by the owner
    # bits is denied even where the group or other bits would allow it
    if st.st_uid == who.uid:
        bits = st.st_mode >> 6
    elif st.st_gid in who.gids:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return "".join(c for c in want if not bits & _BITS[c])


def _verb(missing: str, is_dir: bool) -> str:
    if is_dir:
        return "enter" if "x" in missing else "write in" if "w" in missing else "list"
    return "read" if "r" in missing else "write" if "w" in missing else "run"


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"owner {user}, group {group}"


def _refuse(
    who: Account, path: Path, st: os.stat_result, missing: str, need: Need, to: str
) -> AccessError:
    why = f"mode {stat.S_IMODE(st.st_mode):04o}, {_owner(st)}"
    if path != Path(os.path.abspath(need.path)):
        why += f"; {to} {need.what} {need.path}"
    verb = _verb(missing, stat.S_ISDIR(st.st_mode))
    return AccessError(f"the service user {who.name} cannot {verb} {path} ({why}): {need.fix}")


def check(needs: list[Need], who: Account) -> list[Path]:
    """Raise AccessError for the first path in `needs` that `who` cannot use as asked.

    Returns the paths left unchecked because they have a POSIX ACL, whose entries
    this does not read (the mode's group bits are then only the ACL's mask).
    """
    unchecked: list[Path] = []

    def allowed(path: Path, want: str, need: Need, to: str = "on the way to") -> None:
        if who.uid != 0 and _has_acl(path):  # root's access ignores ACLs as it does modes
            if path not in unchecked:
                unchecked.append(path)
            return
        st = os.stat(path)
        if missing := _missing(st, who, want):
            raise _refuse(who, path, st, missing, need, to)

    for need in needs:
        target, want = Path(need.path), need.want
        if need.create:
            while not os.path.lexists(target) and target != target.parent:
                target, want = target.parent, "wx"  # `run` makes the rest of the path
        try:
            searched, final = _walk(target)
            for d in searched:
                allowed(d, "x", need)
            if need.create and not final.is_dir():
                raise AccessError(f"{need.what} {need.path}: {final} is not a folder: {need.fix}")
            allowed(final, want, need, "to make" if target != Path(need.path) else "for")
        except AccessError:
            raise
        except OSError as e:
            raise AccessError(f"{need.what} {need.path}: {e.strerror or e}") from None
        if "w" in want and os.statvfs(final).f_flag & os.ST_RDONLY:  # root included
            verb = "write in" if final.is_dir() else "write"
            raise AccessError(
                f"the service user {who.name} cannot {verb} {final} (a read-only "
                f"filesystem; {need.what} {need.path}): {need.fix}"
            )
    return unchecked


def interpreter_needs(command: list[str], fix: str) -> list[Need]:
    """What running `command` reads and executes: the program, the interpreter of a
    `#!` script (a script must be readable as well as executable), and the venv's
    pyvenv.cfg and site-packages that interpreter starts from."""
    needs: list[Need] = []
    program, what = Path(command[0]), "the program ExecStart runs"
    for _ in range(4):  # the kernel follows at most 4 levels of #! interpreters
        try:
            with open(program, "rb") as f:
                head = f.read(256)
        except OSError:
            head = b""
        if not head.startswith(b"#!"):
            needs.append(Need(program, "x", what, fix))
            break
        needs.append(Need(program, "rx", what, fix))
        words = head[2:].split(b"\n", 1)[0].split()
        if not words:
            break
        program, what = Path(os.fsdecode(words[0])), "the interpreter"
    # Python finds its venv by pyvenv.cfg beside or above the path it was started by,
    # unresolved; without it the venv's packages are missing
    for venv in (program.parent, program.parent.parent):
        cfg = venv / "pyvenv.cfg"
        if cfg.is_file():
            needs.append(Need(cfg, "r", "the venv's pyvenv.cfg", fix))
            for site in sorted(venv.glob("lib/python3*/site-packages")):
                needs.append(Need(site, "rx", "the venv's packages", fix))
            break
    return needs


def tree_needs(root: Path, what: str, fix: str) -> list[Need]:
    """A folder and everything in it readable (a bundle: small, every file is read)."""
    if not root.is_dir():
        return [Need(root, "r", what, fix)]
    needs = [Need(root, "rx", what, fix)]
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        needs += [Need(base / d, "rx", what, fix) for d in sorted(dirnames)]
        needs += [Need(base / f, "r", what, fix) for f in sorted(filenames)]
    return needs


def database_needs(database: Path, fix: str) -> list[Need]:
    """The database's folder writable (SQLite's journal, the lock files, the backup
    are made beside it) and the files of it that already exist writable too: a
    database made by a test run as root is root's 0644."""
    needs = [Need(database.parent, "wx", "the database's folder", fix, create=True)]
    if database.parent.is_dir():
        for p in [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]:
            if p.exists():
                needs.append(Need(p, "rw", "the database", fix))
        needs += [
            Need(p, "rw", "the database's lock", fix)
            for p in sorted(database.parent.glob(f"{glob.escape(database.name)}.*.lock"))
        ]
    return needs
