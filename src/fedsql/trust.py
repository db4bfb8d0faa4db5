"""Trust between nodes: mutual-TLS credentials and principals signed by the coordinator.

Both sides of a connection use this module. A coordinator opens each channel
with its own certificate (``channels.open_channel``) and signs the analyst's principal
in every request with that certificate's private key; a connector serves with
``server_credentials`` (client certificates required) and checks, with the
public key of the certificate that opened the connection, that the principal
it received is the one the coordinator vouched for (``connectors/identity.py``).

Why sign at all when the channel is already mutually authenticated: the
signature binds user, roles, purpose, query id, fragment SQL and the target
connector into one statement the coordinator cannot later deny, and a request
copied off one connection (or replayed later) does not verify anywhere else.

The channels a coordinator opens, and how they follow a renewed certificate, are
``channels.py``.

Node keys are read here only (the CA key only by certs.py); never logged or sent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from fedsql.errors import ConfigError
from fedsql.tomlconf import ServerTLS
from fedsql.wire import stamped

log = logging.getLogger(__name__)

# Signed principals older than this (or further in the future than SKEW) are refused.
WINDOW_SECONDS = 120.0
SKEW_SECONDS = 30.0
# RPC methods whose request carries a principal the coordinator signs.
SIGNED_METHODS = ("/fedsql.v1.Connector/Execute", "/fedsql.v1.Connector/GetCatalog")


def read_secret(path: Path, what: str) -> bytes:
    """A key or certificate file's bytes; errors name the file, never its content."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what}: {path} not found") from None
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path} ({e.strerror})") from None
    if not data.strip():
        raise ConfigError(f"{what}: {path} is empty")
    return data


# Keys a node's certificate may hold (issue 15: bring your own PKI). gRPC's TLS
# (BoringSSL) offers no Ed25519 signature scheme in the handshake, so a node with an
# Ed25519 key cannot connect at all (tried: "Handshake read failed"); a CA with an
# Ed25519 key signs node certificates gRPC accepts, and ``fedsql certs`` checks those.
MIN_RSA_BITS = 2048
EC_CURVES = ("secp256r1", "secp384r1")
NodePrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
NodePublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
# RSA principals are signed with PSS (RFC 8017 8.1), salt as long as the digest.
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def key_problem(key: object) -> str:
    """Why a node cannot use this (private or public) key for TLS and signing ("" if it can).

    >>> key_problem(ec.generate_private_key(ec.SECP256R1()))
    ''
    >>> key_problem(ed25519.Ed25519PrivateKey.generate()).startswith('an Ed25519 key')
    True
    """
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            return f"an EC key on curve {key.curve.name} (use P-256 or P-384)"
        return ""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"an RSA key of {key.key_size} bits (use {MIN_RSA_BITS} bits or more)"
        return ""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return (
            "an Ed25519 key: gRPC's TLS cannot use Ed25519 for a node's certificate (its "
            "handshake offers no Ed25519 signatures); issue the node an EC (P-256) or RSA "
            "(2048+) key; the CA itself may keep an Ed25519 key"
        )
    return f"a {type(key).__name__} (use an EC P-256/P-384 or RSA 2048+ key)"


def _private_key(path: Path, what: str) -> NodePrivateKey:
    try:
        key = serialization.load_pem_private_key(read_secret(path, what), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{what}: {path} is not an unencrypted PEM private key") from None
    problem = key_problem(key)
    if problem:
        raise ConfigError(f"{what}: {path} holds {problem}")
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s: %s is readable by other users; chmod 600 it", what, path)
    return key


def verify_principal(key: NodePublicKey, signature: bytes, payload: bytes) -> None:
    """Check a coordinator's signature over a principal (raises InvalidSignature); the
    algorithm follows from the key: ECDSA-SHA256 for EC, RSA-PSS-SHA256 for RSA."""
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, payload, _PSS, hashes.SHA256())
    else:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))


def server_credentials(tls: ServerTLS, where: str) -> grpc.ServerCredentials:
    """TLS for a connector: its certificate, and client certificates from ``client_ca``
    required (no certificate, or one from another CA, fails the handshake)."""
    key = read_secret(tls.key, f"{where}: [connector.tls].key")
    _private_key(tls.key, f"{where}: [connector.tls].key")  # the right kind of key
    cert = read_secret(tls.cert, f"{where}: [connector.tls].cert")
    ca = read_secret(tls.client_ca, f"{where}: [connector.tls].client_ca")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


class Signer:
    """Signs principals with the private key of the coordinator's TLS certificate."""

    def __init__(self, key_path: Path, where: str) -> None:
        self._key = _private_key(key_path, where)

    def sign(self, payload: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(payload, _PSS, hashes.SHA256())
        return self._key.sign(payload, ec.ECDSA(hashes.SHA256()))

    def public_key(self) -> NodePublicKey:
        return self._key.public_key()

    def __repr__(self) -> str:  # never show the key
        return "Signer(<private key>)"


class Stamp(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds the coordinator's signature to every principal-carrying request."""

    def __init__(self, connector: str, signer: Signer) -> None:
        self.connector = connector
        self.signer = signer

    def _stamp(self, details: Any, request: Any) -> Any:
        if details.method not in SIGNED_METHODS:
            return request
        return stamped(
            request, self.connector, self.signer.sign, int(time.time() * 1000), os.urandom(16)
        )

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:  # type: ignore[type-arg]
        return continuation(details, self._stamp(details, request))

    def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:  # type: ignore[type-arg]
        return continuation(details, self._stamp(details, request))
