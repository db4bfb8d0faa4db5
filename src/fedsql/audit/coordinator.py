"""The coordinator's audit log: who asked what, when and why, and what each agency
signed for it.

``[coordinator] audit_log = "path"`` in FEDERATION.toml turns it on, for
embedded coordinators (``fedsql.connect``, ``fedsql query``) and ``fedsql
serve`` alike. One ``query`` line per query: time, query id, user, roles,
purpose, the SQL (bounded as the connectors bound it), the tables, every call
made to an agency (fragment, nonce, SQL hash, outcome) with the receipt the
agency signed for it, the agencies that answered, the outcome, rows and
seconds. The line is signed with the coordinator's TLS client key and made
durable (fsync) before ``fed.sql`` returns or raises.

A stream (``fed.stream``) writes its ``query`` line, outcome ``streaming``,
before the reader is handed out, so who asked what is on disk before any row
reaches the analyst; the receipts come with the agencies' last messages, so
they are checked and logged in a ``query_end`` line when the stream ends (or
is dropped, outcome ``abandoned``). When one agency's batches pass straight
through, they reach the analyst before its receipt does: a receipt that fails
then fails the stream at its end, after the rows, and says so in the log.

Processes that share a path share the chain (one writer per path in a
process, ``flock`` between processes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from fedsql.audit.chain import ChainWriter, Peer, Rotation, audited_sql, utc_now
from fedsql.audit.receipts import Expected, Receipt, check, signature_problem
from fedsql.audit.signing import (
    Authority,
    KeyFiles,
    SigningKey,
    cert_pem,
    common_name,
    current,
    fingerprint,
    load_cert,
)
from fedsql.config import ConnectorRef, FederationConfig
from fedsql.errors import (
    CatalogError,
    ExecutionError,
    FedSQLError,
    FragmentLimitExceeded,
    FragmentRefused,
    PlanError,
    PolicyError,
    QueryCancelled,
    QueryTimeout,
)


@dataclass
class Call:
    """One Execute call the coordinator made, and the receipt it got back."""

    agency: str
    fragment: str
    nonce: str  # hex, as sent in the principal
    sql_sha256: str
    outcome: str = "sent"  # the receipt's outcome once one arrived; "no receipt" if none came
    receipt: Receipt | None = None
    problem: str = ""  # why the receipt was rejected ("" when accepted or absent)

    def to_log(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "agency": self.agency,
            "fragment": self.fragment,
            "nonce": self.nonce,
            "sql_sha256": self.sql_sha256,
            "outcome": self.outcome,
        }
        if self.receipt is not None:
            out["receipt"] = self.receipt.to_log()
        if self.problem:
            out["receipt_problem"] = self.problem
        return out


@dataclass
class Calls:
    """The calls of one query (appended to from the fetch threads)."""

    items: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, call: Call) -> None:
        with self._lock:
            self.items.append(call)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.items)


class ReceiptChecker:
    """Checks the receipts of one connector: signed by a certificate of the
    federation CA naming that agency (TLS), or merely consistent (plaintext)."""

    def __init__(self, ref: ConnectorRef) -> None:
        self.connector = ref.name
        self.server_name = (ref.tls.server_name or ref.name) if ref.tls else ref.name
        self.authority = (
            Authority.load(ref.tls.ca, f"connector '{ref.name}': [connector.tls].ca")
            if ref.tls
            else None
        )

    def accept(
        self, call: Call, receipt: Receipt | None, query_id: str, required: bool = True
    ) -> str:
        """Record ``receipt`` on ``call``; returns why it was rejected ("" when accepted).
        ``required``: a complete result over TLS must come with one (a failed call may
        have none: the agency was unreachable, or the coordinator cancelled it)."""
        if receipt is None:
            call.outcome = "no receipt"
            call.problem = (
                "the agency sent no receipt" if required and self.authority is not None else ""
            )
            return call.problem
        call.receipt, call.outcome = receipt, receipt.outcome
        want = Expected(self.connector, self.server_name, query_id, call.sql_sha256, call.nonce)
        call.problem = check(receipt, want, self.authority)
        return call.problem


def outcome_of(error: BaseException | None) -> str:
    """A query's outcome in the coordinator's log."""
    if error is None:
        return "ok"
    if isinstance(error, QueryCancelled):
        return "cancelled"
    if isinstance(error, QueryTimeout):
        return "timeout"
    if isinstance(error, FragmentLimitExceeded):
        return "limit"
    if isinstance(error, FragmentRefused | PolicyError | PlanError | CatalogError):
        return "refused"
    if isinstance(error, FedSQLError):
        return "error"
    if isinstance(error, Exception):
        return "internal"
    return "interrupted"


_SHARED: dict[Path, tuple[ChainWriter, int]] = {}
_SHARED_LOCK = threading.Lock()


def _signing_key(config: FederationConfig) -> KeyFiles | None:
    """The coordinator's client key ([coordinator.tls], else the first connector's),
    followed when it is renewed."""
    tls = next((c.tls for c in config.connectors if c.tls is not None), None)
    if tls is None:
        return None
    return KeyFiles(tls.key, tls.cert, f"{config.source}: [coordinator.tls]")


class CoordinatorAudit:
    """One Federation's handle on its (shared) audit log."""

    def __init__(self, path: Path, key: SigningKey | None, rotation: Rotation) -> None:
        self.path = path.resolve()
        self.key = key
        with _SHARED_LOCK:
            writer, n = _SHARED.get(self.path, (None, 0))  # type: ignore[assignment]
            if writer is None:
                head = {"role": "coordinator", "name": self.identity}
                writer = ChainWriter(self.path, key, rotation, head)
            _SHARED[self.path] = (writer, n + 1)
        self._w = writer
        self._certs: dict[str, Peer] = {}

    @property
    def identity(self) -> str:
        """The coordinator's certificate name, as connectors record it ("" unsigned)."""
        key = current(self.key)
        return key.name if key is not None else ""

    @classmethod
    def open(cls, config: FederationConfig) -> CoordinatorAudit | None:
        if config.audit_log is None:
            return None
        rotation = Rotation(config.audit.rotate_bytes, config.audit.rotate_daily)
        return cls(config.audit_log, _signing_key(config), rotation)

    def _peers(self, calls: list[Call]) -> list[Peer]:
        out = []
        for c in calls:
            der = c.receipt.certificate if c.receipt is not None else b""
            if not der:
                continue
            fp = c.receipt.cert_sha256 if c.receipt is not None else ""
            peer = self._certs.get(fp)
            if peer is None:
                try:
                    cert = load_cert(der)
                except ValueError:
                    continue
                peer = Peer("connector", common_name(cert), fingerprint(cert), cert_pem(cert))
                self._certs[fp] = peer
            out.append(peer)
        return list({p.fingerprint: p for p in out}.values())

    def query(
        self,
        *,
        started: str,
        query_id: str,
        user: str,
        roles: tuple[str, ...],
        purpose: str,
        sql: str,
        tables: tuple[str, ...],
        calls: list[Call],
        error: BaseException | None,
        rows: int | None,
        seconds: float,
        kind: str = "query",
        outcome: str = "",
    ) -> None:
        """Write (and fsync) one query's line."""
        record: dict[str, Any] = {"kind": kind, "time": started, "query_id": query_id}
        if kind == "query":
            record.update(
                coordinator=self.identity,
                user=user,
                roles=list(roles),
                purpose=purpose,
                **audited_sql(sql),
                tables=sorted(tables),
            )
        record.update(
            agencies=sorted({c.agency for c in calls if c.outcome == "ok" and not c.problem}),
            fragments=[c.to_log() for c in calls],
            outcome=outcome or outcome_of(error),
            seconds=round(seconds, 6),
            ended=utc_now(),
        )
        if rows is not None:
            record["rows"] = rows
        if error is not None:
            record["error"] = str(error) if isinstance(error, FedSQLError) else type(error).__name__
        self._w.write(record, self._peers(calls))

    def close(self) -> None:
        with _SHARED_LOCK:
            writer, n = _SHARED.get(self.path, (self._w, 1))
            if n <= 1:
                _SHARED.pop(self.path, None)
                writer.close()
            else:
                _SHARED[self.path] = (writer, n - 1)


