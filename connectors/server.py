"""The gRPC servicer around any backend: checks, audit, streaming, cancel."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import grpc

from fedsql.connectors.audit import AuditLog, Rotation, audited_sql, public_message
from fedsql.connectors.backend import Backend, BackendError, Interrupter
from fedsql.connectors.calls import (
    QUERY_ID,
    CallEnded,
    Counter,
    Ending,
    Explained,
    Watchdog,
    busy_message,
    limit_message,
    over_limit,
    read_request,
    status_of,
    utc_now,
)
from fedsql.connectors.catalog_view import CatalogView
from fedsql.connectors.checked import Checker
from fedsql.connectors.config import AgencyConfig
from fedsql.connectors.evidence import Evidence
from fedsql.connectors.execution import FragmentRunner
from fedsql.connectors.identity import Gate
from fedsql.connectors.metrics import (
    SLOT_WAIT_SECONDS,
    NodeMetrics,
    test_delay_seconds,
)
from fedsql.connectors.opening import engine_limits
from fedsql.errors import RefusedFragment
from fedsql.hashkey import fingerprint
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.version import __version__
from fedsql.wire import (
    NodeStatus,
    reader_to_ipc_chunks,
    status_to_proto,
)

log = logging.getLogger(__name__)


class ConnectorService(pb_grpc.ConnectorServicer):
    def __init__(self, cfg: AgencyConfig, backend: Backend, hash_key: bytes | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        self.runner = FragmentRunner(backend, hash_key, cfg.backend.engine, engine_limits(cfg))
        self.key_fingerprint = fingerprint(hash_key)  # names the key, never shows it
        self.policy = cfg.policy
        # Signed with the node's TLS key (unsigned, hash-chained only, without TLS).
        self.evidence = Evidence(cfg)
        self.audit = AuditLog(
            cfg.audit_log,
            self.evidence.key,
            Rotation(cfg.audit.rotate_bytes, cfg.audit.rotate_daily),
            cfg.name,
            cfg.audit.checkpoint_seconds,
        )
        self.audit.start(backend=backend.kind)
        self.gate = Gate(cfg)
        self._tables = {t.full_name.lower(): t for t in backend.tables()}
        # Names that may appear in errors sent back (anything else quoted is blanked).
        self._known = frozenset(
            [n for t in self._tables.values() for n in (t.name.lower(), t.schema.lower())]
            + [f.name.lower() for t in self._tables.values() for f in t.arrow_schema]
        )
        self.checker = Checker(self._tables, backend.default_schemas, self.policy, self.runner)
        self.catalogs = CatalogView(cfg, backend, self._tables, self.gate, self.key_fingerprint)
        self._running: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        slots = cfg.max_concurrent_fragments
        self.metrics = NodeMetrics(
            cfg.name, slots, cfg.limits.user_share(slots), cfg.limits.coordinator_share(slots)
        )
        self.metrics_url = ""
        self.delay = test_delay_seconds()

    @property
    def active(self) -> int:
        return self.metrics.active

    def _record(self, record: dict[str, Any]) -> None:
        """The fragment's audit line, its counters and its structured log line."""
        sealed = self.audit.write(record, self.evidence.peers(record))
        record.update(audit_seq=sealed.seq, audit_hash=sealed.hash)  # for its receipt
        self.metrics.record(record)
        log.debug(
            "fragment query_id=%s outcome=%s rows=%s bytes=%s seconds=%s",
            record["query_id"],
            record["outcome"],
            record.get("rows", 0),
            record.get("bytes", 0),
            record.get("seconds", 0),
        )

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.Status:
        try:  # counts and load are the agency's business: allowed coordinators only
            self.gate.check_peer(context)
        except RefusedFragment as e:
            if self.gate.refused(context, e, self.audit.write, rpc="GetStatus"):
                log.warning("status request refused: %s", e)
            context.abort(e.code, str(e))
        active, outcomes, rows, nbytes = self.metrics.snapshot()
        return status_to_proto(
            NodeStatus(
                connector=self.cfg.name,
                version=__version__,
                backend=self.backend.kind,
                tables=len(self._tables),
                active_fragments=active,
                max_concurrent_fragments=self.metrics.max_concurrent,
                uptime_seconds=time.time() - self.metrics.started,
                fragments=outcomes,
                rows=rows,
                bytes=nbytes,
                metrics_url=self.metrics_url,
                latency=self.metrics.latency(),
                hash_key_fingerprint=self.key_fingerprint,
            )
        )

    def GetCatalog(
        self, request: pb.GetCatalogRequest, context: grpc.ServicerContext
    ) -> pb.Catalog:
        try:
            caller = self.gate.admit(context, request)
        except RefusedFragment as e:
            if self.gate.refused(context, e, self.audit.write, request, rpc="GetCatalog"):
                log.warning("catalog request refused: %s", e)
            context.abort(e.code, str(e))
        return self.catalogs.for_caller(caller)

    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.CancelResponse:
        try:
            peer = self.gate.check_peer(context)
        except RefusedFragment as e:
            rec = {"time": utc_now(), "peer": context.peer(), "cancel_query_id": request.query_id}
            if self.gate.refused(context, e, self.audit.write, record=rec, rpc="Cancel"):
                log.warning("cancel request refused: %s", e)
            context.abort(e.code, str(e))
        with self._lock:
            runs = list(self._running.get(request.query_id, ()))
        mine = [stop for stop, who in runs if who == peer]
        for stop in mine:
            stop.fire()
        return pb.CancelResponse(cancelled=len(mine))

    def Execute(self, request: pb.ExecuteRequest, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        """Run one fragment; every call, whatever its end, leaves one audit line."""
        bad_id = not QUERY_ID.fullmatch(request.query_id or "-")
        if bad_id:  # bounded before it goes anywhere (the log, a receipt, a trailer)
            request.query_id = request.query_id[:64] + "~"
        record: dict[str, Any] = {
            "time": utc_now(),
            "query_id": request.query_id or "-",
            "peer": context.peer(),
            **audited_sql(request.sql),
            **self.evidence.of_request(request, context),
        }
        context = Explained(context, record)  # every abort also says why, for programs
        try:
            yield from self._execute(request, context, record)
        except Exception:
            if "outcome" in record:
                self.evidence.trail(request, context, record)  # the failed call's receipt
                raise  # audited: an abort on its way out, or a failure after the line
            qid = record["query_id"]
            log.exception("query %s: internal error while handling a fragment", qid)
            record.update(outcome="internal", error="internal error")
            self._record(record)
            self.evidence.trail(request, context, record)
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"connector '{self.cfg.name}' failed on this fragment (an internal error; "
                f"query id {qid}); the agency's log has the details",
            )

    def _execute(
        self, request: pb.ExecuteRequest, context: grpc.ServicerContext, record: dict[str, Any]
    ):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        qid = record["query_id"]
        try:
            caller = self.gate.admit(context, request)
        except RefusedFragment as e:
            # Bounded claims, not a user; a flood from one peer gets a summary line.
            written = self.gate.refused(
                context, e, self._record, request, record, "Execute", self.audit.write
            )
            if written:
                log.warning("query %s: request refused: %s", record["query_id"], e)
            else:
                self.metrics.finished("refused")
            context.abort(e.code, str(e))
        principal = caller.principal
        record.update(
            coordinator=caller.coordinator,
            user=principal.user,
            roles=list(principal.roles),
            purpose=principal.purpose,
            authenticated=caller.authenticated,
        )
        try:  # the caller known: a malformed request is its mistake
            keys = read_request(request, self.cfg.name, record)
            self.gate.check_purpose(caller)
            checked = self.checker.check(
                request.sql, frozenset(keys), principal.roles, caller.coordinator
            )
            record["tables"], record["columns"] = list(checked.tables), list(checked.columns)
            self.gate.check_grants(caller, record["tables"])
        except BackendError as e:  # the SQL to run could not be checked: a fedsql bug
            record.update(outcome="unsupported" if e.unsupported else "error", error=str(e))
            self._record(record)
            context.abort(status_of(e), f"backend {self.backend.kind}: {e}")
        except RefusedFragment as e:
            record.update(outcome="refused", error=str(e))
            if e.reason:
                record["refusal"] = e.reason  # its ErrorInfo reason (calls.Explained)
            self._record(record)
            log.info("fragment refused query_id=%s reason=%r", qid, str(e))
            context.abort(e.code, str(e))
        record["masks"] = list(checked.masks)
        # Names the fragment itself uses may be quoted back in errors; values may not.
        known = self._known | checked.names
        limits = self.cfg.limits
        remaining = context.time_remaining()
        share = (principal.user, caller.coordinator)
        full = self.metrics.admit(min(SLOT_WAIT_SECONDS, remaining or SLOT_WAIT_SECONDS), *share)
        if full:
            record.update(outcome="busy", busy=full)
            self._record(record)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                busy_message(self.metrics, self.cfg.name, full, share),
            )
        stop = Interrupter()  # Cancel, a client gone, max_seconds: stops even a starting query
        entry = (stop, self.gate.peer_name(context))  # Cancel matches on the same peer
        with self._lock:
            self._running.setdefault(qid, []).append(entry)
        if not context.add_callback(stop.fire):  # the client went away: stop the query
            stop.fire()  # ... which happened already
        watchdog = Watchdog(stop, limits.max_seconds, started)
        try:
            run = self.runner.start(
                checked.tree, int(request.batch_rows), checked.covered, keys, stop, checked.sql
            )
        except RefusedFragment as e:  # what would run does not read back as checked
            self._done(qid, entry, watchdog, share)
            record.update(outcome="refused", error=str(e))
            self._record(record)
            log.info("fragment refused query_id=%s reason=%r", qid, str(e))
            context.abort(e.code, str(e))
        except BackendError as e:
            self._done(qid, entry, watchdog, share)
            log.debug("backend error query_id=%s error=%r", qid, str(e))
            end = self._ending(e, stop, watchdog, known)
            record.update(outcome=end.outcome, **({"error": end.error} if end.error else {}))
            self._record(record)
            context.abort(end.code, end.message)
        except BaseException:
            self._done(qid, entry, watchdog, share)
            raise
        record["engine"] = run.engine
        counted = Counter(run.reader, self.delay, stop)
        nbytes = 0
        audited = False

        def audit(outcome: str, error: str | None = None) -> None:
            nonlocal audited
            record.update(
                outcome=outcome,
                rows=counted.rows,
                bytes=nbytes,
                seconds=round(time.perf_counter() - started, 6),
            )
            if error:
                record["error"] = error
            self._record(record)
            audited = True

        try:
            for chunk in reader_to_ipc_chunks(counted, compression=request.compression):  # type: ignore[arg-type]
                over = over_limit(limits, counted.rows, nbytes + len(chunk))
                if over:
                    stop.fire()
                    audit("limit", over)
                    context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, limit_message(self.cfg.name, over)
                    )
                nbytes += len(chunk)
                yield pb.ExecuteResponse(arrow_ipc=chunk)
            if watchdog.fired:
                raise BackendError("interrupted", user_error=False)
            # Audited before the last message leaves: a client that has the
            # complete result can rely on the log line being there.
            audit("ok")
            seconds = time.perf_counter() - started
            yield pb.ExecuteResponse(
                stats=pb.ExecuteStats(rows=counted.rows, bytes=nbytes, seconds=seconds),
                receipt=self.evidence.receipt(request, record),
            )
        except (CallEnded, BackendError) as e:
            log.debug("fragment ended early query_id=%s error=%r", qid, str(e))
            end = self._ending(e if isinstance(e, BackendError) else None, stop, watchdog, known)
            audit(end.outcome, end.error)
            if context.is_active():
                context.abort(end.code, end.message)
        finally:
            if not audited:
                audit("cancelled")
            run.close()
            self._done(qid, entry, watchdog, share)

    def _done(
        self,
        qid: str,
        entry: tuple[Interrupter, str],
        watchdog: Watchdog,
        share: tuple[str, str],
    ) -> None:
        watchdog.stop()
        entry[0].close()
        with self._lock:
            lst = self._running.get(qid, [])
            if entry in lst:
                lst.remove(entry)
            if not lst:
                self._running.pop(qid, None)
        self.metrics.release(*share)

    def _ending(
        self, e: BackendError | None, stop: Interrupter, watchdog: Watchdog, known: frozenset[str]
    ) -> Ending:
        """How a fragment whose backend query failed or was stopped ends (``e`` is
        None when the call itself ended): cancelled, over a limit, or the error."""
        limits, name = self.cfg.limits, self.cfg.name
        if e is None or (stop.fired and not watchdog.fired):
            return Ending("cancelled", "", grpc.StatusCode.CANCELLED, "the fragment was cancelled")
        if watchdog.fired:
            over = f"max_seconds = {limits.max_seconds:g}"
            return Ending(
                "limit", over, grpc.StatusCode.DEADLINE_EXCEEDED, limit_message(name, over)
            )
        if e.limit:
            over = f"{e.limit} = {getattr(limits, e.limit)}"
            return Ending(
                "limit", over, grpc.StatusCode.RESOURCE_EXHAUSTED, limit_message(name, over)
            )
        msg = public_message(str(e), known)
        outcome = "unsupported" if e.unsupported else "error"
        return Ending(outcome, msg, status_of(e), f"backend {self.backend.kind}: {msg}")
