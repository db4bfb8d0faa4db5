"""Analysts' sign-in at `fedsql serve`: scrypt password hashes and bearer tokens;
and what the service needs before it serves (``check_servable``: a user who can
sign in, TLS unless insecure; ``tls_pair``: its certificate and key).

Flight SQL clients (ADBC, JDBC) sign in the same way: the first call carries
``Authorization: Basic base64(user:password)``; the server answers with an
``Authorization: Bearer TOKEN`` header, and later calls carry that token
(Arrow Flight, "Authentication": header-based basic + bearer). Tokens live in
memory and expire; a restart signs everyone out. Failed sign-ins are throttled
per user and per client address, and password checks run a few at a time
(issue 17: 240 wrong passwords in 12 s from one client, each a full scrypt).

A user is never locked out from where they have signed in before: an address a
user has signed in from (within ``TRUSTED_SECONDS``) is held only to that user's
failures from that address, not to the user's failures elsewhere nor to the
address's failures with other names. So an attacker guessing alice's password
from anywhere else can slow alice down at a new address, but not at her usual
one, however long the attack goes on.
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
from fedsql.errors import ConfigError
from fedsql.trust import read_secret

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
TRUSTED_SECONDS = 7 * 86400.0  # an address a user signed in from stays theirs this long


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
    address). Then the session is either ``verified`` or ``refused`` (the reason,
    which every later call with the token gets too, until the token expires): a
    client's parallel first calls cannot slip past a failed check."""

    user: str
    expires: float  # time.monotonic()
    password: str | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    verified: bool = False
    refused: str | None = None


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
        self._by_pair = Throttle(s.signin_free_failures, s.signin_max_delay_seconds)
        self._trusted: dict[str, float] = {}  # "user@address" -> until (oldest first)

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
        # Throttling waits for the first call: only it knows the client's address,
        # and a locked user may still sign in from an address of theirs.
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = Session(user, now + min(self._ttl, PENDING_SECONDS), password)
        with self._lock:
            self._tokens[token] = session
            if len(self._tokens) > MAX_PENDING:
                self._tokens = {t: x for t, x in self._tokens.items() if x.expires > now}
                pending = [t for t, x in self._tokens.items() if not x.verified]
                for t in pending[: max(0, len(pending) - MAX_PENDING)]:
                    del self._tokens[t]
        return session, token

    def bearer(self, token: str) -> Session | None:
        """The session of a bearer token, or None (unknown or expired); a refused
        session is returned too, and :meth:`check` refuses it."""
        with self._lock:
            s = self._tokens.get(token)
        if s is None or s.expires <= time.monotonic():
            return None
        return s

    def check(self, session: Session, token: str | None, peer: str) -> str:
        """The session's user, its password checked first if it has not been yet."""
        if session.verified:
            return session.user
        with session.lock:  # a client's parallel first calls check once
            if session.verified:
                return session.user
            if session.refused is not None:
                raise SignInRefused("UNAUTHENTICATED", session.refused)
            return self._verify(session, client_address(peer))

    def _verify(self, session: Session, address: str) -> str:
        user, password = session.user, session.password or ""
        keys = f"user:{user}", f"address:{address}", f"pair:{user}@{address}"
        trusted = self._is_trusted(user, address)
        if trusted:  # only this user's failures from this address count
            wait = self._by_pair.wait(keys[2])
        else:
            wait = max(self._by_user.wait(keys[0]), self._by_address.wait(keys[1]))
        if wait > 0:
            log.info("sign-in throttled for user %r from %s", user, address)
            session.password, session.refused = None, _throttled(wait)
            raise SignInRefused("UNAUTHENTICATED", session.refused)
        if not self._checks.acquire(timeout=SIGNIN_QUEUE_SECONDS):
            # Still unchecked: the client may retry with the same token.
            raise SignInRefused(
                "UNAVAILABLE", "too many sign-ins at once; try again in a few seconds"
            )
        try:
            stored = self._hashes.get(user)
            ok = verify_password(password, stored or _DUMMY) and stored is not None
        finally:
            self._checks.release()
        session.password = None
        if not ok:
            for throttle, key in zip(
                (self._by_user, self._by_address, self._by_pair), keys, strict=True
            ):
                throttle.failed(key)
            log.info("sign-in refused for user %r from %s", user, address)
            session.refused = "wrong user name or password"
            raise SignInRefused("UNAUTHENTICATED", session.refused)
        self._by_pair.succeeded(keys[2])
        self._trust(user, address)
        session.expires = time.monotonic() + self._ttl
        session.verified = True
        log.info("user %s signed in from %s", user, address)
        return user

    def _is_trusted(self, user: str, address: str) -> bool:
        with self._lock:
            until = self._trusted.get(f"{user}@{address}")
        return until is not None and until > time.monotonic()

    def _trust(self, user: str, address: str) -> None:
        key = f"{user}@{address}"
        with self._lock:
            self._trusted.pop(key, None)  # re-inserted last: most recent
            self._trusted[key] = time.monotonic() + TRUSTED_SECONDS
            while len(self._trusted) > MAX_ADDRESSES:
                del self._trusted[next(iter(self._trusted))]


def _throttled(wait: float) -> str:
    return (
        "too many failed sign-ins for this user or from this address; "
        f"try again in {max(1, round(wait))} s"
    )


def tls_pair(config: FederationConfig) -> list[tuple[bytes, bytes]]:
    s = config.service
    if s.tls_cert is None or s.tls_key is None:
        return []
    return [
        (read_secret(s.tls_cert, "[service.tls].cert"), read_secret(s.tls_key, "[service.tls].key"))
    ]


def check_servable(config: FederationConfig) -> None:
    """Refuse to start without a way to sign in or without TLS (unless insecure)."""
    src = config.source or "the federation config"
    if not any(u.password_hash for u in config.users.values()):
        raise ConfigError(
            f"{src}: no user can sign in: give at least one [user.NAME] a password_hash "
            "(make one with `fedsql passwd`)"
        )
    if not config.service.insecure and config.service.tls_cert is None:
        raise ConfigError(
            f"{src}: [service] needs TLS: add [service.tls] cert and key (PEM files), or "
            "set insecure = true under [service] to serve plaintext (local development only)"
        )
