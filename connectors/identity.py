"""Who is calling a connector, and may they read these tables at all.

Over mutual TLS the calling coordinator is the common name of the client
certificate that opened the connection (already checked against the
connector's ``client_ca`` by the TLS handshake); only coordinators listed in
``allowed_coordinators`` get in. The analyst (user, roles, purpose) comes inside
the request, signed by that coordinator (see ``Principal`` in connector.proto);
a principal that does not verify is refused. ``[[grant]]`` entries then say
which users and roles may query which tables.

On a plaintext (``insecure = true``) connector none of this can be proven: the
principal is taken as sent and marked unauthenticated in the audit log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedsql.certs import common_name
from fedsql.config import AgencyConfig, Grant
from fedsql.errors import RefusedFragment
from fedsql.trust import SKEW_SECONDS, WINDOW_SECONDS
from fedsql.wire import Principal, principal_from_proto, principal_proof, signed_payload

PLAINTEXT = "(plaintext: unauthenticated)"
_MAX_NONCES = 200_000


@dataclass(frozen=True, slots=True)
class Caller:
    coordinator: str  # the client certificate's CN, or PLAINTEXT
    principal: Principal
    authenticated: bool  # the principal's signature verified


@dataclass(frozen=True, slots=True)
class _Peer:
    name: str
    key: ec.EllipticCurvePublicKey | None
    problem: str  # why this certificate may not call (empty: it may)


def _unauthenticated(msg: str) -> RefusedFragment:
    return RefusedFragment(msg, grpc.StatusCode.UNAUTHENTICATED)


class Gate:
    """Admits callers of one connector (thread-safe)."""

    def __init__(self, cfg: AgencyConfig) -> None:
        self.cfg = cfg
        self.secure = cfg.tls is not None
        self._allowed = frozenset(cfg.allowed_coordinators)
        self._peers: dict[bytes, _Peer] = {}
        self._nonces: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def _peer(self, context: grpc.ServicerContext) -> _Peer:
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            # require_client_auth makes this unreachable over TLS; refuse anyway.
            return _Peer("", None, "no client certificate")
        pem = pems[0]
        peer = self._peers.get(pem)
        if peer is None:
            peer = self._parse(pem)
            with self._lock:
                if len(self._peers) > 1000:
                    self._peers.clear()
                self._peers[pem] = peer
        return peer

    def _parse(self, pem: bytes) -> _Peer:
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return _Peer("", None, "an unreadable client certificate")
        name = common_name(cert)
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
                return _Peer(name, None, f"certificate '{name}' is not a coordinator certificate")
        except x509.ExtensionNotFound:
            pass
        if name not in self._allowed:
            return _Peer(
                name,
                None,
                f"coordinator '{name}' is not allowed here "
                f"(allowed_coordinators of connector '{self.cfg.name}')",
            )
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return _Peer(name, None, f"certificate '{name}' does not hold an EC key")
        return _Peer(name, key, "")

    def peer_name(self, context: grpc.ServicerContext) -> str:
        """The calling coordinator's certificate name, checked or not ("" over plaintext)."""
        return self._peer(context).name if self.secure else ""

    def check_peer(self, context: grpc.ServicerContext) -> str:
        """The calling coordinator's name if it may call at all ("" over plaintext)."""
        if not self.secure:
            return ""
        peer = self._peer(context)
        if peer.problem:
            raise RefusedFragment(peer.problem, grpc.StatusCode.PERMISSION_DENIED)
        return peer.name

    def admit(self, context: grpc.ServicerContext, request: Any) -> Caller:
        """The verified caller of ``request``; raises RefusedFragment (UNAUTHENTICATED or
        PERMISSION_DENIED) when the coordinator or its principal cannot be trusted."""
        principal = principal_from_proto(request.principal)
        if not self.secure:
            return Caller(PLAINTEXT, principal, False)
        peer = self._peer(context)
        if peer.problem:
            raise RefusedFragment(peer.problem, grpc.StatusCode.PERMISSION_DENIED)
        assert peer.key is not None
        issued_ms, nonce, signature = principal_proof(request.principal)
        if not signature:
            raise _unauthenticated(
                f"the principal is not signed by coordinator '{peer.name}'; "
                "this connector accepts only principals its coordinators vouch for"
            )
        try:
            peer.key.verify(
                signature, signed_payload(self.cfg.name, request), ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature:
            raise _unauthenticated(
                f"the principal's signature does not verify with coordinator '{peer.name}'s "
                "certificate (altered, or signed for another request or connector)"
            ) from None
        now = time.time()
        issued = issued_ms / 1000.0
        if not (now - WINDOW_SECONDS <= issued <= now + SKEW_SECONDS):
            raise _unauthenticated(
                f"the signed principal is {now - issued:.0f} s old; requests are accepted "
                f"for {WINDOW_SECONDS:.0f} s (check the coordinator's clock)"
            )
        if len(nonce) < 16:
            raise _unauthenticated("the signed principal has no nonce")
        with self._lock:
            if nonce in self._nonces:
                raise _unauthenticated("this signed request was already used (replay)")
            if len(self._nonces) >= _MAX_NONCES:
                self._nonces = {n: t for n, t in self._nonces.items() if t > now}
                if len(self._nonces) >= _MAX_NONCES:
                    raise RefusedFragment(
                        "too many requests in the replay window", grpc.StatusCode.UNAVAILABLE
                    )
            self._nonces[nonce] = issued + WINDOW_SECONDS
        return Caller(peer.name, principal, True)

    def check_purpose(self, caller: Caller) -> None:
        if self.cfg.require_purpose and not caller.principal.purpose.strip():
            raise RefusedFragment(
                f"connector '{self.cfg.name}' requires a purpose for every query: "
                "pass --purpose (or purpose= in fedsql.connect)",
                grpc.StatusCode.PERMISSION_DENIED,
            )

    def may_query(self, caller: Caller, table: str) -> bool:
        """Whether a grant opens ``table`` to this caller (always, without grants)."""
        grants = self.cfg.grants
        return grants is None or any(_grants(g, table, caller.principal) for g in grants)

    def check_grants(self, caller: Caller, tables: Iterable[str]) -> None:
        """Refuse (PERMISSION_DENIED, naming the table) any table no grant opens to
        this caller. No ``[[grant]]`` at all: every exposed table is open."""
        grants = self.cfg.grants
        if grants is None:
            return
        for t in sorted(set(tables)):
            if not any(_grants(g, t, caller.principal) for g in grants):
                p = caller.principal
                who = f"user '{p.user}'" + (f" (roles: {', '.join(p.roles)})" if p.roles else "")
                raise RefusedFragment(
                    f"{who} may not query table {t} at connector '{self.cfg.name}' "
                    "(no [[grant]] gives it to this user or their roles)",
                    grpc.StatusCode.PERMISSION_DENIED,
                )


def _grants(g: Grant, table: str, p: Principal) -> bool:
    if g.table not in ("*", table.lower()):
        return False
    return p.user in g.users or any(r in g.roles for r in p.roles)
