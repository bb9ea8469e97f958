"""The MQTT uplink over TLS against a real broker: mosquitto with a private CA that
requires client certificates (as AWS IoT Core does), certificates made by openssl."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest

from animalclap_edge.config import MqttConfig
from animalclap_edge.store import DetectionStore

from .test_publish import Broker, Subscriber, _free_port, _logged, _shut, pytestmark
from .waiting import wait_until

OPENSSL = shutil.which("openssl")
pytestmark = [*pytestmark, pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")]

_LEAF = """subjectAltName=IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier=keyid
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.crt, and server/client/stranger .crt + .key: the stranger is signed by another CA."""
    d = tmp_path_factory.mktemp("pki")
    (d / "leaf.ext").write_text(_LEAF)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
            "-subj", f"/CN={ca}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d,
        )  # fmt: skip
    (d / "elsewhere.ext").write_text(_LEAF.replace("IP:127.0.0.1,DNS:localhost", "DNS:elsewhere"))
    for name, ca, days, ext in (
        ("server", "ca", "2", "leaf.ext"),
        ("client", "ca", "2", "leaf.ext"),
        ("stranger", "other-ca", "2", "leaf.ext"),
        ("expired", "ca", "-1", "leaf.ext"),  # its end before its start: expired
        ("elsewhere", "ca", "2", "elsewhere.ext"),  # names another host
    ):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", days,
                 "-extfile", ext, cwd=d)  # fmt: skip
    return d


@contextlib.contextmanager
def _tls_broker(folder: Path, pki: Path, server: str = "server"):
    """A broker with a plain listener (for the test's subscriber) and a TLS one that
    shows `server`'s certificate and requires a client certificate signed by ca.crt."""
    tls_port = _free_port()
    broker = Broker(
        folder,
        f"listener {tls_port} 127.0.0.1\ncafile {pki}/ca.crt\ncertfile {pki}/{server}.crt\n"
        f"keyfile {pki}/{server}.key\nrequire_certificate true\n",
    )
    broker.tls_port = tls_port
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tls_broker(tmp_path, pki):
    with _tls_broker(tmp_path, pki) as broker:
        yield broker


def _tls(pki: Path, port: int, **files) -> MqttConfig:
    return MqttConfig(enabled=True, host="127.0.0.1", port=port, tls=True, **files)


def test_detections_arrive_over_tls_with_a_client_certificate(tmp_path, pki, tls_broker):
    from animalclap_edge.publish import MqttPublisher

    db = _logged(tmp_path / "d.db", 20)
    sub = Subscriber(tls_broker.port, "animalclap/rec1/detections")
    cfg = _tls(
        pki,
        tls_broker.tls_port,
        ca_file=str(pki / "ca.crt"),
        cert_file=str(pki / "client.crt"),
        key_file=str(pki / "client.key"),
    )
    said: list[str] = []
    pub = MqttPublisher(db, cfg, device_id="rec1", poll_s=0.1, say=said.append).start()
    try:
        assert wait_until(lambda: len(sub.unique()) == 20, 30), pub.stats
        assert wait_until(lambda: pub.backlog() == 0, 30), pub.stats  # acknowledged
    finally:
        _shut(pub, sub)
    with DetectionStore(db) as store:
        assert sub.unique() == {d.detection_id for d in store.detections()}
    # its certificates last 2 days: said at start, and its end in every heartbeat
    for setting, name in (("cert_file", "client.crt"), ("ca_file", "ca.crt")):
        warning = f"uplink: WARNING: messaging.mqtt.{setting} {pki / name} expires on "
        assert any(line.startswith(warning) and "in 2 day(s)" in line for line in said), said
    assert pub.cert_not_after is not None and pub.cert_not_after.endswith("Z")


def test_an_expired_client_certificate_is_said_at_start_and_when_refused(tmp_path, pki, tls_broker):
    """A recorder left out longer than its certificate: the broker closes every
    connection, and the reason must reach whoever reads the log or the card."""
    from animalclap_edge.publish import MqttPublisher

    cfg = _tls(
        pki, tls_broker.tls_port, ca_file=str(pki / "ca.crt"),
        cert_file=str(pki / "expired.crt"), key_file=str(pki / "expired.key"),
    )  # fmt: skip
    said: list[str] = []
    db = _logged(tmp_path / "d.db", 1)
    pub = MqttPublisher(db, cfg, device_id="rec1", max_backoff_s=0.5, say=said.append).start()
    try:
        assert wait_until(lambda: pub.stats.connect_failures >= 1, 20)
    finally:
        pub.stop()
    start = f"uplink: WARNING: messaging.mqtt.cert_file {pki / 'expired.crt'} expired on "
    assert said[0].startswith(start) and "the broker will refuse every connection" in said[0]
    assert f"expired on {pub.cert_not_after}: renew it" in pub.stats.last_connect_error, (
        pub.stats.last_connect_error
    )
    with DetectionStore(db) as store:
        assert len(store.pending_outbox()) == 1  # kept for the renewed certificate


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("system CAs only", "set messaging.mqtt.ca_file to the CA that signed it"),
        ("another CA", "not signed by the CA in ca_file"),
        ("no client certificate", "set messaging.mqtt.cert_file and key_file"),
        ("a certificate of another CA", "does not accept the client certificate in cert_file"),
        ("plain MQTT to the TLS port", "set tls: true?"),
        ("TLS to the plain port", "is {plain} the broker's TLS port?"),
    ],
)
def test_a_failed_tls_connection_says_which_setting_to_change(
    tmp_path, pki, tls_broker, case, said
):
    """paho says "Unspecified error" for most of these, and ssl names no setting."""
    from animalclap_edge.publish import MqttPublisher

    ca, port = str(pki / "ca.crt"), tls_broker.tls_port
    cfg = {
        "system CAs only": _tls(pki, port),
        "another CA": _tls(pki, port, ca_file=str(pki / "other-ca.crt")),
        "no client certificate": _tls(pki, port, ca_file=ca),
        "a certificate of another CA": _tls(
            pki,
            port,
            ca_file=ca,
            cert_file=str(pki / "stranger.crt"),
            key_file=str(pki / "stranger.key"),
        ),
        "plain MQTT to the TLS port": MqttConfig(enabled=True, host="127.0.0.1", port=port),
        "TLS to the plain port": _tls(pki, tls_broker.port, ca_file=ca),
    }[case]
    db = _logged(tmp_path / "d.db", 1)
    pub = MqttPublisher(db, cfg, device_id="rec1", max_backoff_s=0.5).start()
    try:
        assert wait_until(lambda: pub.stats.connect_failures >= 1, 20)
    finally:
        pub.stop()
    assert said.format(plain=tls_broker.port) in pub.stats.last_connect_error
    with DetectionStore(db) as store:
        assert len(store.pending_outbox()) == 1  # kept for when it is fixed


