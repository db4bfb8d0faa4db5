"""The coordinator's channels to its connectors: mutual TLS with its own certificate,
principals signed on the way out (``trust.Stamp``), and a certificate renewed on disk
followed without a restart.

A coordinator keeps one channel per connector for its lifetime, and a TLS
connection is authenticated once, when it opens; connectors check the client
certificate's validity and revocation on every request (issue 17), so a
coordinator must move to a renewed certificate by itself: the channel
``open_channel`` returns looks at its certificate, key and CA files at most
every RENEW_CHECK_SECONDS, and when they change (a rotation) opens a new
connection with them for the calls that follow; calls already running finish
on the old one, which is closed after them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509

from fedsql.errors import ConfigError
from fedsql.tomlconf import ClientTLS, ConnectorRef
from fedsql.trust import Signer, Stamp, read_secret
from fedsql.wire import GRPC_OPTIONS

log = logging.getLogger(__name__)

# How often a coordinator's channel looks for a renewed certificate on disk.
RENEW_CHECK_SECONDS = 5.0
# Within this of its certificate's expiry, a channel warns (once) that none has come.
EXPIRY_WARNING_SECONDS = 24 * 3600.0
# A connection replaced by a renewal is closed when its last call ends, or after this.
RETIRE_SECONDS = 3600.0


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
        signed = grpc.intercept_channel(raw, Stamp(self.ref.name, signer))
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
