"""Who is calling a connector, and may they read these tables at all.

Over mutual TLS the calling coordinator is the common name of the client
certificate that opened the connection (already checked against the
connector's ``client_ca`` by the TLS handshake); only coordinators listed in
``allowed_coordinators`` get in, on every call (GetCatalog, Execute, Cancel,
GetStatus). The analyst (user, roles, purpose) comes inside the request,
signed by that coordinator (see ``Principal`` in connector.proto); a principal
that does not verify is refused. ``[[grant]]`` entries then say which users and
roles may query which tables.

The handshake checks the client certificate once, when the connection opens,
and coordinators keep a connection for their lifetime; so every request checks
it again here: its validity window, and the CA's revocation list
(``[connector.tls] crl``, reloaded when the file changes) (issue 17).

Replay protection remembers each signed request's nonce for the signature
window, in one store per coordinator with its own bound
(``replay_entries_per_coordinator``): a coordinator that floods fills only its
own store and is refused with RESOURCE_EXHAUSTED; the others are unaffected.

A refused request is audited with bounded text: what it claimed (user, roles,
purpose) under ``claimed_*`` names with ``authenticated: false``, and at most
REFUSAL_BURST lines per peer at once, then one a second; the rest of a flood
becomes summary lines ("N more refused from PEER", every few seconds while it
lasts). A peer's first refusal is always written.

On a plaintext (``insecure = true``) connector none of this can be proven: the
principal is taken as sent and marked unauthenticated in the audit log.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedsql import reasons
from fedsql.certs import common_name
from fedsql.connectors.config import AgencyConfig, Grant
from fedsql.connectors.refusals import Refusals, bound_fields, claims
from fedsql.connectors.revocation import Revocations
from fedsql.errors import RefusedFragment
from fedsql.trust import (
    SKEW_SECONDS,
    WINDOW_SECONDS,
    NodePublicKey,
    key_problem,
    verify_principal,
)
from fedsql.wire import Principal, principal_from_proto, principal_proof, signed_payload

log = logging.getLogger(__name__)

PLAINTEXT = "(plaintext: unauthenticated)"
# The revocation list file is looked at (stat) at most this often.
# Refusal lines per peer: a burst, then a steady rate; the rest go into one summary
# line written this long after the first refusal that had no line of its own.
# What a refused (unauthenticated) request may put in the audit log, in characters.
_MAX_NONCE = 64  # bytes; the coordinator sends 16


@dataclass(frozen=True, slots=True)
class Caller:
    coordinator: str  # the client certificate's CN, or PLAINTEXT
    principal: Principal
    authenticated: bool  # the principal's signature verified


@dataclass(frozen=True, slots=True)
class _Peer:
    name: str
    key: NodePublicKey | None
    problem: str  # why this certificate may not call (empty: it may)
    serial: int = 0  # 0: no readable certificate
    not_before: float = float("-inf")  # Unix seconds
    not_after: float = float("inf")


def _unauthenticated(msg: str) -> RefusedFragment:
    return RefusedFragment(msg, grpc.StatusCode.UNAUTHENTICATED)


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _iso(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat(timespec="seconds")


class _Seen:
    """One coordinator's nonces still inside the signature window (expiry heap + set)."""

    __slots__ = ("heap", "nonces")

    def __init__(self) -> None:
        self.nonces: set[bytes] = set()
        self.heap: list[tuple[float, bytes]] = []

    def prune(self, now: float) -> None:
        # A nonce whose request was issued before now - WINDOW cannot be replayed:
        # the request itself is refused as too old.
        while self.heap and self.heap[0][0] < now:
            self.nonces.discard(heapq.heappop(self.heap)[1])

    def add(self, nonce: bytes, expires: float) -> None:
        self.nonces.add(nonce)
        heapq.heappush(self.heap, (expires, nonce))


