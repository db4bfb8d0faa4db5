"""Bring your own PKI, and TLS failures that say which side to fix (issue 15, items 8 and 16).

Real connector processes on loopback, real certificates: an organisation's CA
made with the ``cryptography`` package (RSA, Ed25519) beside ``fedsql certs``'
own; every broken set-up is diagnosed through ``fedsql status`` and ``fedsql
query`` as subprocesses, and gRPC's own handshake logs stay out of the terminal.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import fedsql
from fedsql import certs
from fedsql.errors import ConfigError
from fedsql.local import LocalConnector, start_connector
from fedsql.service.auth import hash_password
from fedsql.trust import Signer
from tests.helpers import start_error, start_service

AGENCY = "trade"
NOW = dt.datetime.now(dt.UTC)
# Lines gRPC's C core writes by itself (e.g. "E0000 00:00:... ssl_transport_security.cc").
GRPC_LOG_MARKS = ("ssl_transport_security", "handshaker", ".cc:", "E0000", "I0000", "W0000")


def _key(kind: str):  # type: ignore[no-untyped-def]
    if kind == "rsa":
        return rsa.generate_private_key(65537, 2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def _sign(builder: x509.CertificateBuilder, key) -> x509.Certificate:  # type: ignore[no-untyped-def]
    return builder.sign(
        key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    )


def _write(d: Path, name: str, key, cert: x509.Certificate) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    crt, kp = d / f"{name}.crt", d / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    kp.chmod(0o600)
    return crt, kp


@dataclass
class OrgCA:
    """A CA an organisation made with its own tools (here: the cryptography package)."""

    dir: Path
    key: object
    cert: x509.Certificate

    @property
    def crt(self) -> Path:
        return self.dir / "ca.crt"

    def node(self, name: str, kind: str, server: bool, days: float = 30) -> tuple[Path, Path]:
        key = _key(kind)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        sans: list[x509.GeneralName] = [x509.DNSName(name), x509.DNSName("localhost")]
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        return _write(self.dir, f"{name}-{kind}", key, _sign(b, self.key))


def org_ca(d: Path, kind: str) -> OrgCA:
    d.mkdir(parents=True, exist_ok=True)
    key = _key(kind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Example Org {kind} CA")])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )
    cert = _sign(b, key)
    _write(d, "ca", key, cert)
    return OrgCA(d, key, cert)


def _data(d: Path) -> Path:
    data = d / "data"
    data.mkdir(exist_ok=True)
    (data / "people.csv").write_text("id,name\n1,ann\n2,bo\n3,cy\n")
    return data


def _agency(d: Path, cert: Path, key: Path, ca: Path, coordinator: str = "coordinator") -> Path:
    toml = d / f"{AGENCY}-{cert.stem}.toml"
    toml.write_text(
        f"""[connector]
name = "{AGENCY}"
listen = "127.0.0.1:0"
audit_log = "{toml.stem}-audit.jsonl"
allowed_coordinators = ["{coordinator}"]

