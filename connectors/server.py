"""The gRPC servicer around any backend: checks, audit, streaming, cancel."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlglot import exp

from fedsql import __version__
from fedsql.config import AgencyConfig
from fedsql.connectors.backend import Backend, BackendError
from fedsql.connectors.execution import FragmentRunner
from fedsql.connectors.guard import EXPOSED_META, check_fragment
from fedsql.connectors.metrics import (
    SLOT_WAIT_SECONDS,
    TEST_DELAY_ENV,
    NodeMetrics,
    serve_metrics,
    test_delay_seconds,
)
from fedsql.errors import ConfigError, RefusedFragment
from fedsql.policy import apply_views, view_for
from fedsql.policy.load import validate
from fedsql.policy.masks import HASH_KEY_ENV, load_hash_key, masked_type, register_hash
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import (
    COMPRESSIONS,
    GRPC_OPTIONS,
    NodeStatus,
    RemoteCatalog,
    catalog_to_proto,
    key_set_from_proto,
    principal_from_proto,
    reader_to_ipc_chunks,
    status_to_proto,
)

log = logging.getLogger(__name__)


def open_backend(cfg: AgencyConfig, hash_key: bytes | None = None) -> Backend:
    b = cfg.backend

    def setup(con: Any) -> None:
        register_hash(con, hash_key)

    try:
        if b.kind == "duckdb":
            from fedsql.connectors.duckdb import open_duckdb

            return open_duckdb(b.path, b.tables, setup)
        if b.kind == "files":
            from fedsql.connectors.files import open_files

            return open_files(b.path, b.tables, setup)
        if b.kind == "sqlite":
            from fedsql.connectors.sqlite import SQLiteBackend

            return SQLiteBackend(b.path, b.tables)
        if b.kind == "postgres":
            from fedsql.connectors.postgres import PostgresBackend

            return PostgresBackend(b)
    except (FileNotFoundError, ValueError, BackendError) as e:
        raise ConfigError(f"{cfg.source}: [backend]: {e}") from None
    raise ConfigError(f"{cfg.source}: unknown backend kind {b.kind}")


class AuditLog:
    """Append-only JSON lines, one per fragment, flushed before results leave."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._f = path.open("a", encoding="utf-8") if path else None

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            return
        line = json.dumps(record, sort_keys=True, default=str)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f:
            self._f.close()


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
        self.runner = FragmentRunner(backend, hash_key)
        self.policy = cfg.policy
        self.audit = AuditLog(cfg.audit_log)
        self._tables = {t.full_name.lower(): t for t in backend.tables()}
        self._exposed = {(t.schema.lower(), t.name.lower()) for t in self._tables.values()}
        self._catalogs: dict[tuple[str, ...], pb.Catalog] = {}
        self._running: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self.metrics = NodeMetrics(cfg.name, cfg.max_concurrent_fragments)
        self.metrics_url = ""
        self.delay = test_delay_seconds()

    @property
    def active(self) -> int:
        return self.metrics.active

    def _record(self, record: dict[str, Any]) -> None:
        """The fragment's audit line, its counters and its structured log line."""
        self.audit.write(record)
        self.metrics.finished(record["outcome"], record.get("rows", 0), record.get("bytes", 0))
        log.debug(
            "fragment query_id=%s outcome=%s rows=%s bytes=%s seconds=%s",
            record["query_id"],
            record["outcome"],
            record.get("rows", 0),
            record.get("bytes", 0),
            record.get("seconds", 0),
        )

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.Status:
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
            )
        )

    def _catalog_for(self, roles: tuple[str, ...]) -> pb.Catalog:
        key = tuple(sorted(set(roles)))
        cached = self._catalogs.get(key)
        if cached is not None:
            return cached
        tables = []
        for full, t in self._tables.items():
            tp = self.policy.for_table(full, key)
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
                    row_filters=tuple(f.describe() for f in filters),
                )
            )
        cat = catalog_to_proto(
            RemoteCatalog(
                self.cfg.name,
                __version__,
                self.backend.kind,
                tuple(tables),
                self.backend.dialect,
                self.backend.unsupported,
            )
        )
        with self._lock:
            self._catalogs[key] = cat
        return cat

    def GetCatalog(
        self, request: pb.GetCatalogRequest, context: grpc.ServicerContext
    ) -> pb.Catalog:
        return self._catalog_for(principal_from_proto(request.principal).roles)

    def _apply_policy(self, tree: Any, roles: tuple[str, ...], applied: list[str]) -> Any:
        """Wrap every exposed table in the view this principal may see."""

        def view(table: exp.Table) -> exp.Select | None:
            name = table.meta.get(EXPOSED_META)
            if name is None:
                return None
            tp = self.policy.for_table(name, roles)
            if not tp:
                return None
            applied.extend(f"{name}.{c}:{m.rule}" for c, m in tp.masks.items())
            applied.extend(f"{name}:row_filter" for _ in tp.filters)
            source = table.copy()  # keeps the node's marks: it still reads the exposed table
            source.set("alias", None)
            return view_for(tp, name, self._tables[name].arrow_schema, source=source)

        return apply_views(tree, view) if self.policy else tree

    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.CancelResponse:
        with self._lock:
            runs = list(self._running.get(request.query_id, ()))
        for stop in runs:
            stop()
        return pb.CancelResponse(cancelled=len(runs))

    def Execute(self, request: pb.ExecuteRequest, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        principal = principal_from_proto(request.principal)
        qid = request.query_id or "-"
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "query_id": qid,
            "user": principal.user,
            "roles": list(principal.roles),
            "peer": context.peer(),
            "sql": request.sql,
        }
        try:
            keys = dict(key_set_from_proto(k) for k in request.key_sets)
        except ValueError as e:
            keys = {}
            record.update(outcome="refused", error=str(e))
            self._record(record)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if keys:
            record["key_sets"] = {n: t.num_rows for n, t in keys.items()}
        if request.compression not in COMPRESSIONS:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"compression {request.compression!r} is not one of lz4, zstd",
            )
        try:
            tree = check_fragment(
                request.sql, self._exposed, self.backend.default_schemas, frozenset(keys)
            )
        except RefusedFragment as e:
            record.update(outcome="refused", error=str(e))
            self._record(record)
            log.info("fragment refused query_id=%s reason=%r", qid, str(e))
            context.abort(e.code, str(e))
        applied: list[str] = []
        tree = self._apply_policy(tree, principal.roles, applied)
        record["policies"] = applied
        remaining = context.time_remaining()
        if not self.metrics.admit(min(SLOT_WAIT_SECONDS, remaining or SLOT_WAIT_SECONDS)):
            record.update(outcome="busy")
            self._record(record)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"connector '{self.cfg.name}' is busy: {self.metrics.max_concurrent} fragments "
                "are running, the most it runs at once; retry shortly",
            )
        try:
            run = self.runner.start(tree, int(request.batch_rows), bool(applied), keys)
        except BaseException as e:
            self.metrics.release()
            if not isinstance(e, BackendError):
                raise
            record.update(outcome="unsupported" if e.unsupported else "error", error=str(e))
            self._record(record)
            context.abort(_status(e), f"backend {self.backend.kind}: {e}")
        gone = threading.Event()

        def stop() -> None:  # the call ended (cancelled, timed out, client gone) or Cancel
            gone.set()
            run.cancel()  # stop the backend query

        with self._lock:
            self._running.setdefault(qid, []).append(stop)
        if not context.add_callback(stop):  # the call ended already (cancelled meanwhile)
            stop()
        counted = _Counter(run.reader, self.delay, gone)
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
                nbytes += len(chunk)
                yield pb.ExecuteResponse(arrow_ipc=chunk)
            # Audited before the last message leaves: a client that has the
            # complete result can rely on the log line being there.
            audit("ok")
            seconds = time.perf_counter() - started
            yield pb.ExecuteResponse(
                stats=pb.ExecuteStats(rows=counted.rows, bytes=nbytes, seconds=seconds)
            )
        except (_CallEnded, BackendError) as e:
            # Stopped because the call ended or Cancel came: audited as cancelled below.
            if gone.is_set() or isinstance(e, _CallEnded):
                if context.is_active():
                    context.abort(grpc.StatusCode.CANCELLED, "the fragment was cancelled")
                return
            audit("error", str(e))
            if context.is_active():
                code = (
                    grpc.StatusCode.INVALID_ARGUMENT if e.user_error else grpc.StatusCode.INTERNAL
                )
                context.abort(code, f"backend {self.backend.kind}: {e}")
        finally:
            if not audited:
                audit("cancelled")
            run.close()
            with self._lock:
                lst = self._running.get(qid, [])
                if stop in lst:
                    lst.remove(stop)
                if not lst:
                    self._running.pop(qid, None)
            self.metrics.release()


