"""A connector node's process: open the backend, check the policies, bind the
gRPC server (mutual TLS or, for development, plaintext), serve until a signal."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedsql.connectors.config import AgencyConfig
from fedsql.connectors.metrics import TEST_DELAY_ENV, serve_metrics
from fedsql.connectors.opening import load_policy, open_backend
from fedsql.connectors.server import ConnectorService
from fedsql.errors import ConfigError
from fedsql.listen import check_free, failed
from fedsql.policy.masks import load_hash_key
from fedsql.trust import server_credentials
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import GRPC_OPTIONS

log = logging.getLogger("fedsql.connectors.server")  # the name operators filter on


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
            # gRPC sets SO_REUSEPORT by default: a second connector on the same port
            # would start beside the first and share its calls. One node per port.
            ("grpc.so_reuseport", 0),
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
    setting = "[connector].listen"
    try:
        check_free(str(cfg.source), cfg.listen, setting)  # in words, before gRPC logs
        if cfg.tls is not None:
            creds = server_credentials(cfg.tls, str(cfg.source))
            bound = server.add_secure_port(f"{host}:{port}", creds)
        else:
            bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise failed(str(cfg.source), cfg.listen, setting)
    except RuntimeError:
        raise failed(str(cfg.source), cfg.listen, setting) from None
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
    mode = (
        f"mutual TLS, coordinators: {', '.join(cfg.allowed_coordinators)}"
        if cfg.tls
        else "plaintext"
    )
    print(
        f"fedsql connector '{cfg.name}' listening on {host}:{port} "
        f"(backend {service.backend.kind}, {n} tables, {mode})",
        flush=True,
    )
    if cfg.tls is None:
        log.warning(
            "INSECURE: connector '%s' serves plaintext gRPC (insecure = true): anyone who can "
            "reach %s can query it, and the users and roles in requests are NOT authenticated. "
            "Local development only; configure [connector.tls] for anything else.",
            cfg.name,
            cfg.listen,
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
