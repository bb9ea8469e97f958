"""Certificate ends read from the DER (certs.py) agree with openssl's, and the warning
comes inside WARN_DAYS, for an expired one, and not otherwise."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from animalclap_edge.certs import WARN_DAYS, CertError, cert_end, expiry_note, not_after

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")


def _cert(folder, name: str, key: list[str], days: int):
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", *key, "-nodes", "-keyout", f"{name}.key",
         "-out", f"{name}.crt", "-days", str(days), "-subj", f"/CN={name}"],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    return folder / f"{name}.crt"


def _openssl_end(path) -> datetime:
    out = subprocess.run(
        [OPENSSL, "x509", "-in", str(path), "-noout", "-enddate"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return datetime.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y GMT").replace(
        tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("key", "days"),
    [
        (["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"], 3),
        (["rsa:2048"], 400),
        (["rsa:2048"], 30_000),  # past 2049: GeneralizedTime instead of UTCTime
    ],
)
def test_the_end_read_from_the_der_is_openssls(tmp_path, key, days):
    crt = _cert(tmp_path, "c", key, days)
    assert not_after(crt) == _openssl_end(crt)


def test_a_chain_file_gives_its_first_certificates_end(tmp_path):
    leaf = _cert(tmp_path, "leaf", ["rsa:2048"], 5)
    other = _cert(tmp_path, "other", ["rsa:2048"], 900)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(leaf.read_bytes() + other.read_bytes())
    assert not_after(chain) == _openssl_end(leaf)


def test_the_warning_comes_within_its_days_and_once_expired(tmp_path):
    crt = _cert(tmp_path, "c", ["rsa:2048"], 100)
    end = not_after(crt)
    assert expiry_note("cert_file", crt, end, end - timedelta(days=WARN_DAYS + 1)) is None
    soon = expiry_note("cert_file", crt, end, end - timedelta(days=12))
    assert soon == (
        f"messaging.mqtt.cert_file {crt} expires on {end:%Y-%m-%d %H:%M} UTC, in 12 day(s): "
        "renew it before then, or the uplink stops there (detections wait in the outbox)"
    )
    late = expiry_note("cert_file", crt, end, end + timedelta(seconds=1))
    assert late.startswith(f"messaging.mqtt.cert_file {crt} expired on {end:%Y-%m-%d %H:%M} UTC")


def test_a_file_without_a_certificate_is_refused_and_never_warned_of(tmp_path):
    key = tmp_path / "c.key"
    _cert(tmp_path, "c", ["rsa:2048"], 3)
    with pytest.raises(CertError, match="no PEM certificate in it"):
        not_after(key)
    broken = tmp_path / "broken.crt"
    broken.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertError, match=r"(truncated|bad length in) certificate"):
        not_after(broken)
    # the TLS set-up refuses such files in its own words; no warning besides
    assert cert_end(key) is None and cert_end(tmp_path / "no") is None
