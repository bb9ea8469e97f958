"""When the certificates of the MQTT uplink expire, read with the standard library.

A recorder left in a forest for months outlives a client certificate of 90 days or a
year; once it expires the broker closes every connection, and the detections stay
in the outbox until someone reads the card. `run` and `publish` say ahead of time how
long the certificates have left (publish.MqttPublisher).

Python's ssl module decodes only CA certificates it has loaded, and `cryptography`
is not a dependency of the recorder, so the validity is read from the DER itself:
Certificate -> tbsCertificate -> [version], serial, signature, issuer, validity
(notBefore, notAfter) (RFC 5280, 4.1).
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from pathlib import Path

# days before the end of a certificate from which `run` and `publish` warn at start
WARN_DAYS = 30

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


class CertError(ValueError):
    """A file that holds no certificate this module can read."""


def _tlv(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `at`."""
    if at + 2 > len(der):
        raise CertError("truncated certificate")
    tag, n = der[at], der[at + 1]
    at += 2
    if n & 0x80:  # long form: the next n & 0x7F bytes hold the length
        width = n & 0x7F
        if not 0 < width <= 4 or at + width > len(der):
            raise CertError("bad length in certificate")
        n, at = int.from_bytes(der[at : at + width], "big"), at + width
    if at + n > len(der):
        raise CertError("truncated certificate")
    return tag, at, at + n


def _time(tag: int, value: bytes) -> datetime:
    text = value.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ: 50-99 are 19xx (RFC 5280, 4.1.2.5.1)
        year = int(text[:2])
        text = f"{19 if year >= 50 else 20}{text}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise CertError(f"unexpected time tag 0x{tag:02x}")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)


def validity(der: bytes) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) of one DER certificate, in UTC."""
    tag, at, _ = _tlv(der, 0)  # Certificate
    tag2, at, _ = _tlv(der, at)  # tbsCertificate
    if tag != 0x30 or tag2 != 0x30:
        raise CertError("not an X.509 certificate")
    tag, start, end = _tlv(der, at)
    if tag == 0xA0:  # [0] version, present from v2 on
        tag, start, end = _tlv(der, end)
    for _ in range(3):  # from serialNumber on: signature, issuer, validity
        tag, start, end = _tlv(der, end)
    if tag != 0x30:
        raise CertError("no validity in certificate")
    tag, start, stop = _tlv(der, start)  # validity: SEQUENCE { notBefore, notAfter }
    before = _time(tag, der[start:stop])
    tag, start, stop = _tlv(der, stop)
    return before, _time(tag, der[start:stop])


def not_after(path: str | Path) -> datetime:
    """The end of the first certificate in a PEM file (a client certificate's own, where
    its chain follows it)."""
    blocks = _PEM.findall(Path(path).read_bytes())
    if not blocks:
        raise CertError(f"{path}: no PEM certificate in it")
    try:
        der = base64.b64decode(b"".join(blocks[0].split()), validate=True)
    except ValueError as e:
        raise CertError(f"{path}: unreadable PEM ({e})") from None
    return validity(der)[1]


def cert_end(path: str | Path) -> datetime | None:
    """`not_after`, or None for a file it cannot read (the TLS set-up reports an
    unusable file itself, naming the setting)."""
    try:
        return not_after(path)
    except (OSError, CertError):
        return None


def expiry_note(
    setting: str,
    path: str | Path,
    end: datetime,
    now: datetime | None = None,
    section: str = "messaging.mqtt",
) -> str | None:
    """A warning for the certificate in `path` (the setting `section`.`setting`), which
    ends at `end`, if it has expired or ends within WARN_DAYS; None when it has longer."""
    now = now or datetime.now(timezone.utc)
    when = end.strftime("%Y-%m-%d %H:%M UTC")
    peer = "broker" if section.endswith("mqtt") else "server"
    if end <= now:
        return (
            f"{section}.{setting} {path} expired on {when}: the {peer} will refuse "
            "every connection until it is renewed (detections wait in the outbox)"
        )
    days = (end - now).total_seconds() / 86400
    if days > WARN_DAYS:
        return None
    return (
        f"{section}.{setting} {path} expires on {when}, in {days:.0f} day(s): renew "
        "it before then, or the uplink stops there (detections wait in the outbox)"
    )
