"""How the coordinator reaches connectors and copes when they fail.

One gRPC channel per connector, shared by every query of a Federation (gRPC
channels are thread-safe and multiplex calls over one HTTP/2 connection).
Calls never wait for a connection (``wait_for_ready=False``, gRPC's default):
an agency that is down fails its fragment at once, one that does not answer
within ``connect_timeout`` fails then, instead of stalling the query until its
deadline. What may be retried, and how, is decided here too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.experimental
from google.protobuf.message import DecodeError

from fedsql import reasons
from fedsql.audit.coordinator import ReceiptChecker
from fedsql.channels import open_channel
from fedsql.config import ConnectorRef
from fedsql.diagnose import Diagnosis, diagnose
from fedsql.errors import ConnectorError, FedSQLError, from_rpc_error
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import NodeStatus, status_from_proto

log = logging.getLogger(__name__)

# Failures a whole fragment may be re-run after: the connector could not be
# reached, dropped the connection, or was busy (RESOURCE_EXHAUSTED). A refused
# fragment (INVALID_ARGUMENT, PERMISSION_DENIED) or a deadline is never retried.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


def retryable(err: grpc.RpcError) -> bool:
    """Whether a fresh attempt may succeed: unreachable or busy — not a fragment
    over the agency's ``[limits]`` (also RESOURCE_EXHAUSTED), which would be again."""
    code = err.code() if hasattr(err, "code") else None
    info = reasons.read(err)
    if info is not None:  # the connector said why
        return info.reason == reasons.BUSY or (
            code == grpc.StatusCode.UNAVAILABLE and info.reason != reasons.LIMIT
        )
    details = (err.details() if hasattr(err, "details") else None) or ""
    return code in RETRYABLE and "[limits]" not in details  # a connector before ErrorInfo


def _busy(err: grpc.RpcError, details: str) -> bool:
    """RESOURCE_EXHAUSTED because every slot was taken, not a fragment over a limit."""
    info = reasons.read(err)
    if info is not None:  # the connector said why
        return info.reason == reasons.BUSY
    return "[limits]" not in details  # a connector before ErrorInfo


BACKOFF_BASE = 0.2  # seconds before the first retry; doubles each time
BACKOFF_MAX = 2.0
# Keepalive pings find a peer that vanished without closing its connection
# (a host that lost power, a dropped route) while a long fragment runs; the
# connector allows pings this often (see connectors/server.py).
KEEPALIVE_MS = 30_000


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How one query runs: its deadline and what it does when agencies fail."""

    timeout: float  # seconds for the whole query
    compression: str = ""
    allow_partial: bool = False  # missing agencies contribute no rows instead of failing
    retries: int = 3  # extra attempts per fragment (safe failures only)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential, capped, with
    full jitter so that many coordinators retrying one busy agency spread out
    (AWS Architecture Blog, "Exponential Backoff And Jitter")."""
    cap = min(BACKOFF_MAX, BACKOFF_BASE * (2**attempt))
    return cap / 2 + random.uniform(0, cap / 2)


class Link:
    """One connector: its address, its one channel (mutual TLS and signed principals
    when its config has ``[connector.tls]``, see :mod:`fedsql.trust`) and its stub."""

    def __init__(
        self,
        name: str,
        address: str,
        connect_timeout: float,
        ref: ConnectorRef | None = None,
        where: str = "federation",
    ) -> None:
        self.name = name
        self.address = address
        ms = int(connect_timeout * 1000)
        options: tuple[tuple[str, object], ...] = (
            # gRPC core's per-attempt connect deadline is max(this, backoff).
            ("grpc.min_reconnect_backoff_ms", ms),
            ("grpc.initial_reconnect_backoff_ms", 100),
            # A connector that restarts is found again within ~2 s.
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),  # keep pinging a quiet call
            # Result streams are read on the thread that asked for them; otherwise
            # gRPC starts a thread per call to drive it (a tenth of a small query).
            (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
        )
        ref = ref or ConnectorRef(name, address, insecure=True)
        self.ref = ref
        self.diagnose_timeout = min(3.0, connect_timeout)
        self.channel, self._raw = open_channel(ref, where, options)
        self.stub = pb_grpc.ConnectorStub(self.channel)
        self.receipts = ReceiptChecker(ref)  # what this agency signs must name it

    def error(self, err: grpc.RpcError, streamed: int = 0) -> FedSQLError:
        """The FedSQLError for a failed call, saying what to do next."""
        code = err.code() if hasattr(err, "code") else None
        details = (err.details() if hasattr(err, "details") else None) or str(code)
        if code == grpc.StatusCode.UNAVAILABLE and streamed:
            return ConnectorError(
                self.name,
                f"the connection to {self.address} broke after {streamed} bytes of the result "
                f"({details}); the partial result was discarded. Is its connector still running?",
            )
        if code == grpc.StatusCode.UNAVAILABLE:
            found = self.diagnosis(err)
            if found is not None:
                return ConnectorError(self.name, found.message)
            return ConnectorError(
                self.name,
                f"unreachable at {self.address} ({details}); is `fedsql connector serve` "
                "running there, and is the address in the federation config right?",
            )
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _busy(err, details):
            return ConnectorError(self.name, f"too busy, even after retries: {details}")
        return from_rpc_error(self.name, err)

    def diagnosis(self, err: grpc.RpcError) -> Diagnosis | None:
        """Why a call failed UNAVAILABLE before any answer: asked again with one fresh
        connection (diagnose.py), since gRPC says only "failed to connect"."""
        if reasons.read(err) is not None:  # the connector answered, and said why
            return None
        return diagnose(self.ref, self.diagnose_timeout)

    def wrong_agency(self, answered_as: str) -> ConnectorError | None:
        """The error when the node at this address calls itself another agency (the
        TLS certificate check is the proof; this catches a wrong port in plaintext)."""
        if not answered_as or answered_as.lower() == self.name.lower():
            return None
        return ConnectorError(
            self.name,
            f"the connector at {self.address} is '{answered_as}', not '{self.name}': fix "
            f"the address of '{self.name}' in the federation config",
        )

    def close(self) -> None:
        self._raw.close()