log = logging.getLogger(__name__)


class QueryEntry:
    """One query's record: collects its calls, and writes its line(s) at the end.
    Without an audit log it only collects."""

    def __init__(
        self,
        audit: CoordinatorAudit | None,
        user: str,
        roles: tuple[str, ...],
        purpose: str,
        sql: str,
        query_id: str,
    ) -> None:
        self.audit = audit
        self.who = (user, roles, purpose)
        self.sql = sql
        self.query_id = query_id
        self.calls = Calls()
        self.tables: tuple[str, ...] = ()
        self.started = utc_now()
        self._t0 = time.perf_counter()

    def planned(self, plan: Any) -> None:
        """Note the tables of the plan (the last one, if the query is re-planned)."""
        self.tables = tuple(sorted({t for f in plan.fragments for t in f.tables}))

    def _write(self, error: BaseException | None, rows: int | None, **kw: Any) -> None:
        assert self.audit is not None
        user, roles, purpose = self.who
        self.audit.query(
            started=self.started,
            query_id=self.query_id,
            user=user,
            roles=roles,
            purpose=purpose,
            sql=self.sql,
            tables=self.tables,
            calls=self.calls.snapshot(),
            error=error,
            rows=rows,
            seconds=time.perf_counter() - self._t0,
            **kw,
        )

    def finished(self, rows: int) -> None:
        """Durable before the result is handed over; a log that cannot be written
        withholds the result."""
        if self.audit is None:
            return
        try:
            self._write(None, rows)
        except OSError as e:
            raise ExecutionError(
                f"the coordinator's audit log {self.audit.path} cannot be written "
                f"({e.strerror or e}); the result was withheld"
            ) from None

    def failed(self, error: BaseException, kind: str = "query") -> None:
        if self.audit is None:
            return
        try:
            self._write(error, None, kind=kind)
        except OSError as e:
            log.error("query_id=%s: the audit log cannot be written: %s", self.query_id, e)

    def streaming(self, reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        """Log the query before the first batch leaves; log its end (receipts,
        outcome, rows) when the stream ends, fails or is dropped."""
        if self.audit is None:
            return reader
        self._write(None, None, outcome="streaming")
        entry = self

        def batches() -> Iterator[pa.RecordBatch]:
            rows, ended = 0, False
            try:
                for b in reader:
                    rows += b.num_rows
                    yield b
                ended = True
            except GeneratorExit:
                entry._end(None, rows, "abandoned")
                raise
            except BaseException as e:
                entry._end(e, rows)
                raise
            if ended:
                entry._end(None, rows, "ok")

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    def _end(self, error: BaseException | None, rows: int, outcome: str = "") -> None:
        try:
            self._write(error, rows, kind="query_end", outcome=outcome)
        except OSError as e:
            log.error("query_id=%s: the audit log cannot be written: %s", self.query_id, e)


__all__ = [
    "QueryEntry",
    "Call",
    "Calls",
    "CoordinatorAudit",
    "ReceiptChecker",
    "outcome_of",
    "signature_problem",
]
