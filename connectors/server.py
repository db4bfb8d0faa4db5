"""The gRPC servicer around any backend: checks, audit, streaming, cancel."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

import grpc
import pyarrow as pa

from fedsql import lang
from fedsql.connectors import registry
from fedsql.connectors.audit import AuditLog, Rotation, audited_sql, public_message
from fedsql.connectors.backend import Backend, BackendError, Interrupter
from fedsql.connectors.calls import (
    QUERY_ID,
    CallEnded,
    Counter,
    Explained,
    Watchdog,
    over_limit,
    status_of,
    utc_now,
)
from fedsql.connectors.checked import Checker
from fedsql.connectors.config import AgencyConfig
from fedsql.connectors.evidence import Evidence
from fedsql.connectors.execution import FragmentRunner
from fedsql.connectors.identity import Caller, Gate
from fedsql.connectors.metrics import (
    SLOT_WAIT_SECONDS,
    NodeMetrics,
    test_delay_seconds,
)
from fedsql.errors import ConfigError, RefusedFragment
from fedsql.hashkey import fingerprint
from fedsql.policy.load import validate
from fedsql.policy.masks import HASH_KEY_ENV, masked_type, register_hash
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.version import __version__
from fedsql.wire import (
    COMPRESSIONS,
    NodeStatus,
    RemoteCatalog,
    catalog_to_proto,
    key_set_from_proto,
    reader_to_ipc_chunks,
    status_to_proto,
)

log = logging.getLogger(__name__)


def engine_limits(cfg: AgencyConfig) -> dict[str, Any]:
    """Memory and spill limits of the node's own DuckDB engines ([limits])."""
    return {"memory_limit": cfg.limits.max_memory, "max_temp_size": cfg.limits.max_temp}


def open_backend(cfg: AgencyConfig, hash_key: bytes | None = None) -> Backend:
    """The configured backend, opened by its kind (``registry.py``)."""

    def setup(con: Any) -> None:
        register_hash(con, hash_key)

    try:
        return registry.open_backend(cfg.backend, setup, engine_limits(cfg))
    except ConfigError as e:
        raise ConfigError(f"{cfg.source}: {e}") from None