def _status(e: BackendError) -> grpc.StatusCode:
    if e.unsupported:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INVALID_ARGUMENT if e.user_error else grpc.StatusCode.INTERNAL


class _CallEnded(Exception):
    """The client cancelled, timed out or went away mid-stream."""


class _Counter:
    """Count rows while passing record batches through (after the testing aid's
    delay, if set; a call that ends stops the wait)."""

    def __init__(self, reader: Any, delay: float = 0.0, gone: threading.Event | None = None):
        self._reader = reader
        self.schema = reader.schema
        self.rows = 0
        self._delay = delay
        self._gone = gone or threading.Event()

    def __iter__(self):  # type: ignore[no-untyped-def]
        for batch in self._reader:
            if self._delay and self._gone.wait(self._delay):
                raise _CallEnded
            self.rows += batch.num_rows
            yield batch


def build_server(cfg: AgencyConfig) -> tuple[grpc.Server, int, ConnectorService]:
    """Open the backend, build the server and bind it; returns (server, port, service)."""
    hash_key = load_hash_key(cfg.hash_key_file, str(cfg.source))
    backend = open_backend(cfg, hash_key)
    try:
        load_policy(cfg, backend, hash_key)
    except ConfigError:
        backend.close()
        raise
    service = ConnectorService(cfg, backend, hash_key)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="fragment"),
        options=[
            *GRPC_OPTIONS,
            # Coordinators ping every 30 s while a fragment runs (keepalive, to find
            # dead peers); allow it, or gRPC answers pings on a quiet call with
            # GOAWAY "too_many_pings" and the fragment fails (gRPC doc A8).
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
        # Calls beyond this are refused with RESOURCE_EXHAUSTED by gRPC itself
        # instead of queueing without bound behind busy worker threads.
        maximum_concurrent_rpcs=cfg.max_workers * 4,
    )
    pb_grpc.add_ConnectorServicer_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("fedsql.v1.Connector", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    host, _, port = cfg.listen.rpartition(":")
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:
        raise ConfigError(f"{cfg.source}: cannot listen on {cfg.listen}: {e}") from None
    if bound == 0:
        raise ConfigError(f"{cfg.source}: cannot listen on {cfg.listen} (address in use?)")
    return server, bound, service


def serve(cfg: AgencyConfig) -> None:
    """Run one connector node until SIGTERM/SIGINT."""
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server, port, service = build_server(cfg)
    metrics_http = None
    if cfg.metrics_listen:
        try:
            metrics_http = serve_metrics(service.metrics, cfg.metrics_listen)
        except OSError as e:
            raise ConfigError(
                f"{cfg.source}: cannot serve metrics on {cfg.metrics_listen}: {e}"
            ) from None
        mhost, mport = metrics_http.server_address[:2]
        service.metrics_url = f"http://{mhost}:{mport}/metrics"
    server.start()
    host = cfg.listen.rpartition(":")[0]
    n = len(service.backend.tables())
    # This line is read by launchers (tests, demo, bench) to learn the port.
    print(
        f"fedsql connector '{cfg.name}' listening on {host}:{port} "
        f"(backend {service.backend.kind}, {n} tables, plaintext)",
        flush=True,
    )
    log.warning(
        "connector '%s' serves plaintext gRPC (insecure = true): local development only", cfg.name
    )
    if service.metrics_url:
        print(f"fedsql connector '{cfg.name}' metrics at {service.metrics_url}", flush=True)
    if service.delay:
        log.warning(
            "connector '%s': %s=%s delays every record batch (a testing aid; unset it)",
            cfg.name,
            TEST_DELAY_ENV,
            service.delay,
        )
    stop.wait()
    print(f"fedsql connector '{cfg.name}' shutting down", file=sys.stderr, flush=True)
    server.stop(grace=5).wait()
    if metrics_http is not None:
        metrics_http.shutdown()
    service.backend.close()
    service.audit.close()
