"""One call's machinery, beside the servicer (``server.py``): the abort that carries
its structured reason, the request's form (query id, key sets, language,
compression), the limits a stream is held to, the watchdog for ``max_seconds``,
the counting pass-through of record batches, and how a call that does not finish
is told (``Ending``, busy and limit messages)."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any, NamedTuple, Protocol

import grpc
import pyarrow as pa

from fedsql import lang, reasons
from fedsql.connectors.backend import BackendError, Interrupter
from fedsql.connectors.config import Limits
from fedsql.deadlines import Deadline, after
from fedsql.errors import RefusedFragment
from fedsql.v1 import connector_pb2 as pb
from fedsql.wire import COMPRESSIONS, key_set_from_proto


class Explained:
    """A servicer context whose ``abort`` first sends the call's ErrorInfo
    (``fedsql-error-bin``), read from the outcome its audit line records."""

    def __init__(self, context: grpc.ServicerContext, record: dict[str, Any]) -> None:
        self._context = context
        self._record = record

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        info = reasons.error_info(
            str(self._record.get("outcome", "internal")), self._record, code.name
        )
        self._context.set_trailing_metadata(((reasons.METADATA_KEY, info.SerializeToString()),))
        self._context.abort(code, details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class Slots(Protocol):
    """The slot counts a busy message names (``metrics.NodeMetrics``)."""

    user_share: int
    coordinator_share: int
    max_concurrent: int


QUERY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def read_request(
    request: pb.ExecuteRequest, connector: str, record: dict[str, Any]
) -> dict[str, pa.Table]:
    """The request's key sets, once its query id, fragment language and compression
    are ones this connector accepts; anything else is refused by name. The key
    sets' sizes go into the audit ``record`` as soon as they decode (a refusal's
    line says them too)."""
    if not QUERY_ID.fullmatch(request.query_id or "-"):
        raise RefusedFragment(
            "a query id is 1 to 128 letters, digits or - _ . : (fedsql makes them so)"
        )
    try:
        keys = dict(key_set_from_proto(k) for k in request.key_sets)
    except ValueError as e:
        raise RefusedFragment(str(e)) from None
    if keys:
        record["key_sets"] = {n: t.num_rows for n, t in keys.items()}
    if request.fragment_language not in ("", lang.VERSION):
        raise RefusedFragment(
            f"the fragment is written in fragment language {request.fragment_language!r}; "
            f"connector '{connector}' speaks version {lang.VERSION}"
        )
    if request.compression not in COMPRESSIONS:
        raise RefusedFragment(f"compression {request.compression!r} is not one of lz4, zstd")
    return keys


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def over_limit(limits: Limits, rows: int, nbytes: int) -> str:
    """Which per-fragment limit ``rows``/``nbytes`` exceed ("" when none)."""
    if limits.max_rows is not None and rows > limits.max_rows:
        return f"max_rows = {limits.max_rows}"
    if limits.max_bytes is not None and nbytes > limits.max_bytes:
        return f"max_bytes = {limits.max_bytes}"
    return ""


class Watchdog:
    """Interrupts a backend query that runs past ``max_seconds`` (a deadline on the
    process's one deadline thread: a Timer thread per fragment cost up to a GIL
    switch interval to start on a busy node)."""

    def __init__(self, stop: Interrupter, max_seconds: float | None, started: float) -> None:
        self.fired = False
        self._deadline: Deadline | None = None
        if max_seconds is None:
            return

        def fire() -> None:
            self.fired = True
            stop.fire()

        left = max_seconds - (time.perf_counter() - started)
        self._deadline = after(left, fire)

    def stop(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()


def status_of(e: BackendError) -> grpc.StatusCode:
    if e.unsupported:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INVALID_ARGUMENT if e.user_error else grpc.StatusCode.INTERNAL


class CallEnded(Exception):
    """The client cancelled, timed out or went away mid-stream."""


class Counter:
    """Count rows while passing record batches through (after the testing aid's
    delay, if set; a call that ends stops the wait)."""

    def __init__(self, reader: Any, delay: float, stop: Interrupter):
        self._reader = reader
        self.schema = reader.schema
        self.rows = 0
        self._delay = delay
        self._stop = stop

    def __iter__(self):  # type: ignore[no-untyped-def]
        for batch in self._reader:
            if self._delay and self._stop.wait(self._delay):
                raise CallEnded
            self.rows += batch.num_rows
            yield batch


class Ending(NamedTuple):
    """How a fragment that did not finish ends: its audit outcome and error, and
    the status and message its caller gets."""

    outcome: str
    error: str
    code: grpc.StatusCode
    message: str


def limit_message(connector: str, over: str) -> str:
    return (
        f"the fragment exceeded {over} ([limits] of connector '{connector}') and was "
        "stopped; narrow the query (filters, aggregates, LIMIT) or ask the agency"
    )


def busy_message(m: Slots, connector: str, full: str, share: tuple[str, str]) -> str:
    """Why no fragment slot was free: ``full`` is the share that was used up."""
    if full == "user":
        return (
            f"connector '{connector}' is busy for user '{share[0]}': {m.user_share} of their "
            f"fragments are running, their share of its {m.max_concurrent} slots "
            "(max_fragments_per_user); retry when one has finished"
        )
    if full == "coordinator":
        return (
            f"connector '{connector}' is busy for coordinator '{share[1]}': "
            f"{m.coordinator_share} of its fragments are running, its share of "
            f"{m.max_concurrent} slots (max_fragments_per_coordinator); retry shortly"
        )
    return (
        f"connector '{connector}' is busy: {m.max_concurrent} fragments are running, the "
        "most it runs at once; retry shortly"
    )
