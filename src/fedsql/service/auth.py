"""Analysts' sign-in at `fedsql serve`: scrypt password hashes and bearer tokens.

Flight SQL clients (ADBC, JDBC) sign in the same way: the first call carries
``Authorization: Basic base64(user:password)``; the server answers with an
``Authorization: Bearer TOKEN`` header, and later calls carry that token
(Arrow Flight, "Authentication": header-based basic + bearer). Tokens live in
memory and expire; a restart signs everyone out. Failed sign-ins are throttled
per user and per client address, and password checks run a few at a time
(issue 17: 240 wrong passwords in 12 s from one client, each a full scrypt).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fedsql.config import FederationConfig

log = logging.getLogger(__name__)

# scrypt cost (RFC 7914): N=2^15, r=8, p=1 -- about 50 ms and 32 MiB per check.
_N, _R, _P = 1 << 15, 8, 1
_MAXMEM = 64 << 20


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), to paste as ``password_hash``.

    >>> h = hash_password("s3cret")
    >>> verify_password("s3cret", h), verify_password("other", h)
    (True, False)
    """
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a ``hash_password`` result (constant-time compare)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


# A hash to check against when the user is unknown, so that unknown users and
# wrong passwords take the same time.
_DUMMY = hash_password(secrets.token_hex(8))


# Seconds of the first lock after the free failures; each failure after it doubles it.
BASE_DELAY = 1.0
FORGET_SECONDS = 900.0  # a key with no failure for this long starts afresh
MAX_ADDRESSES = 10_000  # addresses (and unknown user names) remembered at once
SIGNIN_QUEUE_SECONDS = 5.0  # wait for a free password-check slot at most this long
PENDING_SECONDS = 120.0  # a handshake's token must be used (and checked) this soon
MAX_PENDING = 4096


class SignInRefused(Exception):
    """A sign-in turned down; ``code`` is a status code name (see status.py)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class Throttle:
    """Failed sign-ins per key (a user name, a client address).

    The first ``free`` failures of a key cost nothing; each one after that locks
    the key for 1, 2, 4 ... seconds, at most ``cap``. While a key is locked its
    attempts are refused at once, without a password check, and do not count:
    a guesser gets ``free`` guesses, then about one per lock. Known users are
    always remembered; other keys (addresses, unknown names) up to MAX_ADDRESSES,
    the longest quiet forgotten first.

    >>> t, now = Throttle(free=2, cap=4.0, clock=lambda: now), 100.0
    >>> for _ in range(3): t.failed("alice")
    >>> t.wait("alice"), t.wait("bob")
    (1.0, 0.0)
    >>> now = 101.5; t.failed("alice"); t.wait("alice")
    2.0
    """

    def __init__(
        self,
        free: int,
        cap: float,
        pinned: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.cap = cap
        self._pinned = pinned
        self._clock = clock
        self._keys: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may try again (0.0: now)."""
        now = self._clock()
        with self._lock:
            f = self._keys.get(key)
            return max(0.0, f.locked_until - now) if f is not None else 0.0

    def failed(self, key: str) -> None:
        now = self._clock()
        with self._lock:
            f = self._keys.pop(key, None)  # re-inserted last: most recent
            if f is None or now - f.last > max(FORGET_SECONDS, 2 * self.cap):
                f = _Failures()
            f.count += 1
            f.last = now
            over = f.count - self.free
            if over > 0:
                f.locked_until = now + min(self.cap, BASE_DELAY * 2 ** min(over - 1, 32))
            self._keys[key] = f
            if len(self._keys) > MAX_ADDRESSES + len(self._pinned):
                oldest = next(k for k in self._keys if k not in self._pinned)
                del self._keys[oldest]

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)


def client_address(peer: str) -> str:
    """A gRPC peer (``ipv4:1.2.3.4:5678``) as the address throttling counts by; an
    IPv6 client counts by its /64, as one host usually holds a whole /64.

    >>> client_address("ipv4:127.0.0.1:5678"), client_address("ipv6:[2001:db8::1]:443")
    ('127.0.0.1', '2001:db8::/64')
    """
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]") or rest
        try:
            return str(ipaddress.ip_network(f"{host}/64", strict=False))
        except ValueError:
            return host
    return peer


