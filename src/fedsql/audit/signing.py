"""Node keys that sign audit evidence, and checks on the certificates behind them.

A node signs its audit lines and receipts with the private key of its own TLS
certificate (a connector's ``[connector.tls]``, a coordinator's client
certificate), so the evidence is bound to the identity the federation's CA
vouched for and no extra key has to be issued, kept or revoked. Whatever key
type a certificate holds is supported; the algorithm is named next to each
signature:

=======================  ============================================
``ecdsa-sha256``         EC P-256 or P-384, ECDSA with SHA-256, DER
``rsa-pss-sha256``       RSA of 2048 bits or more, PSS (MGF1-SHA-256,
                         salt of the digest's length): what we sign with
``rsa-pkcs1v15-sha256``  RSA, PKCS#1 v1.5 with SHA-256 (verified; signed
                         with when ``rsa_padding="pkcs1v15"``)
``ed25519``              Ed25519 (RFC 8032)
=======================  ============================================

Measured on the project's 2-core VM (cryptography 50, OpenSSL 3): a signature
costs 32 µs with P-256, 35 µs with Ed25519, 250 µs with P-384, 0.3 / 0.9 /
1.5 ms with RSA 2048 / 3072 / 4096; verifying 78 / 120 / 550 / 33-87 µs.
Keys are read here and never logged, printed or sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from fedsql.errors import ConfigError

ALGORITHMS = ("ecdsa-sha256", "rsa-pss-sha256", "rsa-pkcs1v15-sha256", "ed25519")
EC_CURVES = ("secp256r1", "secp384r1")
MIN_RSA_BITS = 2048
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
# Verify also accepts the salt length a signer chose (PSS.AUTO), e.g. an HSM's maximum.
_PSS_ANY = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
log = logging.getLogger(__name__)


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path} ({e.strerror or e})") from None
    if not data.strip():
        raise ConfigError(f"{what}: {path} is empty")
    return data


def fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER encoding: how logs and receipts name it."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_cert(data: str | bytes) -> x509.Certificate:
    """The first certificate of a PEM text or a DER blob; ValueError if none."""
    raw = data.encode("ascii") if isinstance(data, str) else data
    if raw.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificates(raw)[0]
    return x509.load_der_x509_certificate(raw)


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def names(cert: x509.Certificate) -> frozenset[str]:
    """The names a certificate vouches for: its common name and DNS subject alt names."""
    out = {common_name(cert)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        out |= set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return frozenset(n for n in out if n)


def algorithm_for(key: object, rsa_padding: str = "pss") -> str:
    """The algorithm a key of this type signs with; ConfigError for unsupported keys."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            raise ConfigError(f"EC curve {key.curve.name} is not supported (P-256 or P-384)")
        return "ecdsa-sha256"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"an RSA key of {key.key_size} bits is too short (2048 or more)")
        return "rsa-pkcs1v15-sha256" if rsa_padding == "pkcs1v15" else "rsa-pss-sha256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    raise ConfigError(f"a {type(key).__name__} cannot sign audit evidence (EC, RSA or Ed25519)")


class NodeKey:
    """A node's private key and the certificate that vouches for it."""

    def __init__(self, key: PrivateKey, cert: x509.Certificate, rsa_padding: str = "pss") -> None:
        self.alg = algorithm_for(key, rsa_padding)
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise ConfigError(f"the key does not belong to certificate '{common_name(cert)}'")
        self._key = key
        self.cert = cert
        self.cert_pem = cert_pem(cert)
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.fingerprint = fingerprint(cert)
        self.name = common_name(cert)

    @classmethod
    def load(cls, key_path: Path, cert_path: Path, where: str) -> NodeKey:
        try:
            key = serialization.load_pem_private_key(_read(key_path, where), password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"{where}: {key_path} is not an unencrypted PEM key") from None
        try:
            cert = load_cert(_read(cert_path, where))
        except ValueError:
            raise ConfigError(f"{where}: {cert_path} is not a PEM certificate") from None
        if not isinstance(
            key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        ):
            raise ConfigError(f"{where}: {key_path}: keys of this type cannot sign evidence")
        try:
            return cls(key, cert)
        except ConfigError as e:
            raise ConfigError(f"{where}: {key_path}: {e}") from None

    def sign(self, data: bytes) -> bytes:
        k = self._key
        if isinstance(k, ec.EllipticCurvePrivateKey):
            return k.sign(data, ec.ECDSA(hashes.SHA256()))
        if isinstance(k, rsa.RSAPrivateKey):
            pad = padding.PKCS1v15() if self.alg == "rsa-pkcs1v15-sha256" else _PSS
            return k.sign(data, pad, hashes.SHA256())
        return k.sign(data)

    def __repr__(self) -> str:  # never show the key
        return f"NodeKey({self.name!r}, {self.alg}, <private key>)"


