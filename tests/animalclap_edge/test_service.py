"""`animalclap-edge install-service`: the unit it writes, what it refuses, what it runs."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from animalclap_edge.bundle import demo_bundle_path
from animalclap_edge.cli import main
from animalclap_edge.service import UNIT_NAME, default_command, install_service, render_unit

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "firmware_configs" / "generic-cpu.yaml"


def _mic_library() -> str | None:
    """Why a microphone unit cannot be installed here (it checks sounddevice), or None."""
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as e:
        return f"sounddevice/PortAudio missing: {e}"
    return None


needs_mic_library = pytest.mark.skipif(_mic_library() is not None, reason=str(_mic_library()))


@pytest.fixture(autouse=True)
def _no_proxy_from_this_shell(monkeypatch):
    """install-service carries the proxy variables it runs with into the unit: a tester's
    own proxy must not change what these tests see (one with a password is refused)."""
    for scheme in ("https", "http", "no", "all"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_dry_run_prints_the_unit(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundle = demo_bundle_path()
    assert (
        main(["install-service", "--config", str(CONFIG), "--bundle", str(bundle), "--dry-run"])
        == 0
    )
    out, err = capsys.readouterr()
    s = _settings(out)
    assert s["ExecStart"] == [
        " ".join(default_command())
        + f" run --source mic --config {CONFIG} --bundle {bundle.resolve()}"
    ]
    assert default_command()[0].startswith(str(Path(sys.executable).parent))  # this venv
    assert s["Restart"] == ["always"] and s["RestartSec"] == ["10"]
    assert "OPENBLAS_NUM_THREADS=1" in s["Environment"]
    assert s["WorkingDirectory"] == [str(tmp_path.resolve())]
    assert s["User"] == [os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name]
    assert s["After"] == ["sound.target network-online.target"]
    assert s["WantedBy"] == ["multi-user.target"]
    assert "WatchdogSec" not in s  # we never send WATCHDOG=1, see service.py
    # stopped with SIGINT, `run` exits 130: a clean stop, not a failed unit
    assert s["KillSignal"] == ["SIGINT"] and s["SuccessExitStatus"] == ["130"]
    assert "dry run: nothing written" in err
    assert not list(tmp_path.iterdir())


def test_paths_with_spaces_and_percent_are_quoted_for_systemd(tmp_path):
    text = render_unit(
        config=Path("/srv/my site/edge 100%.yaml"),
        bundle=Path("/srv/b"),
        user="rec",
        working_dir=Path("/srv/my site"),
        command=["/opt/venv/bin/animalclap-edge"],
    )
    (exec_start,) = _settings(text)["ExecStart"]
    assert exec_start == (
        '/opt/venv/bin/animalclap-edge run --source mic --config "/srv/my site/edge 100%%.yaml" '
        "--bundle /srv/b"
    )
    # WorkingDirectory= resolves specifiers as ExecStart= does: `%2` made it unloadable
    text = render_unit(
        config=Path("/srv/b.yaml"),
        bundle=Path("/srv/b"),
        user="rec",
        working_dir=Path("/srv/rec site%20B"),
        command=["/opt/venv/bin/animalclap-edge"],
    )
    assert _settings(text)["WorkingDirectory"] == ["/srv/rec site%%20B"]


@needs_mic_library
def test_writes_the_unit_without_enabling_it(tmp_path, capsys):
    units = tmp_path / "units"
    argv = ["install-service", "--config", str(CONFIG), "--bundle", str(demo_bundle_path())]
    assert main([*argv, "--unit-dir", str(units), "--no-enable"]) == 0
    err = capsys.readouterr().err
    unit = units / UNIT_NAME
    assert unit.is_file()
    assert f"install-service: wrote {unit}" in err
    assert (
        "not enabled (--no-enable); to start it: systemctl daemon-reload && systemctl enable --now"
        in err
    )


@needs_mic_library  # install_service checks the live input first
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    r = install_service(config=CONFIG, bundle=demo_bundle_path(), unit_dir=tmp_path, enable=False)
    v = subprocess.run(
        ["systemd-analyze", "verify", str(r.unit_path)], capture_output=True, text=True, timeout=60
    )
    # Warnings about our file (unknown keys, bad values) start with its path; others are the host's.
    ours = [line for line in (v.stdout + v.stderr).splitlines() if str(r.unit_path) in line]
    assert v.returncode == 0 and not ours, v.stdout + v.stderr


def test_refuses_a_bad_config_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "edge.yaml"
    bad.write_text("schedule:\n  windows: ['sunrise to 09:00']\n")
    argv = ["install-service", "--config", str(bad), "--bundle", str(demo_bundle_path())]
    assert main([*argv, "--unit-dir", str(tmp_path / "u"), "--no-enable"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{bad}: schedule.windows: 'sunrise to 09:00' uses sunrise/sunset" in err
    assert not (tmp_path / "u").exists()


def test_refuses_a_missing_bundle_or_user(tmp_path, capsys):
    argv = ["install-service", "--config", str(CONFIG), "--unit-dir", str(tmp_path), "--no-enable"]
    assert main([*argv, "--bundle", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"animalclap-edge: error: bundle '{tmp_path / 'nope'}' not found: give a bundle directory or .tar\n"
    )
    assert main([*argv, "--bundle", str(demo_bundle_path()), "--user", "no-such-user-xyz"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "animalclap-edge: error: user 'no-such-user-xyz' does not exist on this machine (--user)\n"
    )
    assert not list(tmp_path.iterdir())


@needs_mic_library
def test_without_systemctl_it_says_what_to_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no systemctl to be found
    units = tmp_path / "units"
    argv = ["install-service", "--config", str(CONFIG), "--bundle", str(demo_bundle_path())]
    assert main([*argv, "--unit-dir", str(units)]) == 0
    err = capsys.readouterr().err
    assert (units / UNIT_NAME).is_file()
    assert "not enabled: no systemctl on this machine; then: systemctl daemon-reload" in err


def _fake_systemctl(tmp_path: Path, exit_code: int = 0) -> tuple[Path, Path]:
    """A `systemctl` that logs its arguments: the real one would change this machine."""
    calls = tmp_path / "calls.txt"
    exe = tmp_path / "bin" / "systemctl"
    exe.parent.mkdir()
    exe.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{calls}"\n'
        + (f'echo "Failed: Access denied" >&2\nexit {exit_code}\n' if exit_code else "")
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe, calls


def _install_with(systemctl: Path, tmp_path: Path, systemd_running: bool):
    return install_service(
        config=CONFIG,
        bundle=demo_bundle_path(),
        user=pwd.getpwuid(os.getuid()).pw_name,  # named: as root, no warning to count
        unit_dir=tmp_path / "units",
        systemctl=str(systemctl),
        systemd_running=systemd_running,
    )


@needs_mic_library
def test_enables_and_starts_it_when_systemd_runs(tmp_path):
    exe, calls = _fake_systemctl(tmp_path)
    r = _install_with(exe, tmp_path, systemd_running=True)
    assert r.ok
    assert calls.read_text().splitlines() == ["daemon-reload", f"enable --now {UNIT_NAME}"]
    assert r.done[1:3] == [
        "ran `systemctl daemon-reload`",
        f"ran `systemctl enable --now {UNIT_NAME}`",
    ]
    # Not running systemd (a container, a chroot): written, not enabled, nothing run.
    calls.unlink()
    r = _install_with(exe, tmp_path, systemd_running=False)
    assert r.ok and not calls.exists()
    assert r.not_done[0].startswith("not enabled: systemd is not running this machine")


@needs_mic_library
def test_a_failing_systemctl_is_reported_on_one_line(tmp_path):
    exe, calls = _fake_systemctl(tmp_path, exit_code=1)
    r = _install_with(exe, tmp_path, systemd_running=True)
    assert not r.ok
    assert calls.read_text().splitlines() == ["daemon-reload"]  # stopped at the first failure
    (line,) = r.not_done
    assert line.startswith(
        "`systemctl daemon-reload` failed: Failed: Access denied; fix that, then: "
    )


def test_a_named_pipe_source_needs_an_absolute_path_and_its_rate(tmp_path, capsys):
    bundle = str(demo_bundle_path())
    base = ["install-service", "--config", str(CONFIG), "--bundle", bundle, "--dry-run"]
    assert main([*base, "--source", "/run/acl/mic.pcm", "--stdin-rate", "48000"]) == 0
    s = _settings(capsys.readouterr().out)
    assert " run --source /run/acl/mic.pcm --stdin-rate 48000 --config " in s["ExecStart"][0]
    assert main([*base, "--source", "/run/acl/mic.pcm"]) == 2
    assert "needs its rate (--stdin-rate)" in capsys.readouterr().err
    assert main([*base, "--source", "mic.pcm", "--stdin-rate", "48000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "absolute path of a named pipe" in err
    script = tmp_path / "writer.py"  # a regular file would be read once, then loop forever
    script.write_text("print()")
    assert main([*base, "--source", str(script), "--stdin-rate", "48000"]) == 2
    assert "exists and is not a named pipe" in capsys.readouterr().err


def test_a_file_the_config_needs_at_start_must_exist(tmp_path, capsys):
    """`config check` cannot know the service's folder; install-service does."""
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("messaging:\n  live:\n    enabled: true\n    token_file: live.tok\n")
    argv = ["install-service", "--config", str(cfg), "--bundle", str(demo_bundle_path())]
    argv += ["--dry-run", "--source", "/run/acl/mic.pcm", "--stdin-rate", "48000"]
    assert main([*argv, "--working-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "messaging.live.token_file live.tok: no such file" in err
    (tmp_path / "live.tok").write_text("a-long-random-token-for-the-live-view\n")
    os.chmod(tmp_path / "live.tok", 0o600)
    assert main([*argv, "--working-dir", str(tmp_path)]) == 0


def test_a_microphone_unit_needs_its_audio_library(tmp_path, capsys, monkeypatch):
    """Without sounddevice the unit would restart-loop every 10 s: refused, nothing written."""
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if not installed
    units = tmp_path / "units"
    argv = ["install-service", "--config", str(CONFIG), "--bundle", str(demo_bundle_path())]
    assert main([*argv, "--unit-dir", str(units), "--no-enable"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--source mic: live input needs sounddevice" in err
    assert not units.exists()
    assert main([*argv, "--unit-dir", str(units), "--dry-run"]) == 0  # a preview still works


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_loads_a_unit_with_percent_and_spaces_in_its_paths(tmp_path):
    wd = tmp_path / "rec site%20B"  # a URL-encoded name: %2 is no specifier, an error
    wd.mkdir()
    config = tmp_path / "conf 100%" / "edge %zone.yaml"
    config.parent.mkdir()
    shutil.copy(CONFIG, config)
    r = install_service(
        config=config,
        bundle=demo_bundle_path(),
        user=pwd.getpwuid(os.getuid()).pw_name,
        working_dir=wd,
        unit_dir=tmp_path / "units",
        enable=False,
        source="/run/acl/mic.pcm",  # no microphone library needed
        stdin_rate=48000,
    )
    v = subprocess.run(
        ["systemd-analyze", "verify", str(r.unit_path)], capture_output=True, text=True, timeout=60
    )
    out = v.stdout + v.stderr
    assert "specifier" not in out and "Invalid slot" not in out, out
    ours = [line for line in out.splitlines() if str(r.unit_path) in line]
    assert v.returncode == 0 and not ours, out


@pytest.mark.skipif(os.geteuid() != 0, reason="root's own default user")
def test_root_without_sudo_is_warned_not_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SUDO_USER", raising=False)
    root = pwd.getpwuid(0).pw_name
    argv = ["install-service", "--config", str(CONFIG), "--bundle", str(demo_bundle_path())]
    argv += ["--dry-run", "--source", "/run/acl/mic.pcm", "--stdin-rate", "48000"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert _settings(out)["User"] == [root]
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == [
        f"install-service: warning: the unit runs the recorder as root (User={root}: no "
        "--user, and no sudo from another user); give --user NAME to run it as an ordinary user"
    ]
    assert main([*argv, "--user", root]) == 0  # asked for: no warning
    assert "warning" not in capsys.readouterr().err


def test_a_secret_file_run_would_refuse_is_refused_and_the_unit_is_sandboxed(tmp_path, capsys):
    """A token file of mode 644 passed install-service, and `run` refused it: the unit
    restarted every 10 s. The unit file took the umask's mode (0666 under umask 000:
    any user could rewrite the command it runs), and it carried no sandboxing."""
    token = tmp_path / "live.tok"
    token.write_text("a-long-random-token-for-the-live-view\n")
    token.chmod(0o644)
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("messaging:\n  live:\n    enabled: true\n    token_file: live.tok\n")
    argv = ["install-service", "--config", str(cfg), "--bundle", str(demo_bundle_path())]
    argv += ["--source", "/run/acl/mic.pcm", "--stdin-rate", "48000"]
    argv += ["--working-dir", str(tmp_path), "--unit-dir", str(tmp_path / "units")]
    assert main([*argv, "--no-enable"]) == 2
    err = capsys.readouterr().err
    assert f"messaging.live.token_file: token file {token} is open to other users" in err
    assert err.count("\n") == 1 and not (tmp_path / "units").exists()
    token.chmod(0o600)
    old = os.umask(0)
    try:
        assert main([*argv, "--no-enable"]) == 0
    finally:
        os.umask(old)
    unit = tmp_path / "units" / UNIT_NAME
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    s = _settings(unit.read_text())
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["full"]
    assert s["UMask"] == ["0027"]


PROXY = "http://proxy.station.lan:3128"


def test_the_proxy_of_this_shell_is_carried_into_the_unit(capsys, monkeypatch):
    """A station whose only way out is a web proxy: `publish` by hand reached the server
    through it, the boot service went direct and failed, since the unit set no proxy."""
    monkeypatch.setenv("https_proxy", PROXY)
    monkeypatch.setenv("HTTP_PROXY", PROXY + "/100%")  # % is a specifier in a unit
    monkeypatch.setenv("no_proxy", "localhost, fe80::1%eth0")  # a space splits, % again
    argv = ["install-service", "--config", str(CONFIG), "--bundle", str(demo_bundle_path())]
    assert main([*argv, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert _settings(out)["Environment"] == [
        "OPENBLAS_NUM_THREADS=1",
        "PYTHONUNBUFFERED=1",
        f"https_proxy={PROXY}",
        f"HTTP_PROXY={PROXY}/100%%",
        '"no_proxy=localhost, fe80::1%%eth0"',
    ]
    assert (
        f"install-service: proxy: https_proxy={PROXY} carried into the unit (from this "
        "shell's environment)\n" in err
    )
    assert "install-service: proxy: no_proxy=localhost, fe80::1%eth0 carried" in err


def test_no_proxy_in_the_shell_none_in_the_unit(capsys, monkeypatch):
    monkeypatch.setenv("all_proxy", PROXY)  # urllib, the HTTP uplink, does not read it
    argv = ["install-service", "--config", str(CONFIG), "--bundle", str(demo_bundle_path())]
    assert main([*argv, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert _settings(out)["Environment"] == ["OPENBLAS_NUM_THREADS=1", "PYTHONUNBUFFERED=1"]
    assert "proxy" not in out and "proxy" not in err


def test_a_proxy_with_a_password_is_refused_not_written(tmp_path, capsys, monkeypatch):
    """Environment= is read by every user (the unit is mode 644, and `systemctl show`
    prints it), so a password there is refused, with where to put it instead."""
    monkeypatch.setenv("https_proxy", "http://ranger:s3cret@proxy.station.lan:3128")
    argv = ["install-service", "--config", str(CONFIG), "--bundle", str(demo_bundle_path())]
    argv += ["--source", "/run/acl/mic.pcm", "--stdin-rate", "48000"]
    for how in (["--unit-dir", str(tmp_path / "units"), "--no-enable"], ["--dry-run"]):
        assert main([*argv, *how]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        assert err.startswith(
            "animalclap-edge: error: https_proxy holds a user name or password, which a "
            "unit's Environment= shows to every user: install without it (unset https_proxy)"
        )
        assert f"EnvironmentFile= (systemctl edit {UNIT_NAME})" in err
        assert "s3cret" not in err
    assert not (tmp_path / "units").exists()
    monkeypatch.setenv("https_proxy", PROXY)
    monkeypatch.setenv("no_proxy", "ranger@home")  # a host list: no password to hide
    assert main([*argv, "--dry-run"]) == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_loads_a_unit_with_proxy_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("https_proxy", PROXY + "/a b%")
    monkeypatch.setenv("no_proxy", "localhost, fe80::1%eth0")
    monkeypatch.setenv("http_proxy", "")  # empty: urllib goes direct, whatever HTTP_PROXY
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    r = install_service(
        config=CONFIG,
        bundle=demo_bundle_path(),
        user=pwd.getpwuid(os.getuid()).pw_name,
        unit_dir=tmp_path / "units",
        working_dir=tmp_path,
        enable=False,
        source="/run/acl/mic.pcm",
        stdin_rate=48000,
    )
    assert "Environment=http_proxy=\n" in r.unit_text
    assert [line.split(" carried")[0] for line in r.done[1:]] == [
        f"proxy: https_proxy={PROXY}/a b%",
        "proxy: http_proxy=(empty: no proxy)",
        f"proxy: HTTP_PROXY={PROXY}",
        "proxy: no_proxy=localhost, fe80::1%eth0",
    ]
    v = subprocess.run(
        ["systemd-analyze", "verify", str(r.unit_path)], capture_output=True, text=True, timeout=60
    )
    out = v.stdout + v.stderr
    ours = [line for line in out.splitlines() if str(r.unit_path) in line]
    assert v.returncode == 0 and not ours, out
