"""Trust between nodes: mutual-TLS credentials and principals signed by the coordinator.

Both sides of a connection use this module. A coordinator opens each channel
with its own certificate (``open_channel``) and signs the analyst's principal
in every request with that certificate's private key; a connector serves with
``server_credentials`` (client certificates required) and checks, with the
public key of the certificate that opened the connection, that the principal
it received is the one the coordinator vouched for (``connectors/identity.py``).

Why sign at all when the channel is already mutually authenticated: the
signature binds user, roles, purpose, query id, fragment SQL and the target
connector into one statement the coordinator cannot later deny, and a request
copied off one connection (or replayed later) does not verify anywhere else.

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
from cryptography.hazmat.primitives.asymmetric import ec

from fedsql.config import ClientTLS, ConnectorRef, ServerTLS
from fedsql.errors import ConfigError
from fedsql.wire import GRPC_OPTIONS, stamped

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


def _private_key(path: Path, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(read_secret(path, what), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{what}: {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{what}: {path} is not an EC key (issue it with `fedsql certs issue`)")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s: %s is readable by other users; chmod 600 it", what, path)
    return key


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
        return self._key.sign(payload, ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:  # never show the key
        return "Signer(<private key>)"


class _Stamp(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
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


def channel_credentials(tls: ClientTLS, where: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=read_secret(tls.ca, f"{where}: [connector.tls].ca"),
        private_key=read_secret(tls.key, f"{where}: [connector.tls].key"),
        certificate_chain=read_secret(tls.cert, f"{where}: [connector.tls].cert"),
    )


def open_channel(
    ref: ConnectorRef, where: str = "federation", options: tuple[tuple[str, object], ...] = ()
) -> tuple[grpc.Channel, grpc.Channel]:
    """(the channel to use, the underlying channel to close) for one connector.

    With TLS the coordinator checks that the connector's certificate names it
    (``server_name``, default: the connector's name), so one agency cannot
    answer for another even at a mistyped address.
    """
    if ref.tls is None:
        ch = grpc.insecure_channel(ref.address, options=[*GRPC_OPTIONS, *options])
        return ch, ch
    where = f"{where}: connector '{ref.name}'"
    creds = channel_credentials(ref.tls, where)
    signer = Signer(ref.tls.key, f"{where}: [connector.tls].key")
    name = ("grpc.ssl_target_name_override", ref.tls.server_name or ref.name)
    raw = grpc.secure_channel(ref.address, creds, options=[*GRPC_OPTIONS, *options, name])
    return grpc.intercept_channel(raw, _Stamp(ref.name, signer)), raw
