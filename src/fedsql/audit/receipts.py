"""Receipts: what a connector signs at the end of every Execute call, and how the
coordinator that asked checks one.

A receipt says: connector C ran (or refused, or stopped) the fragment whose SQL
hashes to H for query Q, asked by coordinator K for user U in the request that
carried nonce N; it sent R rows and B bytes, with this outcome, and logged it
as line S of its audit chain, whose hash is L. The connector signs it with its
node key (``Receipt`` in connector.proto is the wire form and the payload's
spec). The coordinator accepts a receipt only if it verifies with a
certificate from the federation CA that names the agency it called, and if
connector, query id, SQL hash and nonce are the ones it sent: a receipt
replayed from another call, or from another agency, does not pass.

Each side then holds what the other signed: the coordinator its receipts, the
connector the coordinator's signed principal (in its audit line).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509

from fedsql.audit.signing import (
    Authority,
    NodeKey,
    load_cert,
    names,
    valid_at,
    verify_signature,
)

RECEIPT_CONTEXT = b"fedsql receipt v1\n"
RECEIPT_METADATA = "fedsql-receipt-bin"  # trailing metadata of a failed call
_SIGNED = (
    "connector",
    "query_id",
    "sql_sha256",
    "outcome",
    "rows",
    "ipc_bytes",
    "audit_seq",
    "audit_hash",
    "time_unix_ms",
    "coordinator",
    "user",
    "nonce",
)


@dataclass(frozen=True, slots=True)
class Receipt:
    connector: str
    query_id: str
    sql_sha256: str
    outcome: str
    rows: int
    ipc_bytes: int  # Arrow IPC bytes sent
    audit_seq: int  # 0: the connector keeps no audit log
    audit_hash: str
    time_unix_ms: int
    coordinator: str
    user: str
    nonce: str  # hex of the request's principal nonce
    algorithm: str = ""  # "" when unsigned (a plaintext connector has no key)
    certificate: bytes = b""  # DER
    signature: bytes = b""

    @property
    def cert_sha256(self) -> str:
        return hashlib.sha256(self.certificate).hexdigest() if self.certificate else ""

    def payload(self) -> bytes:
        """The bytes the connector signs (the spec is ``Receipt`` in connector.proto)."""
        doc: dict[str, Any] = {k: getattr(self, k) for k in _SIGNED}
        doc.update(v=1, algorithm=self.algorithm, cert_sha256=self.cert_sha256)
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return RECEIPT_CONTEXT + text.encode()

    def to_log(self) -> dict[str, Any]:
        """The receipt as a coordinator's audit line keeps it (its certificate is in
        a ``peer`` line, named by ``cert_sha256``)."""
        doc: dict[str, Any] = {k: getattr(self, k) for k in _SIGNED}
        if self.signature:
            doc.update(
                algorithm=self.algorithm,
                cert_sha256=self.cert_sha256,
                sig=base64.b64encode(self.signature).decode(),
            )
        return doc

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time_unix_ms / 1000, dt.UTC)


def from_log(doc: dict[str, Any], certs: dict[str, bytes]) -> Receipt:
    """A receipt read back from a coordinator's log; ``certs``: DER by SHA-256."""
    fields = {k: doc.get(k) for k in _SIGNED}
    if not isinstance(fields["rows"], int) or not isinstance(fields["audit_seq"], int):
        raise ValueError("not a receipt")
    return Receipt(
        **fields,  # type: ignore[arg-type]
        algorithm=str(doc.get("algorithm", "")),
        certificate=certs.get(str(doc.get("cert_sha256", "")), b""),
        signature=base64.b64decode(doc["sig"]) if doc.get("sig") else b"",
    )


@functools.lru_cache(maxsize=256)
def _parsed(der: bytes) -> x509.Certificate:
    """A receipt's certificate (an agency sends the same one with every receipt)."""
    return load_cert(der)


@functools.lru_cache(maxsize=256)
def _names(der: bytes) -> frozenset[str]:
    return names(_parsed(der))


def sign(receipt: Receipt, key: NodeKey | None) -> Receipt:
    """``receipt`` signed with the connector's key (unchanged without one)."""
    if key is None:
        return receipt
    r = replace(receipt, algorithm=key.alg, certificate=key.cert_der, signature=b"")
    return replace(r, signature=key.sign(r.payload()))


def signature_problem(
    r: Receipt, authority: Authority | None
) -> tuple[str, x509.Certificate | None]:
    """(why the receipt's signature cannot be trusted, the signing certificate)."""
    if not r.signature:
        return "the receipt is not signed", None
    if not r.certificate:
        return "the receipt's certificate is missing", None
    try:
        cert = _parsed(r.certificate)
    except ValueError:
        return "the receipt's certificate cannot be read", None
    if not verify_signature(cert, r.algorithm, r.payload(), r.signature):
        return "the receipt's signature does not verify (altered or forged)", cert
    why = authority.problem(cert, r.time) if authority is not None else valid_at(cert, r.time)
    if why:
        return f"signed at {r.time:%Y-%m-%d %H:%M:%S} UTC, {why}", cert
    return "", cert


@dataclass(frozen=True, slots=True)
class Expected:
    """What the coordinator sent, that a receipt for it must repeat."""

    connector: str  # the agency's name in the federation
    server_name: str  # the name its certificate must carry
    query_id: str
    sql_sha256: str
    nonce: str  # hex


def check(r: Receipt, want: Expected, authority: Authority | None) -> str:
    """Why the coordinator must reject ``r`` ("" when it is good evidence for the
    call described by ``want``). ``authority`` None: a plaintext connector, whose
    receipts are unsigned and only compared."""
    if authority is not None:
        why, cert = signature_problem(r, authority)
        if why:
            return why
        assert cert is not None
        if want.server_name not in _names(r.certificate):
            return (
                f"the receipt is signed by '{next(iter(sorted(_names(r.certificate))), '?')}', "
                f"not by agency '{want.connector}'"
            )
    for field, expected in (
        ("connector", want.connector),
        ("query_id", want.query_id),
        ("sql_sha256", want.sql_sha256),
        ("nonce", want.nonce),
    ):
        got = getattr(r, field)
        if got != expected:
            return (
                f"the receipt is for another call ({field} {got!r:.40}, expected "
                f"{expected!r:.40}): replayed or misdirected"
            )
    return ""
