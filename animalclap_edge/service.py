"""A systemd unit that runs the recorder at boot and restarts it when it stops.

`animalclap-edge install-service` writes the unit, then enables and starts it when
systemd runs this machine. Standard library only: this runs on the recorder.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from animalclap_edge import service_access as access
from animalclap_edge.secret_files import secret_problems
from animalclap_edge.service_access import AccessError

if TYPE_CHECKING:
    from animalclap_edge.config import StorageConfig

UNIT_NAME = "animalclap-edge.service"
DEFAULT_UNIT_DIR = "/etc/systemd/system"
RESTART_SEC = 10
# What the HTTP uplink's urllib reads (lower case first), carried from the shell that runs
# install-service: a service gets nothing of a login's environment, so without these a
# station whose only way out is a web proxy has a recorder that `publish` reaches the
# server from and a boot service that does not. Not all_proxy: urllib ignores it.
PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY")


class ServiceError(Exception):
    """The service cannot be installed as asked; `str(e)` is one line saying why."""


def _quote(arg: str) -> str:
    """One ExecStart argument: % and $ are systemd specifiers/variables, spaces split words."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if any(c in arg for c in " \t\"\\'"):
        arg = '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def _unit_path(path: Path) -> str:
    """A path as the value of WorkingDirectory= and the like, which systemd also runs
    through specifier expansion (a lone % makes the unit fail to load); no quoting."""
    return str(path).replace("%", "%%")


def _environment(name: str, value: str) -> str:
    """One Environment= assignment: systemd expands specifiers there (% is written %%),
    not $; whitespace would split it and quotes and backslashes are unquoted, so such an
    assignment is quoted whole, with C-style escapes (systemd.syntax's "Quoting")."""
    assignment = f"{name}={value}".replace("%", "%%")
    if any(c in assignment for c in " \t\"\\'"):
        assignment = '"' + assignment.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"Environment={assignment}"