@pytest.mark.parametrize(
    ("files", "said"),
    [
        ({"ca_file": "missing.crt"}, "messaging.mqtt.ca_file {pki}/missing.crt: no such file"),
        ({"ca_file": "ca.key"}, "messaging.mqtt.ca_file {pki}/ca.key: unusable"),
        (
            {"cert_file": "client.crt", "key_file": "server.key"},
            "messaging.mqtt.cert_file {pki}/client.crt / key_file {pki}/server.key: unusable",
        ),
        ({"cert_file": "client.crt"}, "messaging.mqtt.cert_file {pki}/client.crt: unusable"),
        (
            {"cert_file": "client.crt", "key_file": "gone.key"},
            "messaging.mqtt.key_file {pki}/gone.key: no such file",
        ),
    ],
)
def test_tls_files_that_cannot_be_used_are_refused_at_start_in_one_line(
    tmp_path, pki, files, said, capsys
):
    """A typo in a path, a key given as the CA, a key that is not the certificate's:
    refused when the uplink is made, before a connection fails for some other reason;
    and by `config check`, which said "ok" to a key given as the CA (a docs audit)."""
    import yaml

    from animalclap_edge.cli import main
    from animalclap_edge.publish import MqttPublisher, PublishError

    cfg = _tls(pki, 8883, **{k: str(pki / v) for k, v in files.items()})
    with pytest.raises(PublishError) as e:
        MqttPublisher(_logged(tmp_path / "d.db", 1), cfg, device_id="rec1")
    assert str(e.value).startswith(said.format(pki=pki)), e.value
    assert "\n" not in str(e.value)
    edge = tmp_path / "edge.yaml"
    mqtt = {"enabled": True, "host": "127.0.0.1", "port": 8883, "tls": True}
    mqtt.update({k: str(pki / v) for k, v in files.items()})
    edge.write_text(yaml.safe_dump({"messaging": {"mqtt": mqtt}}))
    capsys.readouterr()
    assert main(["config", "check", str(edge)]) == 1
    said_now = capsys.readouterr()
    assert said.format(pki=pki).rsplit(":", 1)[0] in said_now.err
    assert ": ok" not in said_now.out


