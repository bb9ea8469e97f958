"""Files that hold a secret: the broker's password, a TLS client's private key (and the
live view's token, which `live.read_token` checks further). Each must be a regular
file that no other user can read, checked alike where it is read (`run`, `publish`)
and before it is relied on (`config check`, `install-service`).

Group bits are allowed: a service account often reads its secrets through a group.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from animalclap_edge.config import EdgeConfig

# A password is short; a larger file is the wrong file (a certificate, /dev/zero).
MAX_SECRET_BYTES = 4096
# A PEM key encrypted with a passphrase: PKCS#8 and OpenSSL's traditional form.
_ENCRYPTED_PEM = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")
_PRIVATE_KEY = b"PRIVATE KEY-----"
NO_SUCH_FILE = "no such file"  # file_problem's words for a path with nothing at it


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message names the setting, the file and
    the fix."""


def file_problem(path: str | Path) -> str | None:
    """Why `path` is no regular file to read a secret from (no such file, not a regular
    file, the OS's reason), or None. Checked before opening: a FIFO blocked the read
    for good, /dev/zero filled memory."""
    try:
        st = Path(path).stat()  # follows a symlink: the target is what is read
    except FileNotFoundError:
        return NO_SUCH_FILE
    except OSError as e:
        return (e.strerror or str(e)).lower()
    return None if stat.S_ISREG(st.st_mode) else "not a regular file"


def exposure(path: str | Path) -> str | None:
    """ "is open to other users (mode 644); run: chmod 600 PATH" where other users may
    read or write the file `path` (a regular file that exists), else None."""
    mode = Path(path).stat().st_mode
    if mode & 0o007:
        return f"is open to other users (mode {mode & 0o777:o}); run: chmod 600 {path}"
    return None


def private_file_problem(path: str | Path) -> str | None:
    """Why `path` may not hold a secret (`file_problem`, then `exposure`), or None."""
    return file_problem(path) or exposure(path)


def read_secret(path: str | Path, setting: str) -> str:
    """The secret in `path`, stripped; SecretFileError naming `setting` unless it is a
    private regular file holding up to MAX_SECRET_BYTES of UTF-8 text."""
    what = "token" if setting.endswith("token_file") else "password"
    if problem := private_file_problem(path):
        raise SecretFileError(f"{setting} {path}: {problem}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise SecretFileError(f"{setting} {path}: {(e.strerror or str(e)).lower()}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretFileError(
            f"{setting} {path}: holds more than {MAX_SECRET_BYTES} bytes, not a {what}: "
            f"give the file holding the {what} alone"
        )
    try:
        secret = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"{setting} {path}: not UTF-8 text") from None
    if not secret:
        raise SecretFileError(f"{setting} {path}: is empty; write the {what} into it")
    return secret


def key_file_problem(path: str | Path, setting: str) -> str | None:
    """Why the PEM file at `path` cannot serve as an unattended TLS client's key, or None:
    a private key readable by other users, or one encrypted with a passphrase (OpenSSL
    then asks for it on the terminal, where a service has none, and a recorder in the
    field has no one to type it). A file holding no private key (a certificate whose
    key is in key_file) is not held to the mode rule."""
    if problem := file_problem(path):
        return f"{setting} {path}: {problem}"
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError as e:
        return f"{setting} {path}: {(e.strerror or str(e)).lower()}"
    if _PRIVATE_KEY not in head:
        return None
    if any(mark in head for mark in _ENCRYPTED_PEM):
        return (
            f"{setting} {path}: the private key is encrypted with a passphrase, which a "
            f"recorder cannot type; decrypt it once: openssl pkey -in {path} -out KEY.pem "
            "&& chmod 600 KEY.pem, and name KEY.pem"
        )
    if problem := exposure(path):
        return f"{setting} {path}: holds a private key and {problem}"
    return None


def secret_problems(cfg: EdgeConfig, base: Path) -> list[str]:
    """What `run` would refuse in the secret files `cfg` names that exist (relative
    paths from `base`, the folder `run` starts in): checked by `config check` and
    `install-service`, where a mode slip otherwise showed only as a unit restarting
    every 10 s. Missing files are said by their callers."""
    from animalclap_edge.live import LiveError, read_token

    mq, http, live = cfg.messaging.mqtt, cfg.messaging.http, cfg.messaging.live
    found = []

    def here(name: str) -> Path | None:
        path = base / Path(name).expanduser()
        return path if path.exists() else None

    uplinks = (("mqtt", mq, "password_file", mq.password_file),
               ("http", http, "token_file", http.token_file))  # fmt: skip
    for name, up, secret_key, secret in uplinks:
        if not up.enabled:
            continue
        if secret and (path := here(secret)):
            try:
                read_secret(path, f"messaging.{name}.{secret_key}")
            except SecretFileError as e:
                found.append(str(e))
        key = ("key_file", up.key_file) if up.key_file else ("cert_file", up.cert_file)
        if up.tls and key[1] and (path := here(key[1])):  # noqa: SIM102
            if problem := key_file_problem(path, f"messaging.{name}.{key[0]}"):
                found.append(problem)
    if live.token_file and (path := here(live.token_file)):
        try:
            read_token(path)
        except LiveError as e:
            found.append(f"messaging.live.token_file: {e}")
    return found
