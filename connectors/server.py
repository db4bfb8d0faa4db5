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
from fedsql.errors import ConfigError, RefusedFragment
from fedsql.policy import apply_views, view_for
from fedsql.policy.load import validate
from fedsql.policy.masks import HASH_KEY_ENV, load_hash_key, masked_type, register_hash
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import (
    COMPRESSIONS,
    GRPC_OPTIONS,
    RemoteCatalog,
    catalog_to_proto,
    key_set_from_proto,
    principal_from_proto,
    reader_to_ipc_chunks,
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
        self.active = 0

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
        for r in runs:
            r.cancel()
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
            self.audit.write(record)
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
            self.audit.write(record)
            log.info("query %s: fragment refused: %s", qid, e)
            context.abort(e.code, str(e))
        applied: list[str] = []
        tree = self._apply_policy(tree, principal.roles, applied)
        record["policies"] = applied
        try:
            run = self.runner.start(tree, int(request.batch_rows), bool(applied), keys)
        except BackendError as e:
            record.update(outcome="unsupported" if e.unsupported else "error", error=str(e))
            self.audit.write(record)
            context.abort(_status(e), f"backend {self.backend.kind}: {e}")
        with self._lock:
            self._running.setdefault(qid, []).append(run)
            self.active += 1
        context.add_callback(run.cancel)  # the client went away: stop the backend query
        counted = _Counter(run.reader)
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
            self.audit.write(record)
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
        except BackendError as e:
            # Not active: the coordinator cancelled the call (or went away), and the
            # backend error is the interrupted query.
            audit("error", str(e)) if context.is_active() else audit("cancelled")
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
                if run in lst:
                    lst.remove(run)
                if not lst:
                    self._running.pop(qid, None)
                self.active -= 1
            log.debug(
                "query %s: fragment %s, %d rows, %d bytes",
                qid,
                record["outcome"],
                counted.rows,
                nbytes,
            )


def _status(e: BackendError) -> grpc.StatusCode:
    if e.unsupported:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INVALID_ARGUMENT if e.user_error else grpc.StatusCode.INTERNAL


class _Counter:
    """Count rows while passing record batches through."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self.schema = reader.schema
        self.rows = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        for batch in self._reader:
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
        options=GRPC_OPTIONS,
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
    stop.wait()
    print(f"fedsql connector '{cfg.name}' shutting down", file=sys.stderr, flush=True)
    server.stop(grace=5).wait()
    service.backend.close()
    service.audit.close()