class Gate:
    """Admits callers of one connector (thread-safe)."""

    def __init__(self, cfg: AgencyConfig) -> None:
        self.cfg = cfg
        self.secure = cfg.tls is not None
        self._allowed = frozenset(cfg.allowed_coordinators)
        self._peers: dict[bytes, _Peer] = {}
        self._seen: dict[str, _Seen] = {}  # per coordinator (allowed ones only)
        self._replay_bound = cfg.replay_entries_per_coordinator
        self._lock = threading.Lock()
        self._crl = (
            Revocations(cfg.tls, f"{cfg.source}: [connector.tls].crl")
            if cfg.tls is not None and cfg.tls.crl is not None
            else None
        )
        self._refusals = Refusals()

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
        when: dict[str, Any] = {
            "serial": cert.serial_number,
            "not_before": cert.not_valid_before_utc.timestamp(),
            "not_after": cert.not_valid_after_utc.timestamp(),
        }
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
                why = f"certificate '{name}' is not a coordinator certificate"
                return _Peer(name, None, why, **when)
        except x509.ExtensionNotFound:
            pass
        if name not in self._allowed:
            return _Peer(
                name,
                None,
                f"coordinator '{name}' is not allowed here "
                f"(allowed_coordinators of connector '{self.cfg.name}')",
                **when,
            )
        key = cert.public_key()
        problem = key_problem(key)
        if problem or not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            return _Peer(name, None, f"certificate '{name}' holds {problem}", **when)
        return _Peer(name, key, "", **when)

    def _checked(self, context: grpc.ServicerContext) -> _Peer:
        """The calling peer, checked for this request: its certificate valid now and
        not revoked (UNAUTHENTICATED), then allowed to call (PERMISSION_DENIED)."""
        peer = self._peer(context)
        now = time.time()
        if now > peer.not_after:
            raise _unauthenticated(
                f"the client certificate '{peer.name}' expired at {_iso(peer.not_after)}; "
                f"connector '{self.cfg.name}' checks it on every request, not only when the "
                "connection opened: renew it (fedsql certs issue) and reconnect"
            )
        if now < peer.not_before:
            raise _unauthenticated(
                f"the client certificate '{peer.name}' is not valid before "
                f"{_iso(peer.not_before)} (check the clocks)"
            )
        if self._crl is not None and peer.serial and self._crl.revoked(peer.serial):
            raise _unauthenticated(
                f"the client certificate '{peer.name}' (serial {peer.serial:x}) is revoked "
                f"(the CRL of connector '{self.cfg.name}')"
            )
        if peer.problem:
            raise RefusedFragment(peer.problem, grpc.StatusCode.PERMISSION_DENIED)
        return peer

    def peer_name(self, context: grpc.ServicerContext) -> str:
        """The calling coordinator's certificate name, checked or not ("" over plaintext)."""
        return self._peer(context).name if self.secure else ""

    def check_peer(self, context: grpc.ServicerContext) -> str:
        """The calling coordinator's name if it may call at all ("" over plaintext)."""
        if not self.secure:
            return ""
        return self._checked(context).name

    def admit(self, context: grpc.ServicerContext, request: Any) -> Caller:
        """The verified caller of ``request``; raises RefusedFragment (UNAUTHENTICATED,
        PERMISSION_DENIED, or RESOURCE_EXHAUSTED for a coordinator over its replay-store
        bound) when the coordinator or its principal cannot be trusted or admitted."""
        principal = principal_from_proto(request.principal)
        if not self.secure:
            return Caller(PLAINTEXT, principal, False)
        peer = self._checked(context)
        assert peer.key is not None
        issued_ms, nonce, signature = principal_proof(request.principal)
        if not signature:
            raise _unauthenticated(
                f"the principal is not signed by coordinator '{peer.name}'; "
                "this connector accepts only principals its coordinators vouch for"
            )
        if not 16 <= len(nonce) <= _MAX_NONCE:
            raise _unauthenticated("the signed principal has no nonce of 16 to 64 bytes")
        try:
            verify_principal(peer.key, signature, signed_payload(self.cfg.name, request))
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
        with self._lock:
            seen = self._seen.get(peer.name)
            if seen is None:
                seen = self._seen[peer.name] = _Seen()
            if nonce in seen.nonces:
                raise _unauthenticated("this signed request was already used (replay)")
            seen.prune(now)
            if len(seen.nonces) >= self._replay_bound:
                raise RefusedFragment(
                    f"coordinator '{peer.name}' sent more than {self._replay_bound} signed "
                    f"requests within {WINDOW_SECONDS:.0f} s, the most connector "
                    f"'{self.cfg.name}' remembers per coordinator for replay protection "
                    "(replay_entries_per_coordinator); retry shortly (other coordinators are "
                    "not affected)",
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                )
            seen.add(nonce, issued + WINDOW_SECONDS)
        return Caller(peer.name, principal, True)

    def refused(
        self,
        context: grpc.ServicerContext,
        error: RefusedFragment,
        write: Callable[[dict[str, Any]], object],
        request: Any = None,
        record: dict[str, Any] | None = None,
        rpc: str = "",
        summary: Callable[[dict[str, Any]], object] | None = None,
    ) -> bool:
        """Audit one refused call: fills ``record`` (or a new one) with who the TLS
        peer is, what the request claimed (bounded, as ``claimed_*``), the error and
        ``authenticated: false``, and writes it with ``write`` unless this peer has
        used up its lines (a flood); then it only counts towards the
        next summary line (written with ``summary``, default ``write``).
        Returns whether the line was written."""
        rec = record if record is not None else {"time": _utc_now(), "peer": context.peer()}
        if rpc:
            rec["rpc"] = rpc
        for k in ("user", "roles", "purpose"):  # the request's word, not verified
            rec.pop(k, None)
        rec.update(
            coordinator=self.peer_name(context) or "-",
            authenticated=False,
            outcome="refused",
            error=str(error),
        )
        if request is not None and request.HasField("principal"):
            rec.update(claims(request.principal))
        bound_fields(rec)
        key = self._refusal_key(context)
        if self._refusals.admit(key, rec, summary or write):
            write(rec)
            return True
        return False

    def _refusal_key(self, context: grpc.ServicerContext) -> str:
        """Whom refusals are counted against: the certificate's name, else the address."""
        name = self._peer(context).name if self.secure else ""
        if name:
            return name
        return context.peer().rpartition(":")[0] or context.peer()

    def check_purpose(self, caller: Caller) -> None:
        if self.cfg.require_purpose and not caller.principal.purpose.strip():
            raise RefusedFragment(
                f"connector '{self.cfg.name}' requires a purpose for every query: give one "
                "(fedsql query/shell --purpose, .purpose in the shell, purpose= in "
                "fedsql.connect; Flight SQL clients: the x-fedsql-purpose header)",
                grpc.StatusCode.PERMISSION_DENIED,
                reasons.PURPOSE_REQUIRED,
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
