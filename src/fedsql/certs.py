"""A federation's certificates: one CA, a certificate per connector and coordinator.

Every node of a federation is authenticated by a certificate the federation's
CA signed (mutual TLS). ``fedsql certs init DIR`` makes the CA, ``fedsql certs
issue`` a node's key and certificate; nothing here prints (cli.py does).

Keys are ECDSA P-256 (fast handshakes, small signatures; accepted by every
TLS 1.2/1.3 stack gRPC uses). Private keys are written with mode 0600 and
never leave the file they are written to.

- A **connector** certificate has the connector's name as CN and as a DNS name
  (coordinators verify that name, so a connector cannot pose as another
  agency), plus ``localhost``, ``127.0.0.1`` and any extra hosts; extended key
  usage ``serverAuth``.
- A **coordinator** certificate has the coordinator's identity as CN (what
  connectors list in ``allowed_coordinators`` and write in their audit logs);
  extended key usage ``clientAuth`` only, so it cannot serve as a connector.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsql.errors import ConfigError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
KINDS = ("connector", "coordinator")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Issued:
    """Where a new certificate and its key were written."""

    cert: Path
    key: Path
    subject: str
    not_after: dt.datetime


def _key_usage(signs_certificates: bool = False, key_agreement: bool = False) -> x509.KeyUsage:
    """Signing always; certificate and CRL signing for the CA; key agreement for
    connectors (TLS servers)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)  # also when the file existed with wider permissions


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def init_ca(directory: Path, name: str = "fedsql federation CA", days: int = 3650) -> Issued:
    """Create a federation CA (``ca.crt``, ``ca.key``) in ``directory``.

    Refuses to overwrite an existing CA: re-creating it would orphan every
    certificate the federation has issued.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    for p in (cert_path, key_path):
        if p.exists():
            raise ConfigError(f"{p} already exists; a federation has one CA (remove it first)")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(signs_certificates=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return Issued(cert_path, key_path, name, cert.not_valid_after_utc)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as e:
        raise ConfigError(
            f"{e.filename}: not found; create the federation CA with `fedsql certs init {ca_dir}`"
        ) from None
    except ValueError:
        raise ConfigError(
            f"{ca_dir}: {CA_CERT}/{CA_KEY} are not a PEM certificate and key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path}: expected an EC private key")
    return cert, key


def issue(
    ca_dir: Path,
    kind: str,
    name: str,
    out_dir: Path,
    hosts: tuple[str, ...] = (),
    days: int = 397,
    not_before: dt.datetime | None = None,
) -> Issued:
    """Issue ``out_dir/NAME.crt`` and ``NAME.key`` for a connector or coordinator.

    ``hosts``: extra DNS names or IP addresses the connector is reached at.
    ``not_before`` (tests): back-date the validity window.
    """
    if kind not in KINDS:
        raise ConfigError(f"certificate kind must be connector or coordinator, not {kind!r}")
    if not _NAME.match(name):
        raise ConfigError(
            f"{name!r} is not a valid node name: letters, digits, '.', '_', '-' (max 63)"
        )
    ca_cert, ca_key = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or (_now() - dt.timedelta(minutes=5))
    end = start + dt.timedelta(days=days)
    if end > ca_cert.not_valid_after_utc:
        end = ca_cert.not_valid_after_utc
    if kind == "connector":
        names: list[x509.GeneralName] = []
        for h in (name, "localhost", "127.0.0.1", *hosts):
            try:
                gn: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(h))
            except ValueError:
                gn = x509.DNSName(h)
            if gn not in names:
                names.append(gn)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH]
    else:
        if hosts:
            raise ConfigError("--host is for connector certificates only")
        names = [x509.DNSName(name)]
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"fedsql {kind}"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            _key_usage(key_agreement=kind == "connector"),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    cert = builder.sign(ca_key, hashes.SHA256())
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return Issued(cert_path, key_path, name, cert.not_valid_after_utc)


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def describe(path: Path) -> str:
    """One line about a certificate: subject, role, issuer, validity (for the CLI)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (FileNotFoundError, ValueError):
        raise ConfigError(f"{path}: not a PEM certificate") from None
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        role = (
            "connector"
            if ExtendedKeyUsageOID.SERVER_AUTH in eku
            else "coordinator"
            if ExtendedKeyUsageOID.CLIENT_AUTH in eku
            else "?"
        )
    except x509.ExtensionNotFound:
        role = "CA"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ", ".join(str(n.value) for n in sans)
    except x509.ExtensionNotFound:
        names = ""
    now = _now()
    state = (
        "EXPIRED"
        if cert.not_valid_after_utc < now
        else "not yet valid"
        if cert.not_valid_before_utc > now
        else f"{(cert.not_valid_after_utc - now).days} days left"
    )
    return (
        f"{path}: {role} CN={common_name(cert)}"
        + (f" ({names})" if names else "")
        + f", issued by {cert.issuer.rfc4514_string()}, valid "
        f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d} ({state})"
    )
