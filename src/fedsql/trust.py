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

A coordinator keeps one channel per connector for its lifetime, and a TLS
connection is authenticated once, when it opens; connectors check the client
certificate's validity and revocation on every request (issue 17), so a
coordinator must move to a renewed certificate by itself: the channel
``open_channel`` returns looks at its certificate, key and CA files at most
every RENEW_CHECK_SECONDS, and when they change (a rotation) opens a new
connection with them for the calls that follow; calls already running finish
on the old one, which is closed after them.

Node keys are read here only (the CA key only by certs.py); never logged or sent.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from fedsql.errors import ConfigError
from fedsql.tomlconf import ClientTLS, ConnectorRef, ServerTLS
from fedsql.wire import GRPC_OPTIONS, stamped

log = logging.getLogger(__name__)

# Signed principals older than this (or further in the future than SKEW) are refused.
WINDOW_SECONDS = 120.0
SKEW_SECONDS = 30.0
# RPC methods whose request carries a principal the coordinator signs.
SIGNED_METHODS = ("/fedsql.v1.Connector/Execute", "/fedsql.v1.Connector/GetCatalog")
# How often a coordinator's channel looks for a renewed certificate on disk.
RENEW_CHECK_SECONDS = 5.0
# Within this of its certificate's expiry, a channel warns (once) that none has come.
EXPIRY_WARNING_SECONDS = 24 * 3600.0
# A connection replaced by a renewal is closed when its last call ends, or after this.
RETIRE_SECONDS = 3600.0


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

    With TLS the coordinator checks that the connector's certificate names the
    agency (its ``name`` in FEDERATION.toml), so one agency cannot answer for
    another even at a mistyped address; ``fedsql certs issue`` gives no other
    certificate that name. Both channels follow a renewed coordinator
    certificate (see the module's docstring); the second does not sign.
    """
    if ref.tls is None:
        ch = grpc.insecure_channel(ref.address, options=[*GRPC_OPTIONS, *options])
        return ch, ch
    where = f"{where}: connector '{ref.name}'"
    if ref.tls.server_name and ref.tls.server_name.lower() != ref.name.lower():
        # Another name would accept any certificate that carries it, e.g. "localhost"
        # (issue 17): the agency's own name is the one its certificate must carry.
        raise ConfigError(
            f"{where}: [connector.tls].server_name = {ref.tls.server_name!r}: the connector's "
            f"certificate must name the agency, '{ref.name}'; remove server_name (or issue "
            f"the connector a certificate for '{ref.name}' with `fedsql certs issue`)"
        )
    pool = _Channels(ref, where, options)
    return _View(pool, signed=True), _View(pool, signed=False)


@dataclass(slots=True, eq=False)
class _Generation:
    """One connection's channels and the certificate files they were opened with."""

    raw: grpc.Channel
    signed: grpc.Channel
    stamp: tuple[tuple[int, int, int], ...]
    cert_pem: bytes
    not_after: float
    inflight: int = 0
    retired: bool = False
    closed: bool = False


def _stamp(tls: ClientTLS) -> tuple[tuple[int, int, int], ...] | None:
    try:
        return tuple(
            (st.st_mtime_ns, st.st_size, st.st_ino)
            for st in (os.stat(p) for p in (tls.cert, tls.key, tls.ca))
        )
    except OSError:
        return None  # mid-rotation (a file briefly missing): look again later


class _Channels:
    """A connector's current connection, replaced when the certificate files change."""

    def __init__(
        self, ref: ConnectorRef, where: str, options: tuple[tuple[str, object], ...]
    ) -> None:
        assert ref.tls is not None
        self.ref, self.tls, self.where, self.options = ref, ref.tls, where, options
        self._lock = threading.Lock()
        self._old: list[_Generation] = []
        self._closed = False
        self._warned: object = None
        self._gen = self._open()
        self._next = time.monotonic() + RENEW_CHECK_SECONDS

    def _open(self) -> _Generation:
        stamp = _stamp(self.tls) or ()
        creds = channel_credentials(self.tls, self.where)
        key_where = f"{self.where}: [connector.tls].key"
        signer = Signer(self.tls.key, key_where)
        pem = read_secret(self.tls.cert, f"{self.where}: [connector.tls].cert")
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise ConfigError(f"{self.where}: {self.tls.cert} is not a PEM certificate") from None
        if cert.public_key() != signer.public_key():
            raise ConfigError(
                f"{self.where}: {self.tls.cert} and {self.tls.key} are not a pair "
                "(a certificate rotation half done?)"
            )
        name = ("grpc.ssl_target_name_override", self.ref.name)
        raw = grpc.secure_channel(
            self.ref.address, creds, options=[*GRPC_OPTIONS, *self.options, name]
        )
        signed = grpc.intercept_channel(raw, _Stamp(self.ref.name, signer))
        return _Generation(raw, signed, stamp, pem, cert.not_valid_after_utc.timestamp())

    def current(self) -> _Generation:
        if time.monotonic() >= self._next:
            self._renew()
        return self._gen

    def _renew(self) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._next or self._closed:
                return
            self._next = now + RENEW_CHECK_SECONDS
            gen = self._gen
            stamp = _stamp(self.tls)
            if stamp is None:
                return
            expiring = time.time() > gen.not_after - EXPIRY_WARNING_SECONDS
            if stamp == gen.stamp and not (expiring and self._cert_changed(gen)):
                if expiring and self._warned is not gen:
                    self._warned = gen
                    log.warning(
                        "%s: the coordinator certificate %s expires at %s and no renewed one "
                        "is on disk; put one there (with its key): channels use it without "
                        "a restart",
                        self.where,
                        self.tls.cert,
                        dt.datetime.fromtimestamp(gen.not_after, dt.UTC).isoformat(),
                    )
                return
            try:
                new = self._open()
            except ConfigError as e:
                if self._warned != stamp:
                    self._warned = stamp
                    log.warning("%s; keeping the connection opened with the previous one", e)
                return
            self._gen, gen.retired = new, True
            self._old.append(gen)
            timer = threading.Timer(RETIRE_SECONDS, self._close_gen, (gen,))
            timer.daemon = True
            timer.start()
            log.info(
                "%s: the coordinator certificate changed on disk (valid until %s); new calls "
                "use a new connection with it",
                self.where,
                dt.datetime.fromtimestamp(new.not_after, dt.UTC).isoformat(),
            )
        if gen.inflight == 0:
            self._close_gen(gen)

    def _cert_changed(self, gen: _Generation) -> bool:
        try:
            return self.tls.cert.read_bytes() != gen.cert_pem
        except OSError:
            return False

    def enter(self, gen: _Generation) -> None:
        with self._lock:
            gen.inflight += 1

    def leave(self, gen: _Generation) -> None:
        with self._lock:
            gen.inflight -= 1
            done = gen.retired and gen.inflight <= 0
        if done:  # from the call's done callback, on gRPC's own thread: closing the
            # channel there waits for that very thread, so another thread closes it
            threading.Thread(target=self._close_gen, args=(gen,), daemon=True).start()

    def _close_gen(self, gen: _Generation) -> None:
        with self._lock:
            if gen.closed:
                return
            gen.closed = True
            if gen in self._old:
                self._old.remove(gen)
        gen.raw.close()

    def all(self) -> list[_Generation]:
        with self._lock:
            return [self._gen, *self._old]

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for gen in self.all():
            self._close_gen(gen)


class _Multi:
    """A multi-callable that runs each call on the connector's current connection."""

    def __init__(self, pool: _Channels, signed: bool, kind: str, method: str, kw: Any) -> None:
        self._pool, self._signed = pool, signed
        self._kind, self._method, self._kw = kind, method, kw
        self._cached: tuple[_Generation, Any] | None = None

    def _target(self) -> tuple[_Generation, Any]:
        gen = self._pool.current()
        cached = self._cached
        if cached is None or cached[0] is not gen:
            ch = gen.signed if self._signed else gen.raw
            cached = self._cached = (gen, getattr(ch, self._kind)(self._method, **self._kw))
        return cached

    def _blocking(self, attr: str, *args: Any, **kwargs: Any) -> Any:
        gen, mc = self._target()
        self._pool.enter(gen)
        try:
            return getattr(mc, attr)(*args, **kwargs)
        finally:
            self._pool.leave(gen)

    def _pending(self, attr: str, *args: Any, **kwargs: Any) -> Any:
        gen, mc = self._target()
        self._pool.enter(gen)
        try:
            call = getattr(mc, attr)(*args, **kwargs)
        except BaseException:
            self._pool.leave(gen)
            raise
        call.add_done_callback(lambda _: self._pool.leave(gen))
        return call


class _UnaryUnary(_Multi, grpc.UnaryUnaryMultiCallable):  # type: ignore[misc]
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._blocking("__call__", *args, **kwargs)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        return self._blocking("with_call", *args, **kwargs)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return self._pending("future", *args, **kwargs)


class _UnaryStream(_Multi, grpc.UnaryStreamMultiCallable):  # type: ignore[misc]
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._pending("__call__", *args, **kwargs)


class _View(grpc.Channel):  # type: ignore[misc]
    """The channel handed out: signed (principals stamped) or raw, over the pool's
    current connection; closing either closes every connection of the pool."""

    def __init__(self, pool: _Channels, signed: bool) -> None:
        self._pool, self._signed = pool, signed

    def _ch(self) -> grpc.Channel:
        gen = self._pool.current()
        return gen.signed if self._signed else gen.raw

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _UnaryUnary(self._pool, self._signed, "unary_unary", method, _kw(args, kwargs))

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _UnaryStream(self._pool, self._signed, "unary_stream", method, _kw(args, kwargs))

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._ch().stream_unary(method, *args, **kwargs)  # (none in the service)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._ch().stream_stream(method, *args, **kwargs)

    def subscribe(self, callback: Callable[..., Any], try_to_connect: bool = False) -> None:
        self._pool.current().raw.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Callable[..., Any]) -> None:
        for gen in self._pool.all():
            try:
                gen.raw.unsubscribe(callback)
            except ValueError:
                pass

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> _View:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kw(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    names = ("request_serializer", "response_deserializer", "_registered_method")
    return {**dict(zip(names, args, strict=False)), **kwargs}