class KeyFiles:
    """A node key read from its files, and read again when they change (a renewed
    certificate, issue 17), so that what signs next is what the files hold now;
    the log then carries the new certificate where it starts signing. The files
    are looked at (stat) at most every ``check_seconds``; a key and certificate
    that do not match (half-way through a rotation) keep the previous pair."""

    def __init__(self, key_path: Path, cert_path: Path, where: str, check_seconds: float = 5.0):
        self.paths = (key_path, cert_path)
        self.where = where
        self.check_seconds = check_seconds
        self._key = NodeKey.load(key_path, cert_path, where)
        self._stamp = self._files()
        self._next = time.monotonic() + check_seconds
        self._lock = threading.Lock()

    def _files(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in map(os.stat, self.paths))
        except OSError:
            return None

    def current(self) -> NodeKey:
        if time.monotonic() < self._next:
            return self._key
        with self._lock:
            self._next = time.monotonic() + self.check_seconds
            stamp = self._files()
            if stamp is not None and stamp != self._stamp:
                try:
                    self._key = NodeKey.load(*self.paths, self.where)
                    self._stamp = stamp
                except ConfigError as e:
                    log.warning("%s: keeping the previous signing key: %s", self.where, e)
        return self._key

    def __repr__(self) -> str:
        return f"KeyFiles({self._key!r})"


SigningKey = NodeKey | KeyFiles


def current(key: SigningKey | None) -> NodeKey | None:
    """The key that signs now."""
    return key.current() if isinstance(key, KeyFiles) else key


def verify_signature(cert: x509.Certificate, alg: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``data`` verifies with ``cert``'s key under ``alg``."""
    pub = cert.public_key()
    try:
        if alg == "ecdsa-sha256" and isinstance(pub, ec.EllipticCurvePublicKey):
            if pub.curve.name not in EC_CURVES:
                return False
            pub.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif alg.startswith("rsa-") and isinstance(pub, rsa.RSAPublicKey):
            if pub.key_size < MIN_RSA_BITS:
                return False
            pad = padding.PKCS1v15() if alg == "rsa-pkcs1v15-sha256" else _PSS_ANY
            if alg not in ("rsa-pss-sha256", "rsa-pkcs1v15-sha256"):
                return False
            pub.verify(signature, data, pad, hashes.SHA256())
        elif alg == "ed25519" and isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def valid_at(cert: x509.Certificate, at: dt.datetime) -> str:
    """Why ``cert`` was not valid at ``at`` ("" when it was)."""
    name, start, end = common_name(cert), cert.not_valid_before_utc, cert.not_valid_after_utc
    if at < start:
        return f"before certificate '{name}' became valid ({start:%Y-%m-%d %H:%M} UTC)"
    if at > end:
        return f"after certificate '{name}' expired ({end:%Y-%m-%d %H:%M} UTC)"
    return ""


class Authority:
    """The federation CA (one or more certificates, e.g. during a CA rollover), as a
    coordinator or an auditor trusts it. A node certificate must be issued directly
    by one of them (fedsql's CAs issue with path length 0) and be valid when used."""

    def __init__(self, cas: list[x509.Certificate]) -> None:
        self.cas = cas
        self._issued: dict[str, x509.Certificate | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, where: str = "CA") -> Authority:
        try:
            return cls(x509.load_pem_x509_certificates(_read(path, where)))
        except ValueError:
            raise ConfigError(f"{where}: {path} is not a PEM certificate") from None

    def _issuer(self, cert: x509.Certificate) -> x509.Certificate | None:
        fp = fingerprint(cert)
        with self._lock:
            if fp in self._issued:
                return self._issued[fp]
        found = None
        for ca in self.cas:
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            found = ca
            break
        with self._lock:
            if len(self._issued) > 10_000:
                self._issued.clear()
            self._issued[fp] = found
        return found

    def problem(self, cert: x509.Certificate, at: dt.datetime | None = None) -> str:
        """Why ``cert`` is not a node certificate of this federation at ``at`` (now by
        default); "" when it is."""
        ca = self._issuer(cert)
        name = common_name(cert)
        if ca is None:
            return f"certificate '{name}' was not issued by the federation CA"
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return f"certificate '{name}' is a CA certificate, not a node's"
        except x509.ExtensionNotFound:
            pass
        at = at or dt.datetime.now(dt.UTC)
        return valid_at(cert, at) or valid_at(ca, at)
