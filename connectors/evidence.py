"""What a connector keeps of the coordinator, and gives it back: the evidence.

Each Execute call's audit line keeps the coordinator's signed principal as it
arrived (nonce, issued time, signature, the hashes of SQL and key sets it
covers, and the fingerprint of the coordinator's certificate, whose PEM goes
into a ``peer`` line once per file), so the log alone proves who vouched for
the request. In return every call ends with a receipt signed by this node's
key (:mod:`fedsql.audit.receipts`): in the last message of a complete result,
or in the trailing metadata ``fedsql-receipt-bin`` of a call that fails.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from typing import Any

import grpc

from fedsql.audit.chain import Peer, sql_sha256
from fedsql.audit.receipts import RECEIPT_METADATA, Receipt, sign
from fedsql.audit.signing import KeyFiles, common_name, current, fingerprint, load_cert
from fedsql.connectors.config import AgencyConfig
from fedsql.v1 import connector_pb2 as pb
from fedsql.wire import receipt_to_proto

_MAX_PEERS = 1000
_MAX_NONCE = 64  # bytes of a request's nonce kept
_MAX_SIGNATURE = 1024  # bytes of its signature kept (RSA-4096: 512); beyond, a hash


class Evidence:
    """The node key and the coordinators' certificates seen (thread-safe)."""

    def __init__(self, cfg: AgencyConfig) -> None:
        self.name = cfg.name
        where = f"{cfg.source}: [connector.tls]"
        self.key = KeyFiles(cfg.tls.key, cfg.tls.cert, where) if cfg.tls else None
        self._peers: dict[bytes, Peer] = {}
        self._by_fp: dict[str, Peer] = {}
        self._lock = threading.Lock()

    def _peer(self, context: grpc.ServicerContext) -> Peer | None:
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            return None
        pem = pems[0]
        peer = self._peers.get(pem)
        if peer is None:
            try:
                cert = load_cert(pem)
            except ValueError:
                return None
            peer = Peer("coordinator", common_name(cert), fingerprint(cert), pem.decode("ascii"))
            with self._lock:
                if len(self._peers) > _MAX_PEERS:
                    self._peers.clear()
                    self._by_fp.clear()
                self._peers[pem] = peer
                self._by_fp[peer.fingerprint] = peer
        return peer

    def of_request(
        self, request: pb.ExecuteRequest, context: grpc.ServicerContext
    ) -> dict[str, Any]:
        """The request's evidence, for its audit line."""
        p = request.principal
        keys = hashlib.sha256()
        for k in request.key_sets:
            keys.update(k.name.encode() + b"\0" + k.arrow_ipc)
        out: dict[str, Any] = {"sql_sha256": sql_sha256(request.sql)}
        # What the caller sent, bounded: a request that is refused must not write
        # whatever it likes into the log (a coordinator's are 16 and ~72 bytes).
        if p.nonce:
            out.update(nonce=p.nonce[:_MAX_NONCE].hex(), issued_unix_ms=p.issued_unix_ms)
        if p.signature and len(p.signature) <= _MAX_SIGNATURE:
            out.update(
                principal_sig=base64.b64encode(p.signature).decode(), keys_sha256=keys.hexdigest()
            )
        elif p.signature:
            out["principal_sig_sha256"] = hashlib.sha256(p.signature).hexdigest()
        peer = self._peer(context) if self.key is not None else None
        if peer is not None:
            out["coordinator_cert"] = peer.fingerprint
        return out

    def peers(self, record: dict[str, Any]) -> tuple[Peer, ...]:
        """The certificate a line names, for the log to carry once per file."""
        peer = self._by_fp.get(str(record.get("coordinator_cert", "")))
        return (peer,) if peer is not None else ()

    def receipt(self, request: pb.ExecuteRequest, record: dict[str, Any]) -> pb.Receipt:
        """The signed receipt for a call whose line has been written."""
        r = Receipt(
            connector=self.name,
            query_id=request.query_id,
            sql_sha256=str(record.get("sql_sha256") or sql_sha256(request.sql)),
            outcome=str(record.get("outcome", "")),
            rows=int(record.get("rows", 0)),
            ipc_bytes=int(record.get("bytes", 0)),
            audit_seq=int(record.get("audit_seq", 0)),
            audit_hash=str(record.get("audit_hash", "")),
            time_unix_ms=int(time.time() * 1000),
            coordinator=str(record.get("coordinator", "")),
            user=str(record.get("user", "")),
            nonce=request.principal.nonce.hex(),
        )
        return receipt_to_proto(sign(r, current(self.key)))

    def trail(
        self, request: pb.ExecuteRequest, context: grpc.ServicerContext, record: dict[str, Any]
    ) -> None:
        """Add the receipt of a failing call to its trailing metadata (sent with the
        status when the handler returns, so after ``abort`` is still in time); what
        the trailers already hold (the ErrorInfo) stays."""
        if "audit_seq" not in record:
            return
        data = self.receipt(request, record).SerializeToString()
        kept = tuple(
            (k, v) for k, v in (context.trailing_metadata() or ()) if k != RECEIPT_METADATA
        )
        context.set_trailing_metadata((*kept, (RECEIPT_METADATA, data)))
