"""install-service refuses paths the service user cannot use: real trees, real modes.

Each verdict is also asked of the kernel: a /bin/sh started as that user (uid, gid
and groups set by subprocess, as systemd sets them) tries the same `cd`/`test`.
The trees are made by root and judged for `nobody`, so these need root.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from animalclap_edge.bundle import demo_bundle_path
from animalclap_edge.service import ServiceError, install_service
from animalclap_edge.service_access import Need, account, check

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes trees owned by root for nobody")

NOBODY = pwd.getpwnam("nobody")
PIPE = {"source": "/run/acl/mic.pcm", "stdin_rate": 48000}  # no microphone library needed


@pytest.fixture
def tree(tmp_path: Path):
    """tmp_path, reachable by nobody: pytest makes it and its base 0700."""
    changed = []
    for p in [tmp_path, *tmp_path.parents]:
        mode = p.stat().st_mode & 0o7777
        if not mode & 0o001:
            changed.append((p, mode))
            p.chmod(mode | 0o005)
    yield tmp_path
    for p, mode in reversed(changed):
        p.chmod(mode)


def _as(user: pwd.struct_passwd, script: str, *args: str, groups: tuple[str, ...] = ()) -> bool:
    """The kernel's answer: does `script` succeed for `user` with these extra groups?"""
    extra = [*os.getgrouplist(user.pw_name, user.pw_gid), *(grp.getgrnam(g).gr_gid for g in groups)]
    r = subprocess.run(
        ["/bin/sh", "-c", script, "sh", *args],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=extra,
        cwd="/",
        capture_output=True,
        timeout=30,
    )
    return r.returncode == 0


def _venv(root: Path) -> Path:
    """A venv's layout: bin/python (a real executable), a #! entry point, pyvenv.cfg."""
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib/python3.11/site-packages").mkdir(parents=True)
    shutil.copy2("/bin/true", venv / "bin/python")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    script = venv / "bin/animalclap-edge"
    script.write_text(f"#!{venv}/bin/python\nimport sys\n")
    script.chmod(0o755)
    return script


def _site(root: Path, storage: str = "") -> dict:
    """A config (with `storage` lines), a working directory with nobody's data/ in it."""
    wd = root / "wd"
    (wd / "data").mkdir(parents=True)
    wd.chmod(0o755)
    os.chown(wd / "data", NOBODY.pw_uid, NOBODY.pw_gid)
    cfg = root / "edge.yaml"
    cfg.write_text("storage:\n  database: data/detections.db\n" + storage)
    return {"config": cfg, "bundle": demo_bundle_path(), "working_dir": wd, "dry_run": True}