@dataclass(slots=True)
class Session:
    """A bearer token's sign-in. ``password`` is held from the handshake until
    the first call checks it (the call, unlike the handshake, knows the client's
    address); ``None`` once checked."""

    user: str
    expires: float  # time.monotonic()
    password: str | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class SignIn:
    """Checks passwords against the federation's users and hands out bearer tokens.

    Sign-in is two steps, because pyarrow gives a Flight server's middleware and
    handshake no client address (only RPC handlers see ``context.peer()``):
    :meth:`basic` takes the credentials of a handshake and answers with a token at
    once, without checking them; the token's first call (:meth:`check`) checks
    them, throttled by user and by client address, with at most
    ``max_concurrent_signins`` scrypt checks at a time. A wrong password thus
    fails the first call after the handshake, as ``UNAUTHENTICATED``.
    """

    def __init__(self, config: FederationConfig) -> None:
        s = config.service
        self._hashes = {
            name: u.password_hash for name, u in config.users.items() if u.password_hash
        }
        self._ttl = s.token_ttl_seconds
        self._tokens: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(s.max_concurrent_signins)
        pinned = frozenset(f"user:{u}" for u in self._hashes)
        self._by_user = Throttle(s.signin_free_failures, s.signin_max_delay_seconds, pinned)
        self._by_address = Throttle(s.signin_free_failures_per_address, s.signin_max_delay_seconds)

    @property
    def users(self) -> list[str]:
        """Users who can sign in (those with a password hash)."""
        return sorted(self._hashes)

    def basic(self, header_value: str) -> tuple[Session, str]:
        """``Basic ...`` → (session, bearer token), its password still to be checked."""
        # Some clients (ADBC's Go driver) leave out the base64 padding.
        padded = header_value + "=" * (-len(header_value) % 4)
        try:
            user, sep, password = base64.b64decode(padded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if not sep or not user:
            raise SignInRefused("UNAUTHENTICATED", "wrong user name or password")
        wait = self._by_user.wait(f"user:{user}")
        if wait > 0:  # refused before anything is stored
            raise SignInRefused("UNAUTHENTICATED", _throttled(wait))
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = Session(user, now + min(self._ttl, PENDING_SECONDS), password)
        with self._lock:
            self._tokens[token] = session
            if len(self._tokens) > MAX_PENDING:
                self._tokens = {t: x for t, x in self._tokens.items() if x.expires > now}
                pending = [t for t, x in self._tokens.items() if x.password is not None]
                for t in pending[: max(0, len(pending) - MAX_PENDING)]:
                    del self._tokens[t]
        return session, token

    def bearer(self, token: str) -> Session | None:
        """The session of a bearer token, or None (unknown or expired)."""
        with self._lock:
            s = self._tokens.get(token)
        if s is None or s.expires <= time.monotonic():
            return None
        return s

    def check(self, session: Session, token: str | None, peer: str) -> str:
        """The session's user, its password checked first if it has not been yet."""
        if session.password is None:
            return session.user
        with session.lock:  # a client's parallel first calls check once
            if session.password is None:
                return session.user
            return self._verify(session, token, client_address(peer))

    def _verify(self, session: Session, token: str | None, address: str) -> str:
        user, password = session.user, session.password or ""
        session.password = None
        keys = f"user:{user}", f"address:{address}"
        wait = max(self._by_user.wait(keys[0]), self._by_address.wait(keys[1]))
        if wait > 0:
            self._forget(token)
            log.info("sign-in throttled for user %r from %s", user, address)
            raise SignInRefused("UNAUTHENTICATED", _throttled(wait))
        if not self._checks.acquire(timeout=SIGNIN_QUEUE_SECONDS):
            self._forget(token)
            raise SignInRefused(
                "UNAVAILABLE", "too many sign-ins at once; try again in a few seconds"
            )
        try:
            stored = self._hashes.get(user)
            ok = verify_password(password, stored or _DUMMY) and stored is not None
        finally:
            self._checks.release()
        if not ok:
            self._forget(token)
            self._by_user.failed(keys[0])
            self._by_address.failed(keys[1])
            log.info("sign-in refused for user %r from %s", user, address)
            raise SignInRefused("UNAUTHENTICATED", "wrong user name or password")
        self._by_user.succeeded(keys[0])
        session.expires = time.monotonic() + self._ttl
        log.info("user %s signed in from %s", user, address)
        return user

    def _forget(self, token: str | None) -> None:
        if token is not None:
            with self._lock:
                self._tokens.pop(token, None)


def _throttled(wait: float) -> str:
    return (
        "too many failed sign-ins for this user or from this address; "
        f"try again in {max(1, round(wait))} s"
    )
