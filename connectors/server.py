"""The gRPC servicer around any backend: checks, audit, streaming, cancel."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from fedsql.connectors.backend import Backend, BackendError
from fedsql.connectors.guard import check_fragment
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedsql import __version__
from fedsql.config import AgencyConfig
from fedsql.errors import ConfigError, RefusedFragment
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import (
    GRPC_OPTIONS,
    RemoteCatalog,
    catalog_to_proto,
    principal_from_proto,
    reader_to_ipc_chunks,
)

log = logging.getLogger(__name__)


def open_backend(cfg: AgencyConfig) -> Backend:
    b = cfg.backend
    try:
        if b.kind == "duckdb":
            from fedsql.connectors.duckdb import open_duckdb

            return open_duckdb(b.path, b.tables)
        if b.kind == "files":
            from fedsql.connectors.files import open_files

            return open_files(b.path, b.tables)
    except (FileNotFoundError, ValueError) as e:
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


class ConnectorService(pb_grpc.ConnectorServicer):
    def __init__(self, cfg: AgencyConfig, backend: Backend) -> None:
        self.cfg = cfg
        self.backend = backend
        self.audit = AuditLog(cfg.audit_log)
        tables = backend.tables()
        self._catalog = catalog_to_proto(RemoteCatalog(cfg.name, __version__, backend.kind, tables))
        self._exposed = {(t.schema.lower(), t.name.lower()) for t in tables}
        self._running: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self.active = 0

    def GetCatalog(
        self, request: pb.GetCatalogRequest, context: grpc.ServicerContext
    ) -> pb.Catalog:
        return self._catalog

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
            tree = check_fragment(request.sql, self._exposed)
        except RefusedFragment as e:
            record.update(outcome="refused", error=str(e))
            self.audit.write(record)
            log.info("query %s: fragment refused: %s", qid, e)
            context.abort(e.code, str(e))
        sql = tree.sql(dialect=self.backend.dialect)
        try:
            run = self.backend.execute(sql, int(request.batch_rows))
        except BackendError as e:
            record.update(outcome="error", error=str(e))
            self.audit.write(record)
            code = grpc.StatusCode.INVALID_ARGUMENT if e.user_error else grpc.StatusCode.INTERNAL
            context.abort(code, f"backend {self.backend.kind}: {e}")
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
            for chunk in reader_to_ipc_chunks(counted):  # type: ignore[arg-type]
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
    backend = open_backend(cfg)
    service = ConnectorService(cfg, backend)
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
