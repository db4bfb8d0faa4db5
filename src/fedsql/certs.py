"""A federation's certificates: one CA, a certificate per connector and coordinator.

Every node of a federation is authenticated by a certificate the federation's
CA signed (mutual TLS). ``fedsql certs init DIR`` makes the CA, ``fedsql certs
issue`` a node's key and certificate; nothing here prints (cli.py does).

Keys are ECDSA P-256 (fast handshakes, small signatures; accepted by every
TLS 1.2/1.3 stack gRPC uses). Private keys are written with mode 0600 and
never leave the file they are written to.

- A **connector** certificate has the connector's name as CN and as a DNS name
  (coordinators verify that name, so a connector cannot pose as another
  agency), plus the extra hosts it is reached at; extended key usage
  ``serverAuth``.
- A **service** certificate (``fedsql serve``, the analysts' Flight SQL front
  door) has the service's name as CN and DNS name plus the hosts analysts reach
  it at; ``serverAuth`` only, and its unit (OU ``fedsql service``) tells it from
  a connector's: it never names an agency.
- A **coordinator** certificate has the coordinator's identity as CN (what
  connectors list in ``allowed_coordinators`` and write in their audit logs);
  extended key usage ``clientAuth`` only, so it cannot serve as a connector.

A certificate names one thing (issue 17): ``issue`` refuses wildcard hosts, a
host that is another node's name or host (the CA directory keeps an index of
what it issued, ``issued.jsonl``), and loopback names and addresses unless
asked for with ``local=True`` (``--local``: local development, where every
connector is ``localhost``). Otherwise a connector certificate that also said
``localhost`` or ``*.gov.example`` would be accepted by a coordinator that
expects a different agency under that name.

Bring your own PKI: a CA made elsewhere (``ca.crt`` and ``ca.key`` in the CA
directory) may hold an EC, RSA (2048+) or Ed25519 key; node keys issued here are
always EC P-256 (gRPC cannot use Ed25519 node keys, see trust.py).

Revocation: ``revoke`` records a serial in ``revoked.jsonl`` and ``write_crl``
writes the CA's X.509 CRL (``ca.crl``); connectors name it in
``[connector.tls] crl`` and reload it when it changes (connectors/identity.py).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsql.certinfo import SERVICE_UNIT, common_name, describe, serial_hex
from fedsql.certnames import (
    INDEX,
    LOCAL_HOSTS,
    REVOKED,
    append_jsonl,
    check_unique,
    host_name,
    index_locked,
    is_loopback,
    read_jsonl,
    san_text,
)
from fedsql.crl import RevocationList, load_crl
from fedsql.errors import ConfigError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_CRL = "ca.crl"  # the CA's revocation list, written by write_crl
KINDS = ("connector", "coordinator", "service")
CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Issued:
    """Where a new certificate and its key were written."""

    cert: Path
    key: Path
    subject: str
    not_after: dt.datetime
    serial: str = ""  # hex, as `fedsql certs show` and `certs revoke` spell it


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


def _write_key(path: Path, key: CAKey) -> None:
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
    return Issued(cert_path, key_path, name, cert.not_valid_after_utc, serial_hex(cert))


def _digest(key: CAKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, CAKey]:
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
    if not isinstance(key, CAKey):
        raise ConfigError(
            f"{key_path}: a {type(key).__name__}; a CA key must be EC, RSA or Ed25519"
        )
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise ConfigError(f"{key_path}: an RSA key of {key.key_size} bits (2048 or more)")
    if cert.public_key() != key.public_key():
        raise ConfigError(f"{ca_dir}: {CA_CERT} and {CA_KEY} are not a pair")
    return cert, key


def issue(
    ca_dir: Path,
    kind: str,
    name: str,
    out_dir: Path,
    hosts: tuple[str, ...] = (),
    days: int = 397,
    not_before: dt.datetime | None = None,
    *,
    local: bool = False,
    not_after: dt.datetime | None = None,
) -> Issued:
    """Issue ``out_dir/NAME.crt`` and ``NAME.key`` for a connector, coordinator or service.

    ``hosts``: extra DNS names or IP addresses the connector is reached at (no
    wildcards, no other node's name, no loopback unless ``local``).
    ``local``: local development: the connector certificate also names
    ``localhost`` and ``127.0.0.1`` (a node *named* ``localhost`` is local by its name).
    ``not_before`` / ``not_after`` (tests): the validity window (default: from five
    minutes ago, for ``days``).
    """
    if kind not in KINDS:
        raise ConfigError(
            f"certificate kind must be connector, coordinator or service, not {kind!r}"
        )
    if not _NAME.match(name):
        raise ConfigError(
            f"{name!r} is not a valid node name: letters, digits, '.', '_', '-' (max 63)"
        )
    ca_cert, ca_key = _load_ca(ca_dir)
    start = not_before or (_now() - dt.timedelta(minutes=5))
    end = not_after or (start + dt.timedelta(days=days))
    if end > ca_cert.not_valid_after_utc:
        end = ca_cert.not_valid_after_utc
    if end <= start:
        raise ConfigError("the certificate would expire before it becomes valid")
    if kind in ("connector", "service"):
        local = local or is_loopback(name)
        extra: list[x509.GeneralName] = []
        for h in hosts:
            gn = host_name(h, local)
            if gn not in extra and san_text(gn) != name.lower():
                extra.append(gn)
        names: list[x509.GeneralName] = [x509.DNSName(name)]
        for gn in extra + [host_name(h, True) for h in (LOCAL_HOSTS if local else ())]:
            if gn not in names:
                names.append(gn)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH]
    else:
        if hosts:
            raise ConfigError("--host is for connector and service certificates only")
        if local:
            raise ConfigError("--local is for connector and service certificates only")
        extra = []
        names = [x509.DNSName(name)]
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    with index_locked(ca_dir) as index:
        # Loopback names (local development) belong to no one; every other name to one node.
        check_unique(index, kind, name, [g for g in extra if not is_loopback(san_text(g))])
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                        x509.NameAttribute(
                            NameOID.ORGANIZATIONAL_UNIT_NAME,
                            SERVICE_UNIT if kind == "service" else f"fedsql {kind}",
                        ),
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
                _key_usage(key_agreement=kind != "coordinator"),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        cert = builder.sign(ca_key, _digest(ca_key))
        out_dir.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
        _write_key(key_path, key)
        _write_cert(cert_path, cert)
        append_jsonl(
            ca_dir / INDEX,
            {
                "serial": serial_hex(cert),
                "kind": kind,
                "name": name,
                "hosts": [san_text(g) for g in names if san_text(g) != name.lower()],
                "not_after": cert.not_valid_after_utc.isoformat(),
                "issued": _now().isoformat(timespec="seconds"),
                "cert": str(cert_path.resolve()),
            },
        )
    return Issued(cert_path, key_path, name, cert.not_valid_after_utc, serial_hex(cert))


def _parse_serial(text: str) -> int:
    s = text.strip().lower().removeprefix("0x").replace(":", "")
    if not s or not re.fullmatch(r"[0-9a-f]+", s):
        raise ConfigError(
            f"{text!r} is neither a certificate file nor a serial number in hex "
            "(as `fedsql certs show` prints it)"
        )
    return int(s, 16)


@dataclass(frozen=True, slots=True)
class Revoked:
    """A serial revoked, and the CRL written that lists it."""

    serial: str
    name: str  # the certificate's CN when known ("" for a serial not in the index)
    crl: Path
    already: bool  # it was revoked before


def revoke(ca_dir: Path, what: str, crl: Path | None = None) -> Revoked:
    """Revoke a certificate (a PEM/DER file this CA issued, or its serial in hex)
    and write the CA's CRL (``crl``, default ``ca_dir/ca.crl``) listing it."""
    ca_cert, _ = _load_ca(ca_dir)
    path = Path(what)
    if path.is_file():
        data = path.read_bytes()
        try:
            cert = (
                x509.load_pem_x509_certificate(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data)
            )
        except ValueError:
            raise ConfigError(f"{path}: not a PEM or DER certificate") from None
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            raise ConfigError(f"{path}: not issued by the CA in {ca_dir}") from None
        serial, name = cert.serial_number, common_name(cert)
    else:
        serial = _parse_serial(what)
        known = [r for r in read_jsonl(ca_dir / INDEX) if r.get("serial") == f"{serial:x}"]
        name = str(known[0].get("name", "")) if known else ""
    done = {str(r.get("serial")) for r in read_jsonl(ca_dir / REVOKED)}
    already = f"{serial:x}" in done
    if not already:
        append_jsonl(
            ca_dir / REVOKED,
            {"serial": f"{serial:x}", "name": name, "revoked": _now().isoformat()},
        )
    return Revoked(f"{serial:x}", name, write_crl(ca_dir, crl), already)


def write_crl(ca_dir: Path, out: Path | None = None, days: int = 30) -> Path:
    """Write the CA's CRL (PEM) listing every revoked serial, valid ``days``; the file is
    replaced atomically, so a connector that reloads it never reads half of it."""
    ca_cert, ca_key = _load_ca(ca_dir)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(seconds=1))
        .next_update(now + dt.timedelta(days=days))
        # Increases with every CRL written, so a connector can refuse an older one.
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for rec in read_jsonl(ca_dir / REVOKED):
        when = dt.datetime.fromisoformat(str(rec["revoked"]))
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(str(rec["serial"]), 16))
            .revocation_date(when)
            .build()
        )
    crl = builder.sign(ca_key, _digest(ca_key))
    out = out or ca_dir / CA_CRL
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, out)
    return out


__all__ = [
    "CA_CERT",
    "KINDS",
    "Issued",
    "RevocationList",
    "Revoked",
    "common_name",
    "describe",
    "init_ca",
    "issue",
    "load_crl",
    "revoke",
    "serial_hex",
    "write_crl",
]
