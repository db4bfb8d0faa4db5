"""One fragment's call to its connector: start it (retrying what a fresh attempt may
fix), stream its Arrow batches, count them, and cancel it."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import pyarrow as pa

from fedsql import lang
from fedsql.audit.chain import sql_sha256
from fedsql.audit.coordinator import Call, Calls
from fedsql.audit.receipts import Receipt
from fedsql.errors import (
    ConnectorError,
    ExecutionError,
    FedSQLError,
    QueryCancelled,
    QueryTimeout,
)
from fedsql.merge import MergeSession
from fedsql.planner import Fragment
from fedsql.resilience import Link, RunOptions, backoff, retryable
from fedsql.stats import FragmentRun
from fedsql.v1 import connector_pb2 as pb
from fedsql.watch import QueryWatch
from fedsql.wire import (
    QUERY_ID_METADATA,
    FragmentStats,
    Principal,
    ipc_chunks_to_reader,
    principal_to_proto,
    receipt_from_metadata,
    receipt_from_proto,
)

log = logging.getLogger(__name__)
_R = TypeVar("_R")


class Retry(Exception):
    """A fragment failed in a way that a fresh attempt may fix (see resilience.RETRYABLE)."""

    def __init__(self, error: FedSQLError) -> None:
        super().__init__(str(error))
        self.error = error


class Fetch:
    """One fragment's call: streams IPC chunks and counts them; re-runs the whole
    fragment (its partial result discarded) when that is safe."""

    def __init__(
        self,
        link: Link,
        fragment: Fragment,
        query_id: str,
        principal: Principal,
        deadline: float,
        opts: RunOptions,
        calls: Calls | None = None,
    ) -> None:
        self.link = link
        self.calls = calls
        self.current: Call | None = None  # this attempt, and its receipt
        self.receipt: Receipt | None = None
        self.fragment = fragment
        self.query_id = query_id
        self.principal = principal
        self.deadline = deadline
        self.opts = opts
        self.bytes = 0
        self.server_rows: int | None = None
        self.started = self.ended = time.perf_counter()
        self.sql = fragment.sql
        self.key_sets: list[pb.KeySet] = []
        self.call: Any = None
        self._stop = threading.Event()
        self.attempts = 0
        self.batch_rows = 0  # 0: the connector's choice
        self.rows = 0  # read so far (for QueryWatch)
        self.watch: QueryWatch | None = None

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def start(self, sql: str, key_sets: list[pb.KeySet] | None = None) -> None:
        self.sql = sql
        self.key_sets = key_sets or []
        self.started = time.perf_counter()
        self._call()

    def _call(self) -> None:
        if self.cancelled:
            raise QueryCancelled("the query was cancelled")
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise QueryTimeout(
                f"the query's deadline passed before agency '{self.fragment.agency}' answered"
            )
        self.attempts += 1
        self.bytes = 0
        self.server_rows = None
        self.receipt = None
        # Our nonce (the signing step keeps it): the agency's receipt must repeat it.
        principal = principal_to_proto(self.principal)
        principal.nonce = os.urandom(16)
        self.current = Call(
            self.fragment.agency, self.fragment.id, principal.nonce.hex(), sql_sha256(self.sql)
        )
        if self.calls is not None:
            self.calls.add(self.current)
        self.call = self.link.stub.Execute(
            pb.ExecuteRequest(
                query_id=self.query_id,
                sql=self.sql,
                principal=principal,
                key_sets=self.key_sets,
                compression=self.opts.compression,
                batch_rows=self.batch_rows,
                fragment_language=lang.VERSION,
            ),
            timeout=remaining,
            metadata=((QUERY_ID_METADATA, self.query_id),),
            wait_for_ready=False,  # a connector that is down fails now, not at the deadline
        )

    def cancel(self) -> None:
        self._stop.set()
        if self.call is not None:
            self.call.cancel()

    def _chunks(self) -> Iterator[bytes]:
        try:
            for msg in self.call:
                if msg.arrow_ipc:
                    self.bytes += len(msg.arrow_ipc)
                    yield msg.arrow_ipc
                if msg.HasField("stats"):
                    self.server_rows = msg.stats.rows
                    if msg.HasField("receipt"):
                        self.receipt = receipt_from_proto(msg.receipt)
        except grpc.RpcError as e:
            if self.current is not None:  # a failed call's receipt rides in its trailers
                trailers = e.trailing_metadata() if hasattr(e, "trailing_metadata") else None
                got = receipt_from_metadata(trailers)
                self.link.receipts.accept(self.current, got, self.query_id, required=False)
            error = self.link.error(e, self.bytes)
            if retryable(e) and not self.cancelled:
                raise Retry(error) from None
            raise error from None
        finally:
            self.ended = time.perf_counter()

    def _retry(self, attempt: int, why: Retry) -> None:
        """Wait, then call again; or give up with the error that made us retry."""
        delay = backoff(attempt)
        if (
            attempt >= self.opts.retries
            or self.cancelled
            or time.monotonic() + delay >= self.deadline
        ):
            raise why.error
        log.info(
            "fragment retry query_id=%s fragment=%s agency=%s attempt=%d wait=%.2f reason=%r",
            self.query_id,
            self.fragment.id,
            self.fragment.agency,
            attempt + 1,
            delay,
            str(why.error),
        )
        if self._stop.wait(delay):
            raise QueryCancelled("the query was cancelled")
        self._call()

    def _open(self, chunks: Iterator[bytes]) -> pa.RecordBatchReader:
        try:
            return ipc_chunks_to_reader(chunks)
        except pa.ArrowInvalid as e:
            raise self._malformed(e) from None

    def _malformed(self, e: Exception) -> FedSQLError:
        return ExecutionError(f"agency '{self.fragment.agency}' sent a malformed Arrow stream: {e}")

    def _check_end(self, chunks: Iterator[bytes], rows: int) -> None:
        """The call must end with the connector's stats message, after the IPC
        end-of-stream marker: a stream cut short is never taken as a whole result."""
        for _ in chunks:  # nothing but the stats message may follow the end of stream
            raise ExecutionError(f"agency '{self.fragment.agency}' sent data after its stream end")
        if self.server_rows is None:
            raise ConnectorError(
                self.fragment.agency,
                "the result stream ended without its closing stats message, so it may be "
                "incomplete; it was discarded",
            )
        if self.server_rows != rows:
            raise ExecutionError(
                f"agency '{self.fragment.agency}' reported {self.server_rows} rows but sent {rows}"
            )
        self._check_receipt(rows)

    def _check_receipt(self, rows: int) -> None:
        """A complete result needs the agency's receipt for exactly this request."""
        assert self.current is not None
        why = self.link.receipts.accept(self.current, self.receipt, self.query_id)
        r = self.receipt
        delivered = ("ok", rows, self.bytes)
        if not why and r is not None and (r.outcome, r.rows, r.ipc_bytes) != delivered:
            why = (
                f"the receipt says {r.outcome}, {r.rows} rows, {r.ipc_bytes} bytes; "
                f"the call delivered {rows} rows, {self.bytes} bytes"
            )
            self.current.problem = why
        if why:
            raise ConnectorError(
                self.fragment.agency, f"its receipt was rejected ({why}); the result was discarded"
            )

    def read_all(self) -> pa.Table:
        """Read the whole stream, then the call's last message (its stats), so the
        call ends cleanly instead of being cancelled half-read."""
        return self._read(
            lambda schema, batches: pa.Table.from_batches(list(batches), schema=schema)
        )

    def read_into(self, session: MergeSession) -> int:
        """Read the whole stream into ``session`` (a large result goes into a DuckDB
        table batch by batch as it arrives), then the call's stats; returns rows."""
        return self._read(lambda schema, batches: session.load(self.fragment.id, schema, batches))

    def _read(self, consume: Callable[[pa.Schema, Iterator[pa.RecordBatch]], _R]) -> _R:
        """``consume`` the stream's batches; re-run the fragment when that is safe."""
        for attempt in range(self.opts.retries + 1):
            chunks = self._chunks()
            try:
                try:
                    reader = self._open(chunks)
                    return consume(reader.schema, self._counted(reader, chunks))
                except pa.ArrowInvalid as e:
                    raise self._malformed(e) from None
            except Retry as r:
                self._retry(attempt, r)
        raise AssertionError("unreachable")  # _retry raises on the last attempt

    def _counted(
        self, reader: pa.RecordBatchReader, chunks: Iterator[bytes]
    ) -> Iterator[pa.RecordBatch]:
        """The batches, counted as they pass (a QueryWatch sees progress); at the end,
        the call's stats must follow."""
        self.rows = 0
        for batch in reader:
            self.rows += batch.num_rows
            if self.watch is not None:
                self.watch.moved()
            yield batch
        self._check_end(chunks, self.rows)

    def stream(self) -> pa.RecordBatchReader:
        """The fragment's batches as they arrive. Retried while nothing has reached
        the caller (until the schema message is in); later failures raise."""
        for attempt in range(self.opts.retries + 1):
            chunks = self._chunks()
            try:
                reader = self._open(chunks)
                break
            except Retry as r:
                self._retry(attempt, r)

        def batches() -> Iterator[pa.RecordBatch]:
            rows = 0
            done = False
            try:
                for batch in reader:
                    rows += batch.num_rows
                    yield batch
                self._check_end(chunks, rows)
                done = True
            except Retry as r:
                raise r.error from None
            except pa.ArrowInvalid as e:
                raise self._malformed(e) from None
            finally:
                if not done:  # the caller stopped reading, or it failed: stop the fragment
                    self.cancel()

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    def stats(self, rows: int) -> FragmentStats:
        return FragmentStats(rows=rows, bytes=self.bytes, seconds=self.ended - self.started)

    def as_run(self, rows: int) -> FragmentRun:
        return FragmentRun(self.fragment, self.stats(rows), self.sql, self.receipt)
