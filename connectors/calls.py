"""One call's machinery, beside the servicer (``server.py``): the abort that carries
its structured reason, the query id's form, the limits a stream is held to, the
watchdog for ``max_seconds``, and the counting pass-through of record batches."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import grpc

from fedsql import reasons
from fedsql.connectors.backend import BackendError, Interrupter
from fedsql.connectors.config import Limits
from fedsql.deadlines import Deadline, after


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


QUERY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


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
