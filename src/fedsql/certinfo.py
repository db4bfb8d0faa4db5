"""What a certificate says, for people: its name, role, key, issuer and validity.

``fedsql certs show`` prints :func:`describe`; nothing here reads a private key.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsql.errors import ConfigError

SERVICE_UNIT = "fedsql service"  # the OU that tells a service certificate from a connector's


def serial_hex(cert: x509.Certificate) -> str:
    """A certificate's serial number in hex (lower case, no colons), as openssl prints it."""
    return f"{cert.serial_number:x}"


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def key_kind(key: object) -> str:
    """A public key's algorithm and size, as people name it: ``EC P-256``, ``RSA 3072``."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "EC P-256", "secp384r1": "EC P-384"}.get(
            key.curve.name, f"EC {key.curve.name}"
        )
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def role(cert: x509.Certificate) -> str:
    """connector, service, coordinator, CA, or ? (from its key usage and unit)."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "CA"
    if ExtendedKeyUsageOID.SERVER_AUTH in eku:
        units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        return "service" if any(u.value == SERVICE_UNIT for u in units) else "connector"
    return "coordinator" if ExtendedKeyUsageOID.CLIENT_AUTH in eku else "?"


def read_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM (or DER) file; errors say what is wrong with the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a certificate file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        what = "PEM" if b"-----BEGIN" in data else "PEM or DER"
        raise ConfigError(
            f"{path}: not a {what} certificate (a private key or CSR? `certs show` "
            "reads .crt files)"
        ) from None


def describe(path: Path) -> str:
    """One line about a certificate: subject, role, key, issuer, validity (for the CLI)."""
    cert = read_certificate(path)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ", ".join(str(n.value) for n in sans)
    except x509.ExtensionNotFound:
        names = ""
    now = dt.datetime.now(dt.UTC)
    state = (
        "EXPIRED"
        if cert.not_valid_after_utc < now
        else "not yet valid"
        if cert.not_valid_before_utc > now
        else f"{(cert.not_valid_after_utc - now).days} days left"
    )
    return (
        f"{path}: {role(cert)} CN={common_name(cert)}"
        + (f" ({names})" if names else "")
        + f", key {key_kind(cert.public_key())}"
        + f", issued by {cert.issuer.rfc4514_string()}, valid "
        f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d} ({state})"
        f", serial {serial_hex(cert)}"
    )