def load_policy(cfg: AgencyConfig, backend: Backend, hash_key: bytes | None) -> None:
    """Check the agency's policies against its real tables; refuse to start if wrong."""
    schemas = {t.full_name.lower(): t.arrow_schema for t in backend.tables()}
    validate(cfg.policy, schemas, f"connector '{cfg.name}'")
    hashed = [m for m in cfg.policy.masks if m.rule == "hash"]
    if hashed and hash_key is None:
        raise ConfigError(
            f"{hashed[0].where}: a 'hash' mask needs the federation's secret key: set "
            f"hash_key_file under [connector] or the environment variable {HASH_KEY_ENV}"
        )


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
        self._catalogs: dict[tuple[str, ...], pb.Catalog] = {}
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

    def _catalog_for(self, caller: Caller) -> pb.Catalog:
        """The catalog as this caller may see it: only the tables a grant opens to
        them; no row count where a row filter hides rows from them (it would tell
        how many); a row filter's condition only for those it does not bind."""
        roles = tuple(sorted(set(caller.principal.roles)))
        user = caller.principal.user if self.cfg.grants is not None else ""
        key = (user, *roles)
        cached = self._catalogs.get(key)
        if cached is not None:
            return cached
        tables = []
        for full, t in self._tables.items():
            if not self.gate.may_query(caller, full):
                continue
            tp = self.policy.for_table(full, roles)
            masks, filters = self.policy.rules_for(full)
            fields = []
            for f in t.arrow_schema:
                m = tp.masks.get(f.name.lower())
                fields.append(f.with_type(masked_type(m, f.type)) if m else f)
            tables.append(
                replace(
                    t,
                    arrow_schema=pa.schema(fields),
                    masks=tuple(
                        (f.name, tp.masks[f.name.lower()].describe().split(" [")[0])
                        for f in t.arrow_schema
                        if f.name.lower() in tp.masks
                    ),
                    mask_rules=tuple(
                        (f.name, m.describe())
                        for m in masks
                        for f in t.arrow_schema
                        if f.name.lower() == m.column.lower()
                    ),
                    row_filtered=bool(tp.filters),
                    row_filters=tuple(
                        f.describe_kind() if tp.filters else f.describe() for f in filters
                    ),
                    row_count_estimate=-1 if tp.filters else t.row_count_estimate,
                )
            )
        cat = catalog_to_proto(
            RemoteCatalog(
                self.cfg.name,
                __version__,
                self.backend.kind,
                tuple(tables),
                self.backend.dialect,
                self.backend.capabilities,
                lang.VERSION,
                next((s for s in self.backend.default_schemas if s), "main"),
                hash_key_fingerprint=self.key_fingerprint,
            )
        )
        with self._lock:
            self._catalogs[key] = cat
        return cat

    def GetCatalog(
        self, request: pb.GetCatalogRequest, context: grpc.ServicerContext
    ) -> pb.Catalog:
        try:
            caller = self.gate.admit(context, request)
        except RefusedFragment as e:
            if self.gate.refused(context, e, self.audit.write, request, rpc="GetCatalog"):
                log.warning("catalog request refused: %s", e)
            context.abort(e.code, str(e))
        return self._catalog_for(caller)

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
        if not QUERY_ID.fullmatch(request.query_id or "-"):  # the caller known: its mistake
            msg = "a query id is 1 to 128 letters, digits or - _ . : (fedsql makes them so)"
            record.update(outcome="refused", error=msg)
            self._record(record)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)
        try:
            keys = dict(key_set_from_proto(k) for k in request.key_sets)
        except ValueError as e:
            keys = {}
            record.update(outcome="refused", error=str(e))
            self._record(record)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if keys:
            record["key_sets"] = {n: t.num_rows for n, t in keys.items()}
        if request.fragment_language not in ("", lang.VERSION):
            msg = (
                f"the fragment is written in fragment language {request.fragment_language!r}; "
                f"connector '{self.cfg.name}' speaks version {lang.VERSION}"
            )
            record.update(outcome="refused", error=msg)
            self._record(record)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)
        if request.compression not in COMPRESSIONS:
            msg = f"compression {request.compression!r} is not one of lz4, zstd"
            record.update(outcome="refused", error=msg)
            self._record(record)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)
        try:
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
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._busy_message(full, share))
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
            if stop.fired and not watchdog.fired:
                record.update(outcome="cancelled")
                self._record(record)
                context.abort(grpc.StatusCode.CANCELLED, "the fragment was cancelled")
            if watchdog.fired:
                over = f"max_seconds = {limits.max_seconds:g}"
                record.update(outcome="limit", error=over)
                self._record(record)
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self._limit_message(over))
            if e.limit:
                over = f"{e.limit} = {getattr(limits, e.limit)}"
                record.update(outcome="limit", error=over)
                self._record(record)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._limit_message(over))
            msg = public_message(str(e), known)
            log.debug("backend error query_id=%s error=%r", qid, str(e))
            record.update(outcome="unsupported" if e.unsupported else "error", error=msg)
            self._record(record)
            context.abort(status_of(e), f"backend {self.backend.kind}: {msg}")
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
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._limit_message(over))
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
            if isinstance(e, CallEnded) or (stop.fired and not watchdog.fired):
                audit("cancelled")
                if context.is_active():
                    context.abort(grpc.StatusCode.CANCELLED, "the fragment was cancelled")
                return
            if watchdog.fired:
                over = f"max_seconds = {limits.max_seconds:g}"
                audit("limit", over)
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self._limit_message(over))
            if isinstance(e, BackendError) and e.limit:
                over = f"{e.limit} = {getattr(limits, e.limit)}"
                audit("limit", over)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._limit_message(over))
            log.debug("backend error query_id=%s error=%r", qid, str(e))
            msg = public_message(str(e), known)
            audit("error", msg)
            if context.is_active():
                code = (
                    grpc.StatusCode.INVALID_ARGUMENT if e.user_error else grpc.StatusCode.INTERNAL
                )
                context.abort(code, f"backend {self.backend.kind}: {msg}")
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

    def _busy_message(self, full: str, share: tuple[str, str]) -> str:
        m, name = self.metrics, self.cfg.name
        if full == "user":
            return (
                f"connector '{name}' is busy for user '{share[0]}': {m.user_share} of their "
                f"fragments are running, their share of its {m.max_concurrent} slots "
                "(max_fragments_per_user); retry when one has finished"
            )
        if full == "coordinator":
            return (
                f"connector '{name}' is busy for coordinator '{share[1]}': {m.coordinator_share} "
                f"of its fragments are running, its share of {m.max_concurrent} slots "
                "(max_fragments_per_coordinator); retry shortly"
            )
        return (
            f"connector '{name}' is busy: {m.max_concurrent} fragments are running, the "
            "most it runs at once; retry shortly"
        )

    def _limit_message(self, over: str) -> str:
        return (
            f"the fragment exceeded {over} ([limits] of connector '{self.cfg.name}') and was "
            "stopped; narrow the query (filters, aggregates, LIMIT) or ask the agency"
        )