def links_for(
    connectors: tuple[ConnectorRef, ...], connect_timeout: float, where: str = "federation"
) -> dict[str, Link]:
    return {c.name: Link(c.name, c.address, connect_timeout, c, where) for c in connectors}


@dataclass(frozen=True, slots=True)
class AgencyHealth:
    """One connector as ``fedsql status`` shows it."""

    name: str
    address: str
    status: NodeStatus | None  # None: down (see error)
    latency_ms: float
    error: str = ""  # the whole story (empty when up)
    reason: str = ""  # a few words for a table cell, e.g. "TLS: unknown CA"

    @property
    def up(self) -> bool:
        return self.status is not None


def probe(link: Link, timeout: float) -> AgencyHealth:
    """Ask one connector for its status; the round trip is its latency."""
    t0 = time.perf_counter()
    try:
        msg = link.stub.GetStatus(pb.GetStatusRequest(), timeout=timeout, wait_for_ready=False)
    except grpc.RpcError as e:
        ms = (time.perf_counter() - t0) * 1000
        code = e.code()
        if code == grpc.StatusCode.UNIMPLEMENTED:
            reason, err = "old version", "answers, but is an older fedsql without GetStatus"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            reason, err = "no answer", f"no answer within {timeout:g} s"
        elif code == grpc.StatusCode.UNAVAILABLE and (found := link.diagnosis(e)) is not None:
            reason, err = found.short, found.message
        else:
            reason = "unreachable" if code == grpc.StatusCode.UNAVAILABLE else code.name.lower()
            err = str(link.error(e)).split(": ", 1)[-1]
        return AgencyHealth(link.name, link.address, None, ms, err, reason)
    ms = (time.perf_counter() - t0) * 1000
    wrong = link.wrong_agency(msg.connector)
    if wrong is not None:
        return AgencyHealth(
            link.name, link.address, None, ms, str(wrong).split(": ", 1)[-1], "wrong agency"
        )
    return AgencyHealth(link.name, link.address, status_from_proto(msg), ms)


# -- catalogs of agencies that are down --------------------------------------
# A coordinator keeps each agency's last catalog answer (per address and roles:
# what a principal sees depends on them) on disk. An agency that is down when a
# Federation loads its catalog is then still known: queries over it can be
# planned, and fail naming it, or run without it under allow_partial. Only
# names, types and policy descriptions are kept, never data.
def catalog_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedsql" / "catalogs"


def _cache_path(agency: str, address: str, roles: tuple[str, ...]) -> Path:
    key = hashlib.sha256(f"{agency}\0{address}\0{','.join(sorted(roles))}".encode()).hexdigest()
    return catalog_cache_dir() / f"{key[:32]}.pb"


def save_catalog(agency: str, address: str, roles: tuple[str, ...], msg: pb.Catalog) -> None:
    path = _cache_path(agency, address, roles)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(msg.SerializeToString())
        tmp.chmod(0o600)
        tmp.replace(path)
    except OSError as e:  # a cache only: never fail a query over it
        log.debug("catalog cache not written agency=%s error=%r", agency, str(e))


def load_catalog(agency: str, address: str, roles: tuple[str, ...]) -> pb.Catalog | None:
    try:
        data = _cache_path(agency, address, roles).read_bytes()
        msg = pb.Catalog()
        msg.ParseFromString(data)
        return msg
    except (OSError, DecodeError):
        return None


__all__ = [
    "AgencyHealth",
    "Link",
    "RunOptions",
    "backoff",
    "links_for",
    "load_catalog",
    "probe",
    "save_catalog",
]
