"""Analysts' sign-in at `fedsql serve`: scrypt password hashes and bearer tokens.

Flight SQL clients (ADBC, JDBC) sign in the same way: the first call carries
``Authorization: Basic base64(user:password)``; the server answers with an
``Authorization: Bearer TOKEN`` header, and later calls carry that token
(Arrow Flight, "Authentication": header-based basic + bearer). Tokens live in
memory and expire; a restart signs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    expires: float  # time.monotonic()


class SignIn:
    """Checks passwords against the federation's users and hands out bearer tokens."""

    def __init__(self, config: FederationConfig) -> None:
        self._hashes = {
            name: u.password_hash for name, u in config.users.items() if u.password_hash
        }
        self._ttl = config.service.token_ttl_seconds
        self._tokens: dict[str, Session] = {}
        self._lock = threading.Lock()

    @property
    def users(self) -> list[str]:
        """Users who can sign in (those with a password hash)."""
        return sorted(self._hashes)

    def basic(self, header_value: str) -> tuple[str, str] | None:
        """``Basic ...`` → (user, new bearer token), or None if the credentials are wrong."""
        # Some clients (ADBC's Go driver) leave out the base64 padding.
        padded = header_value + "=" * (-len(header_value) % 4)
        try:
            user, sep, password = base64.b64decode(padded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if not sep:
            return None
        stored = self._hashes.get(user)
        ok = verify_password(password, stored or _DUMMY) and stored is not None
        if not ok:
            log.info("sign-in refused for user %r", user)
            return None
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: s for t, s in self._tokens.items() if s.expires > now}
            self._tokens[token] = Session(user, now + self._ttl)
        log.info("user %s signed in", user)
        return user, token

    def bearer(self, token: str) -> str | None:
        """The user a bearer token belongs to, or None (unknown or expired)."""
        with self._lock:
            s = self._tokens.get(token)
        if s is None or s.expires <= time.monotonic():
            return None
        return s.user