@pytest.mark.timeout(60)
def test_a_client_key_others_can_read_or_with_a_passphrase_is_refused_in_one_line(tmp_path, pki):
    """A key encrypted with a passphrase made OpenSSL ask for it on the terminal, where
    `run` then hung, and under a service printed the prompt twice before "invalid
    argument"; a key any local user could read was taken without a word."""
    import os

    from animalclap_edge.publish import MqttPublisher, PublishError

    enc = tmp_path / "enc.key"
    _openssl("pkey", "-in", str(pki / "client.key"), "-out", str(enc), "-aes256",
             "-passout", "pass:secret", cwd=tmp_path)  # fmt: skip
    shared = tmp_path / "shared.key"
    shared.write_bytes((pki / "client.key").read_bytes())
    combined = tmp_path / "combined.pem"  # certificate and key in one file (key_file null)
    combined.write_bytes((pki / "client.crt").read_bytes() + shared.read_bytes())
    for f in (shared, combined):
        os.chmod(f, 0o644)
    cases = [
        ({"key_file": enc}, f"messaging.mqtt.key_file {enc}: the private key is encrypted"),
        ({"key_file": shared}, f"messaging.mqtt.key_file {shared}: holds a private key and is open to other users (mode 644); run: chmod 600 {shared}"),
        ({}, f"messaging.mqtt.cert_file {combined}: holds a private key and is open"),
    ]  # fmt: skip
    db = _logged(tmp_path / "d.db", 1)
    for files, said in cases:
        cert = combined if not files else pki / "client.crt"
        cfg = _tls(pki, 8883, cert_file=str(cert), **{k: str(v) for k, v in files.items()})
        with pytest.raises(PublishError) as e:
            MqttPublisher(db, cfg, device_id="rec1")
        assert str(e.value).startswith(said) and "\n" not in str(e.value), e.value
    os.chmod(combined, 0o600)  # the same file kept private: taken
    MqttPublisher(db, _tls(pki, 8883, cert_file=str(combined)))


@pytest.mark.parametrize(
    ("server", "said"),
    [
        ("expired", "it has expired, or this recorder's clock is ahead"),
        ("elsewhere", "it does not name 127.0.0.1: set messaging.mqtt.host"),
    ],
)
def test_a_broker_certificate_refused_for_its_dates_or_name_says_so(tmp_path, pki, server, said):
    """Both read "not signed by the CA in ca_file", which sent people to the wrong file;
    a recorder whose clock restarted in the past sees every certificate so."""
    from animalclap_edge.publish import MqttPublisher

    with _tls_broker(tmp_path, pki, server) as broker:
        cfg = _tls(
            pki, broker.tls_port, ca_file=str(pki / "ca.crt"),
            cert_file=str(pki / "client.crt"), key_file=str(pki / "client.key"),
        )  # fmt: skip
        pub = MqttPublisher(_logged(tmp_path / "d.db", 1), cfg, device_id="rec1").start()
        try:
            assert wait_until(lambda: pub.stats.connect_failures >= 1, 20)
        finally:
            pub.stop()
    assert said in pub.stats.last_connect_error, pub.stats.last_connect_error