def _refusal(**kw) -> str:
    with pytest.raises(ServiceError) as e:
        install_service(**PIPE, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_venv_in_a_closed_home_is_refused_for_nobody_and_passes_for_root(tree):
    home = tree / "root"
    home.mkdir(mode=0o700)
    home.chmod(0o700)  # the umask may have taken bits off mkdir's mode, not added
    script = _venv(home)
    site = _site(tree)
    cmd = [str(script)]
    assert not _as(NOBODY, 'test -x "$1"', str(script))  # what the trial saw
    assert _refusal(user="nobody", command=cmd, **site) == (
        f"the service user nobody cannot enter {home} (mode 0700, owner root, group root; "
        f"on the way to the program ExecStart runs {script}): put the venv where it can, "
        "e.g. /opt/animalclap, or choose --user"
    )
    assert install_service(user="root", command=cmd, **PIPE, **site).unit_text  # root: no refusal

    home.chmod(0o750)  # a home of mode 750: still no way in for others
    assert "cannot enter" in _refusal(user="nobody", command=cmd, **site)
    home.chmod(0o751)
    assert _as(NOBODY, 'test -x "$1" && test -r "$1"', str(script))
    assert install_service(user="nobody", command=cmd, **PIPE, **site).unit_text

    (home / "venv/pyvenv.cfg").chmod(0o600)  # Python would start without the venv's packages
    assert "cannot read" in _refusal(user="nobody", command=cmd, **site)


def test_a_group_the_user_or_the_unit_has_lets_it_in(tree):
    """Primary group, a group listing the user, and the unit's SupplementaryGroups=audio."""
    shut = tree / "shut"
    shut.mkdir()
    (shut / "f").write_text("x")
    needs = [Need(shut / "f", "r", "the config", "fix it")]
    for gid, groups, ok in [
        (0, (), False),
        (NOBODY.pw_gid, (), True),  # nobody's own group
        (grp.getgrnam("audio").gr_gid, (), False),
        (grp.getgrnam("audio").gr_gid, ("audio",), True),  # as the unit adds it
    ]:
        os.chown(shut, 0, gid)
        shut.chmod(0o750)
        assert _as(NOBODY, 'test -r "$1/f"', str(shut), groups=groups) is ok
        if ok:
            assert check(needs, account("nobody", groups)) == []
        else:
            with pytest.raises(Exception, match=f"cannot enter {shut} \\(mode 0750"):
                check(needs, account("nobody", groups))


def test_owner_bits_decide_for_the_owner_even_where_others_may(tree):
    f = tree / "f"
    f.write_text("x")
    os.chown(f, NOBODY.pw_uid, 0)
    f.chmod(0o044)  # readable by group and others, not by its owner
    assert not _as(NOBODY, 'test -r "$1"', str(f))
    with pytest.raises(Exception, match=f"cannot read {f} \\(mode 0044, owner nobody"):
        check([Need(f, "r", "the config", "fix it")], account("nobody"))


def test_a_symlinked_interpreter_is_followed_to_where_it_lies(tree):
    """A venv's python is a symlink to the base interpreter, e.g. under /root/.pyenv."""
    hidden = tree / "hidden"
    (hidden / "bin").mkdir(parents=True)
    hidden.chmod(0o700)
    shutil.copy2("/bin/true", hidden / "bin/python3.11")
    script = _venv(tree)
    python = tree / "venv/bin/python"
    python.unlink()
    python.symlink_to("../../hidden/bin/python3.11")  # relative, as pyenv's venvs are not
    assert not _as(NOBODY, '"$1"', str(python))
    msg = _refusal(user="nobody", command=[str(script)], **_site(tree))
    assert msg.startswith(
        f"the service user nobody cannot enter {hidden} (mode 0700, owner root, group root; "
        f"on the way to the interpreter {python})"
    )
    hidden.chmod(0o711)
    assert _as(NOBODY, '"$1"', str(python))
    assert install_service(user="nobody", command=[str(script)], **PIPE, **_site(tree / "2"))


def test_the_database_folder_must_be_writable_and_the_config_readable(tree):
    script = _venv(tree)
    site = _site(tree / "2")
    wd, cfg = site["working_dir"], site["config"]
    kw = {"user": "nobody", "command": [str(script)], **site}
    assert _as(NOBODY, 'touch "$1/data/x" && rm "$1/data/x"', str(wd))
    assert install_service(**PIPE, **kw).unit_text
    (wd / "data").rmdir()  # `run` would make it, in a working directory owned by root
    assert not _as(NOBODY, 'mkdir "$1/data"', str(wd))
    assert _refusal(**kw) == (
        f"the service user nobody cannot write in {wd} (mode 0755, owner root, group root; "
        f"to make the database's folder {wd / 'data'}): mkdir -p {wd / 'data'} && chown nobody "
        f"{wd / 'data'}, or set storage.database elsewhere, or choose --user"
    )
    (wd / "data").mkdir()
    assert _refusal(**kw).startswith(f"the service user nobody cannot write in {wd / 'data'} (")
    os.chown(wd / "data", NOBODY.pw_uid, NOBODY.pw_gid)
    # a database a test run as root left behind: root's 0644 file in nobody's folder
    (wd / "data/detections.db").write_bytes(b"")
    (wd / "data/detections.db").chmod(0o644)
    assert _refusal(**kw).startswith(
        f"the service user nobody cannot write {wd / 'data/detections.db'} (mode 0644"
    )
    (wd / "data/detections.db").unlink()
    # the clips folder, only when clips are saved
    cfg.write_text(cfg.read_text() + "  clips_dir: clips\n  save_clips: true\n")
    assert f"cannot write in {wd} (mode 0755, owner root, group root; to make storage." in (
        _refusal(**kw)
    )
    (wd / "clips").mkdir()
    os.chown(wd / "clips", NOBODY.pw_uid, NOBODY.pw_gid)
    assert install_service(**PIPE, **kw).unit_text
    cfg.chmod(0o600)
    assert _refusal(**kw).startswith(f"the service user nobody cannot read {cfg} (mode 0600")


def test_root_runs_a_file_only_with_an_x_bit(tree):
    f = tree / "prog"
    f.write_text("#!/bin/sh\n")
    f.chmod(0o644)
    with pytest.raises(Exception, match=f"the service user root cannot run {f} "):
        check([Need(f, "x", "the program ExecStart runs", "fix it")], account("root"))


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """system.posix_acl_access in the kernel's format (version 2; tag, perm, id each)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_a_path_with_an_acl_is_named_as_not_checked(tree):
    shut = tree / "shut"
    shut.mkdir()
    shut.chmod(0o700)
    (shut / "f").write_text("x")
    none = 0xFFFFFFFF
    # user::rwx user:nobody:r-x group::--- mask::r-x other::---
    acl = _acl((1, 7, none), (2, 5, NOBODY.pw_uid), (4, 0, none), (0x10, 5, none), (0x20, 0, none))
    try:
        os.setxattr(shut, "system.posix_acl_access", acl)
    except OSError as e:
        pytest.skip(f"no POSIX ACLs on this filesystem: {e}")
    assert _as(NOBODY, 'test -r "$1/f"', str(shut))  # the ACL lets it in; the mode alone would not
    assert check([Need(shut / "f", "r", "the config", "fix")], account("nobody")) == [shut]
    # install-service says so on a line of its own, and goes on
    site = _site(tree / "site")
    shutil.move(site["config"], shut / "edge.yaml")
    site["config"] = shut / "edge.yaml"
    r = install_service(user="nobody", command=[str(_venv(tree))], **PIPE, **site)
    assert r.not_done[-1] == (
        f"not checked: {shut} has a POSIX ACL, which this check does not read; make sure "
        "nobody can use it"
    )