[connector.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[backend]
kind = "files"
path = "{_data(d)}"
"""
    )
    return toml


def _federation(
    d: Path, address: str, tls: tuple[Path, Path, Path] | None, name: str = AGENCY, tag: str = ""
) -> Path:
    path = d / f"federation{tag}.toml"
    block = f'[[connector]]\nname = "{name}"\naddress = "{address}"\n'
    if tls is None:
        block += "insecure = true\n"
    else:
        ca, cert, key = tls
        block += f'[connector.tls]\nca = "{ca}"\ncert = "{cert}"\nkey = "{key}"\n'
    path.write_text(block)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedsql", *args], capture_output=True, text=True, timeout=120
    )


def _no_grpc_logs(text: str) -> None:
    for mark in GRPC_LOG_MARKS:
        assert mark not in text, text


@pytest.mark.parametrize(("ca_kind", "node_kind"), [("rsa", "rsa"), ("ed25519", "ec")])
def test_an_organisations_own_ca_works_end_to_end(
    tmp_path: Path, ca_kind: str, node_kind: str
) -> None:
    ca = org_ca(tmp_path / "org", ca_kind)
    scert, skey = ca.node(AGENCY, node_kind, server=True)
    ccert, ckey = ca.node("coordinator", node_kind, server=False)
    conn = start_connector(_agency(tmp_path, scert, skey, ca.crt))
    try:
        fed_toml = _federation(tmp_path, conn.address, (ca.crt, ccert, ckey))
        with fedsql.connect(fed_toml, user=None) as fed:
            t = fed.sql("SELECT name FROM trade.people ORDER BY id")
        assert t.column("name").to_pylist() == ["ann", "bo", "cy"]  # principals signed, verified
        r = _cli("status", "-c", str(fed_toml))
        assert r.returncode == 0 and "| up" in r.stdout, r.stdout + r.stderr
        shown = _cli("certs", "show", str(scert))
        kind = "RSA 2048" if node_kind == "rsa" else "EC P-256"
        assert f"key {kind}" in shown.stdout and "connector CN=trade" in shown.stdout
    finally:
        conn.stop()


def test_ed25519_and_short_rsa_node_keys_are_refused_saying_why(tmp_path: Path) -> None:
    ca = org_ca(tmp_path / "org", "rsa")
    scert, skey = ca.node(AGENCY, "ed25519", server=True)
    err = start_error(_agency(tmp_path, scert, skey, ca.crt))
    assert "Ed25519" in err and "gRPC's TLS" in err and "EC (P-256) or RSA" in err
    ccert, ckey = ca.node("coordinator", "ed25519", server=False)
    with pytest.raises(ConfigError, match="Ed25519"):
        Signer(ckey, "federation")
    small = tmp_path / "small.key"
    small.write_bytes(
        rsa.generate_private_key(65537, 1024).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="1024 bits .*2048"):
        Signer(small, "federation")


def test_fedsql_certs_issues_from_an_rsa_ca(tmp_path: Path) -> None:
    ca = org_ca(tmp_path / "org", "rsa")  # ca.crt and ca.key, as `certs init` lays them out
    got = certs.issue(ca.dir, "connector", AGENCY, tmp_path, local=True)
    leaf = x509.load_pem_x509_certificate(got.cert.read_bytes())
    leaf.verify_directly_issued_by(ca.cert)
    assert "issued by CN=Example Org rsa CA" in certs.describe(got.cert)


# -- TLS failures, told apart -------------------------------------------------------


@dataclass
class Pki:
    dir: Path
    ca: Path
    other_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    certs.init_ca(d / "ca")
    certs.init_ca(d / "other")
    certs.issue(d / "ca", "connector", AGENCY, d)
    certs.issue(d / "ca", "connector", "health", d)
    certs.issue(d / "ca", "coordinator", "coordinator", d)
    certs.issue(d / "other", "coordinator", "coordinator", d / "foreign")
    certs.issue(d / "other", "connector", AGENCY, d / "foreign")
    past = NOW - dt.timedelta(days=3)
    certs.issue(d / "ca", "coordinator", "coordinator", d / "old", days=2, not_before=past)
    return Pki(d, d / "ca" / "ca.crt", d / "other" / "ca.crt")


@pytest.fixture(scope="module")
def tls_connector(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalConnector]:
    d = tmp_path_factory.mktemp("tlsnode")
    c = start_connector(_agency(d, pki.dir / "trade.crt", pki.dir / "trade.key", pki.ca))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def plain_connector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalConnector]:
    d = tmp_path_factory.mktemp("plainnode")
    toml = d / "trade.toml"
    toml.write_text(
        f'[connector]\nname = "{AGENCY}"\nlisten = "127.0.0.1:0"\ninsecure = true\n'
        f'audit_log = "a.jsonl"\n[backend]\nkind = "files"\npath = "{_data(d)}"\n'
    )
    c = start_connector(toml)
    yield c
    c.stop()


def _status(fed_toml: Path) -> tuple[str, str]:
    r = _cli("status", "-c", str(fed_toml), "--timeout", "3")
    assert r.returncode == 1, r.stdout + r.stderr
    _no_grpc_logs(r.stdout + r.stderr)
    assert "unreachable" not in r.stderr  # the cause is known: said instead
    for line in r.stdout.splitlines():
        assert len(line) < 140, line  # the details go below the table, not in it
    return r.stdout, r.stderr


def test_unknown_ca_says_the_connector_cert_is_not_from_the_trusted_ca(
    pki: Pki, tls_connector: LocalConnector, tmp_path: Path
) -> None:
    d = pki.dir
    fed = _federation(
        tmp_path,
        tls_connector.address,
        (pki.other_ca, d / "foreign/coordinator.crt", d / "foreign/coordinator.key"),
    )
    out, err = _status(fed)
    assert "DOWN: TLS: unknown CA" in out
    assert "not signed by the CA the federation config trusts" in err and str(pki.other_ca) in err


def test_wrong_server_name_says_which_agency_answered(
    pki: Pki, tls_connector: LocalConnector, tmp_path: Path
) -> None:
    d = pki.dir
    tls = (pki.ca, d / "coordinator.crt", d / "coordinator.key")
    fed = _federation(tmp_path, tls_connector.address, tls, name="health")
    out, err = _status(fed)
    assert "DOWN: TLS: wrong server name" in out
    assert "CN=trade" in err and "does not name 'health'" in err
    r = _cli("query", "-c", str(fed), "SELECT 1 FROM health.people")
    assert r.returncode == 1 and r.stderr.count("does not name 'health'") == 1, r.stderr
    _no_grpc_logs(r.stderr)


def test_client_certificate_refused_and_expired_say_the_coordinator_side(
    pki: Pki, tls_connector: LocalConnector, tmp_path: Path
) -> None:
    d = pki.dir
    foreign = (pki.ca, d / "foreign/coordinator.crt", d / "foreign/coordinator.key")
    out, err = _status(_federation(tmp_path, tls_connector.address, foreign, tag="1"))
    assert "DOWN: TLS: our cert refused" in out
    assert "not in the connector's client_ca" in err
    old = (pki.ca, d / "old/coordinator.crt", d / "old/coordinator.key")
    out, err = _status(_federation(tmp_path, tls_connector.address, old, tag="2"))
    assert "DOWN: TLS: our cert refused" in out and "it expired at" in err
    assert "coordinator's side" in err


def test_expired_connector_certificate_says_renew_it_there(pki: Pki, tmp_path: Path) -> None:
    past = NOW - dt.timedelta(days=3)
    got = certs.issue(pki.dir / "ca", "connector", AGENCY, tmp_path / "x", days=2, not_before=past)
    toml = _agency(tmp_path, got.cert, got.key, pki.ca)
    try:
        conn = start_connector(toml)
    except fedsql.FedSQLError as e:  # refusing to serve an expired certificate is fine too
        assert "expired" in str(e)
        return
    try:
        d = pki.dir
        fed = _federation(
            tmp_path, conn.address, (pki.ca, d / "coordinator.crt", d / "coordinator.key")
        )
        out, err = _status(fed)
        assert "DOWN: TLS: connector cert expired" in out and "renew it on the connector" in err
    finally:
        conn.stop()


def test_tls_on_one_side_only_is_named(
    pki: Pki, tls_connector: LocalConnector, plain_connector: LocalConnector, tmp_path: Path
) -> None:
    d = pki.dir
    tls = (pki.ca, d / "coordinator.crt", d / "coordinator.key")
    out, err = _status(_federation(tmp_path, plain_connector.address, tls, tag="1"))
    assert "DOWN: plaintext server" in out and "serves plaintext" in err
    out, err = _status(_federation(tmp_path, tls_connector.address, None, tag="2"))
    assert "DOWN: TLS needed" in out and "requires TLS" in err


def test_nothing_listening_and_wrong_agency_in_plaintext(
    plain_connector: LocalConnector, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    out, err = _status(_federation(tmp_path, f"127.0.0.1:{free}", None, tag="1"))
    assert "DOWN: not listening" in out and "is `fedsql connector serve` running" in err
    # issue 15 item 13: plaintext, the wrong agency's port: refused by its name
    wrong = _federation(tmp_path, plain_connector.address, None, name="health", tag="2")
    out, err = _status(wrong)
    assert "DOWN: wrong agency" in out and "is 'trade', not 'health'" in err
    r = _cli("query", "-c", str(wrong), "SELECT count(*) FROM health.people")
    assert r.returncode == 1 and "is 'trade', not 'health'" in r.stderr, r.stderr


def test_flight_sql_service_with_an_rsa_certificate_from_an_organisations_ca(
    plain_connector: LocalConnector, tmp_path: Path
) -> None:
    ca = org_ca(tmp_path / "org", "rsa")
    cert, key = ca.node("analytics", "rsa", server=True)
    (tmp_path / "alice.hash").write_text(hash_password("alice-secret-1") + "\n")
    (tmp_path / "alice.pw").write_text("alice-secret-1\n")
    cfg = _federation(tmp_path, plain_connector.address, None)
    cfg.write_text(
        cfg.read_text()
        + '[user.alice]\nroles = ["analyst"]\npassword_hash_file = "alice.hash"\n'
        + f'[service.tls]\ncert = "{cert}"\nkey = "{key}"\n'
    )
    svc = start_service(cfg, ca=ca.crt)
    try:
        r = _cli(
            "queries", "--url", svc.url, "--ca", str(ca.crt), "--user", "alice",
            "--password-file", str(tmp_path / "alice.pw"),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    finally:
        svc.stop()