def proxy_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The proxy variables set in `environ` (default: this process's), to carry into the
    unit; an empty one too, since urllib reads an empty https_proxy as "no proxy" even
    where HTTPS_PROXY is set.

    Raises ServiceError for a proxy URL with a user name or password: a unit's
    Environment= lines are readable by every user, from the unit file (mode 644, as
    _install writes it) and over D-Bus (`systemctl show`), so writing the unit 600
    would not hide them either; a file of mode 600 named by EnvironmentFile= does.
    """
    environ = os.environ if environ is None else environ
    carried = {name: environ[name] for name in PROXY_VARIABLES if name in environ}
    for name, value in carried.items():
        if any(c < " " or c == "\x7f" for c in value):  # a newline would end the line
            raise ServiceError(f"{name}: a control character in its value; fix {name}")
        authority = value.split("://", 1)[-1].split("/", 1)[0]
        if name.lower() != "no_proxy" and "@" in authority:
            raise ServiceError(
                f"{name} holds a user name or password, which a unit's Environment= shows "
                f"to every user: install without it (unset {name}), then put {name}=... "
                "in a root-owned file of mode 600 and name that file in EnvironmentFile= "
                f"(systemctl edit {UNIT_NAME})"
            )
    return carried


def default_command() -> list[str]:
    """How systemd should start this same installation of animalclap-edge.

    The console script beside this interpreter when there is one (a readable `ps`
    line), else `python -m animalclap_edge`; both use this virtualenv, not
    whatever `animalclap-edge` is first on root's PATH.
    """
    script = Path(sys.executable).parent / "animalclap-edge"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "animalclap_edge"]


def render_unit(
    *,
    config: Path,
    bundle: Path,
    user: str,
    working_dir: Path,
    command: list[str] | None = None,
    groups: list[str] | None = None,
    restart_sec: int = RESTART_SEC,
    source: str = "mic",
    stdin_rate: int | None = None,
    environment: Mapping[str, str] | None = None,
) -> str:
    """The text of the unit file; paths must already be absolute. `environment`: more
    variables for the service (the proxy, from `proxy_environment`)."""
    argv = [
        *(command or default_command()),
        "run",
        "--source",
        source,
        *(["--stdin-rate", str(stdin_rate)] if stdin_rate else []),
        "--config",
        str(config),
        "--bundle",
        str(bundle),
    ]
    lines = [
        "# Written by `animalclap-edge install-service`; rerun it rather than editing.",
        "[Unit]",
        "Description=AnimalCLAP Edge recorder (live species detection)",
        # Ordering only, no Wants=: a recorder without network must still start; the
        # MQTT uplink retries on its own once the network comes up.
        "After=sound.target network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
    ]
    if groups:
        # The input device nodes belong to "audio"; a system service gets no login seat.
        lines.append(f"SupplementaryGroups={' '.join(groups)}")
    lines += [
        f"WorkingDirectory={_unit_path(working_dir)}",
        "Environment=OPENBLAS_NUM_THREADS=1",
        # Detection lines reach the journal as they happen, not when a buffer fills.
        "Environment=PYTHONUNBUFFERED=1",
        *(_environment(name, value) for name, value in (environment or {}).items()),
        f"ExecStart={' '.join(_quote(a) for a in argv)}",
        "Restart=always",
        f"RestartSec={restart_sec}",
        # Stop with Ctrl-C's signal: `run` closes its recording, uplink and database on
        # KeyboardInterrupt, whatever it does with SIGTERM.
        "KillSignal=SIGINT",
        # ... after which it exits 130, as a shell reports Ctrl-C: a clean stop, not a failure
        "SuccessExitStatus=130",
        "TimeoutStopSec=30",
        # Sandboxing that leaves a recorder's work alone: the microphone (/dev/snd), the
        # GPU (/dev/nvhost*, /dev/nvidia*), a FIFO in /tmp, the database wherever it is.
        # Not ProtectSystem=strict or ProtectHome: the database and clips may be anywhere.
        "NoNewPrivileges=yes",
        "ProtectSystem=full",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        # the database, its backup and clips readable by the unit's group, not every user
        "UMask=0027",
        # No WatchdogSec=: the runtime does not send sd_notify(WATCHDOG=1), so systemd
        # would kill a healthy recorder every WatchdogSec. Restart=always covers exits.
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def _default_user() -> str:
    # Under sudo the unit should run as the person who ran sudo, not as root.
    return os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name


def _groups_for_audio() -> list[str]:
    try:
        grp.getgrnam("audio")
    except KeyError:  # SupplementaryGroups= naming a missing group stops the unit starting
        return []
    return ["audio"]


@dataclass
class InstallReport:
    unit_path: Path | None  # None on a dry run
    unit_text: str
    done: list[str] = field(default_factory=list)  # what was done, one line each
    not_done: list[str] = field(default_factory=list)  # what was not, and why / how
    ok: bool = True


def install_service(
    *,
    config: str | os.PathLike,
    bundle: str | os.PathLike,
    user: str | None = None,
    unit_dir: str | os.PathLike = DEFAULT_UNIT_DIR,
    working_dir: str | os.PathLike | None = None,
    dry_run: bool = False,
    enable: bool = True,
    systemctl: str | None = None,
    systemd_running: bool | None = None,
    source: str = "mic",
    stdin_rate: int | None = None,
    command: list[str] | None = None,
) -> InstallReport:
    """Validate the config and bundle, write the unit, and enable it where possible.

    `systemctl` (path) and `systemd_running` default to what this machine has; the
    service is enabled only when both are there and `enable` is set. `command`: what
    ExecStart runs before `run` (default: this installation, `default_command()`).
    """
    from animalclap_edge.bundle import load_bundle
    from animalclap_edge.config import load_config

    config_path = Path(config).expanduser().resolve()
    bundle_path = Path(bundle).expanduser().resolve()
    from animalclap_edge.sources import SourceError, import_sounddevice, is_mic

    if not is_mic(source):
        # a named pipe fed by a capture service (arecord): it may not exist yet
        if not Path(source).is_absolute():
            raise ServiceError(
                f"--source {source!r}: give 'mic', 'mic:DEVICE' or the absolute path of a "
                "named pipe of raw PCM"
            )
        if not stdin_rate:
            raise ServiceError(f"--source {source}: a named pipe needs its rate (--stdin-rate)")
        from animalclap_edge.sources import is_fifo

        if Path(source).exists() and not is_fifo(Path(source)):
            raise ServiceError(
                f"--source {source}: exists and is not a named pipe; a service records from "
                "'mic' or a pipe (mkfifo) that a capture process writes"
            )
    cfg = load_config(config_path)  # ConfigError: one line per problem, naming file and key
    if not bundle_path.exists():
        raise ServiceError(f"bundle '{bundle}' not found: give a bundle directory or .tar")
    load_bundle(bundle_path)  # a corrupt bundle would only crash-loop the service
    chosen, user = user, user or _default_user()
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ServiceError(f"user '{user}' does not exist on this machine (--user)") from None
    warnings = []
    if chosen is None and uid == 0:  # an explicit --user root is a choice, not an accident
        warnings.append(
            f"warning: the unit runs the recorder as root (User={user}: no --user, and no "
            "sudo from another user); give --user NAME to run it as an ordinary user"
        )
    # the arguments first, then what this machine lacks: a wrong path is named even here
    if is_mic(source) and not dry_run:
        try:  # the unit would otherwise restart-loop every 10 s on a missing library
            import_sounddevice()
        except SourceError as e:
            raise ServiceError(f"--source {source}: {e}") from None
    wd = Path(working_dir or Path.cwd()).expanduser().resolve()
    if not wd.is_dir():
        raise ServiceError(f"working directory '{wd}' is not a folder")
    # files the config names that `run` opens at start: missing, the unit would loop
    needed = []
    if cfg.messaging.live.enabled and cfg.messaging.live.token_file:
        needed.append(("messaging.live.token_file", cfg.messaging.live.token_file))
    if cfg.messaging.mqtt.enabled and cfg.messaging.mqtt.password_file:
        needed.append(("messaging.mqtt.password_file", cfg.messaging.mqtt.password_file))
    if cfg.messaging.http.enabled and cfg.messaging.http.token_file:
        needed.append(("messaging.http.token_file", cfg.messaging.http.token_file))
    for key, name in needed:
        if not (wd / Path(name).expanduser()).is_file():  # relative to the unit's folder
            raise ServiceError(
                f"{config_path}: {key} {name}: no such file (from {wd}); the service would "
                "restart every 10 s"
            )
    if problems := secret_problems(cfg, wd):  # what `run` refuses, or records without
        raise ServiceError(f"{config_path}: {'; '.join(problems)}")
    proxies = proxy_environment()  # before anything is written: one may hold a password
    carried = [
        f"proxy: {name}={value or '(empty: no proxy)'} carried into the unit (from this "
        "shell's environment)"
        for name, value in proxies.items()
    ]
    command = command or default_command()
    groups = _groups_for_audio()
    try:
        unchecked = check_access(
            user,
            groups,
            wd,
            command,
            config_path,
            bundle_path,
            needed,
            cfg.storage,
            source=None if is_mic(source) else Path(source),
        )
    except AccessError as e:
        raise ServiceError(str(e)) from None
    warnings += [
        f"not checked: {p} has a POSIX ACL, which this check does not read; make sure "
        f"{user} can use it"
        for p in unchecked
    ]
    text = render_unit(
        config=config_path,
        bundle=bundle_path,
        user=user,
        working_dir=wd,
        command=command,
        groups=groups,
        source=source,
        stdin_rate=stdin_rate,
        environment=proxies,
    )
    report = _install(text, unit_dir, dry_run, enable, systemctl, systemd_running, carried)
    report.not_done += warnings  # after the outcome, whatever it was
    return report


def check_access(
    user: str,
    groups: list[str],
    working_dir: Path,
    command: list[str],
    config: Path,
    bundle: Path,
    files: list[tuple[str, str]],
    storage: StorageConfig,
    source: Path | None = None,
) -> list[Path]:
    """Raise AccessError unless `user` (with the unit's `groups`) can enter the working
    directory, run `command`, read the config, the bundle, `files` (config key, path
    relative to the working directory) and the named pipe `source` if it exists yet,
    and write the database's (and clips') folder.

    Returns the paths not checked for having a POSIX ACL.
    """
    who = access.account(user, groups)
    other = "or choose --user"
    venv = f"put the venv where it can, e.g. /opt/animalclap, {other}"
    needs = [
        access.Need(
            working_dir, "x", "the working directory", f"give a --working-dir it can enter, {other}"
        )
    ]
    needs += access.interpreter_needs(command, venv)
    if command == default_command():  # the package this venv imports, wherever it lies
        import animalclap_edge

        needs.append(access.Need(Path(animalclap_edge.__file__).parent, "rx", "the package", venv))
    place = f"put it where {user} can read it (or change its permissions), {other}"
    needs.append(access.Need(config, "r", "the config", place))
    needs += access.tree_needs(bundle, "the bundle", place)
    for key, name in files:
        path = working_dir / Path(name).expanduser()
        needs.append(
            access.Need(path, "r", key, f"chown {user} {path} (it may stay 0600), {other}")
        )
    if source is not None and source.exists():  # else its capture service makes it later
        needs.append(access.Need(source, "r", "--source", place))

    # `run` resolves these against its working directory, and makes missing folders
    def own(folder: Path, key: str) -> str:
        mk = "" if folder.is_dir() else f"mkdir -p {folder} && "
        return f"{mk}chown {user} {folder}, or set {key} elsewhere, {other}"

    db = working_dir / storage.database
    needs += access.database_needs(db, own(db.parent, "storage.database"))
    if storage.save_clips and storage.clips_dir:
        clips = working_dir / storage.clips_dir
        fix = own(clips, "storage.clips_dir")
        needs.append(access.Need(clips, "wx", "storage.clips_dir", fix, create=True))
    return access.check(needs, who)


def _install(
    text: str,
    unit_dir: str | os.PathLike,
    dry_run: bool,
    enable: bool,
    systemctl: str | None,
    systemd_running: bool | None,
    carried: list[str],
) -> InstallReport:
    if dry_run:
        return InstallReport(None, text, carried, ["dry run: nothing written or enabled"])

    unit_path = Path(unit_dir).expanduser() / UNIT_NAME
    try:
        unit_path.parent.mkdir(parents=True, exist_ok=True)
        unit_path.write_text(text, encoding="utf-8")
        # as systemd's own units, whatever the umask: one any user could rewrite runs
        # their command as the unit's user at the next start
        unit_path.chmod(0o644)
    except PermissionError:
        raise ServiceError(
            f"cannot write {unit_path}: permission denied (run with sudo, or use --unit-dir or --dry-run)"
        ) from None
    except OSError as e:
        raise ServiceError(f"cannot write {unit_path}: {e.strerror or e}") from None
    report = InstallReport(unit_path, text, done=[f"wrote {unit_path}", *carried])

    manual = f"systemctl daemon-reload && systemctl enable --now {UNIT_NAME}"
    if systemctl is None:
        systemctl = shutil.which("systemctl")
    if systemd_running is None:
        systemd_running = Path("/run/systemd/system").is_dir()  # sd_booted()'s test
    if not enable:
        report.not_done.append(f"not enabled (--no-enable); to start it: {manual}")
        return report
    if systemctl is None:
        report.not_done.append(f"not enabled: no systemctl on this machine; then: {manual}")
        return report
    if not systemd_running:
        report.not_done.append(f"not enabled: systemd is not running this machine; then: {manual}")
        return report
    for args in (["daemon-reload"], ["enable", "--now", UNIT_NAME]):
        cmd = [systemctl, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        shown = "systemctl " + " ".join(args)
        if r.returncode != 0:
            why = " ".join((r.stderr or r.stdout or f"exit status {r.returncode}").split())
            report.not_done.append(f"`{shown}` failed: {why}; fix that, then: {manual}")
            report.ok = False
            return report
        report.done.append(f"ran `{shown}`")
    report.done.append(f"follow it with: journalctl -u {UNIT_NAME} -f")
    return report
