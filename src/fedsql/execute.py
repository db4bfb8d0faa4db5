"""Fan fragments out to connectors in parallel, then merge in DuckDB."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
    FragmentRefused,
    FragmentUnsupported,
    QueryCancelled,
    QueryTimeout,
)
from fedsql.merge import TEMP_TABLE_ROWS, MergeEngine, MergeSession
from fedsql.planner import Fragment, Plan
from fedsql.planner.render import bind
from fedsql.resilience import Link, RunOptions, backoff, retryable
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

CANCEL_TIMEOUT = 2.0
# Rows per batch asked of a connector whose result streams straight to the caller
# (~5 MB of TPC-H lineitem): peak memory is a few batches in flight.
PASS_THROUGH_BATCH_ROWS = 32_768


@dataclass(frozen=True, slots=True)
class ConnectorStats:
    """What one connector did for one query."""

    fragments: int
    rows: int
    bytes: int
    seconds: float  # wall time from its first fragment's start to its last one's end


@dataclass(frozen=True, slots=True)
class FragmentRun:
    fragment: Fragment
    stats: FragmentStats
    sql: str = ""  # what was sent (the fragment, reduced by join keys where planned)
    # What the agency signed for it (checked: its key, its name, this request);
    # None from a plaintext connector older than receipts.
    receipt: Receipt | None = None


@dataclass(frozen=True, slots=True)
class QueryStats:
    """``fed.last_stats``: per-connector rows, bytes and seconds, plus phase timings."""

    query_id: str
    connectors: dict[str, ConnectorStats]
    fragments: tuple[FragmentRun, ...]
    plan_seconds: float
    fetch_seconds: float
    merge_seconds: float
    total_seconds: float
    result_rows: int
    extra: dict[str, float] = field(default_factory=dict)
    # Agencies that could not be reached and contributed no rows (allow_partial only).
    missing: tuple[str, ...] = ()

    def __getitem__(self, agency: str) -> ConnectorStats:
        return self.connectors[agency]

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.connectors.values())

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.connectors.values())

    def per_agency(self, seconds: bool = False) -> str:
        """``agency: N rows, X kB[, S s]; ...`` — the line CLI, shell and notebook show."""
        return "; ".join(
            f"{a}: {s.rows} rows, {human_bytes(s.bytes)}"
            + (f", {s.seconds:.3f} s" if seconds else "")
            for a, s in sorted(self.connectors.items())
        )


def human_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


class _Retry(Exception):
    """A fragment failed in a way that a fresh attempt may fix (see resilience.RETRYABLE)."""

    def __init__(self, error: FedSQLError) -> None:
        super().__init__(str(error))
        self.error = error


class _Fetch:
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
                raise _Retry(error) from None
            raise error from None
        finally:
            self.ended = time.perf_counter()

    def _retry(self, attempt: int, why: _Retry) -> None:
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
            except _Retry as r:
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
            except _Retry as r:
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
            except _Retry as r:
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


def execute(
    plan: Plan,
    links: dict[str, Link],
    principal: Principal,
    query_id: str,
    opts: RunOptions,
    merger: MergeEngine,
    schema_of: Callable[[Fragment], pa.Schema] | None = None,
    watch: QueryWatch | None = None,
    calls: Calls | None = None,
) -> tuple[pa.Table, tuple[FragmentRun, ...], float, float, tuple[str, ...]]:
    """Run a plan; returns (result, fragment runs, fetch seconds, merge seconds,
    agencies missing from the result (``allow_partial`` only)). ``calls`` collects
    every call made and the receipt each got (for the coordinator's audit log)."""
    deadline = time.monotonic() + opts.timeout
    t0 = time.perf_counter()
    fetches = _fetches(plan, links, principal, query_id, deadline, opts, calls)
    try:
        if watch is not None:
            watch.attach(list(fetches.values()))
        if plan.residual is None and not opts.allow_partial:
            (only,) = fetches.values()
            only.start(only.fragment.sql)
            table = only.read_all()
            runs: tuple[FragmentRun, ...] = (only.as_run(table.num_rows),)
            return table, runs, time.perf_counter() - t0, 0.0, ()
        with merger.session() as session:
            missing = _fetch_all(fetches, session, opts.allow_partial, schema_of)
            t1 = time.perf_counter()
            rows = session.row_counts()
            runs = tuple(f.as_run(rows[fid]) for fid, f in fetches.items())
            if plan.residual is None:
                (fid,) = fetches
                result = session.table(fid)
            else:
                result = session.run(plan.residual, deadline, watch)
        return result, runs, t1 - t0, time.perf_counter() - t1, missing
    except BaseException:
        _cancel_all(fetches, links, query_id)
        raise


def execute_stream(
    plan: Plan,
    links: dict[str, Link],
    principal: Principal,
    query_id: str,
    opts: RunOptions,
    merger: MergeEngine,
    schema_of: Callable[[Fragment], pa.Schema] | None = None,
    on_done: Callable[[tuple[FragmentRun, ...], int, tuple[str, ...]], None] | None = None,
    calls: Calls | None = None,
    watch: QueryWatch | None = None,
) -> pa.RecordBatchReader:
    """Run a plan, its result as a stream. A plan that is one fragment with no
    residual streams that fragment's batches straight through (memory: a few
    batches); otherwise the fragments are fetched, and DuckDB's result streams.

    ``on_done(runs, result_rows, missing)`` is called when the stream was read to its end.
    Dropping the reader early cancels what still runs at the connectors.
    """
    deadline = time.monotonic() + opts.timeout
    fetches = _fetches(plan, links, principal, query_id, deadline, opts, calls)
    fetched: dict[str, int] = {}  # rows per fragment, when fetched before the merge
    try:
        if watch is not None:
            watch.attach(list(fetches.values()))
        missing: tuple[str, ...] = ()
        if plan.residual is None and not opts.allow_partial:
            (only,) = fetches.values()
            # Smaller batches: the stream holds a few of them at a time.
            only.batch_rows = PASS_THROUGH_BATCH_ROWS
            only.start(only.fragment.sql)
            source = only.stream()
        else:
            session = merger.session()
            try:
                missing = _fetch_all(fetches, session, opts.allow_partial, schema_of)
                fetched = session.row_counts()
                if plan.residual is None:
                    (fid,) = fetches
                    table = session.table(fid)
                    session.close()
                    source = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
                else:
                    source = session.stream(plan.residual, deadline, watch)  # closes it
            except BaseException:
                session.close()
                raise
    except BaseException:
        _cancel_all(fetches, links, query_id)
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        rows = 0
        finished = False
        try:
            for b in source:
                rows += b.num_rows
                yield b
            finished = True
        finally:
            if not finished:
                source.close()
                _cancel_all(fetches, links, query_id)
        if on_done is not None:
            runs = tuple(f.as_run(fetched.get(fid, rows)) for fid, f in fetches.items())
            on_done(runs, rows, missing)

    return pa.RecordBatchReader.from_batches(source.schema, batches())


def _fetches(
    plan: Plan,
    links: dict[str, Link],
    principal: Principal,
    query_id: str,
    deadline: float,
    opts: RunOptions,
    calls: Calls | None = None,
) -> dict[str, _Fetch]:
    return {
        f.id: _Fetch(links[f.agency], f, query_id, principal, deadline, opts, calls)
        for f in plan.fragments
    }


def _cancel_all(fetches: dict[str, _Fetch], links: dict[str, Link], query_id: str) -> None:
    """Stop every call of the query, and tell the connectors (they stop their
    backend queries and free what the fragments held)."""
    for f in fetches.values():
        f.cancel()
    _cancel_remote(links, {f.fragment.agency for f in fetches.values()}, query_id)


def _missing_ok(e: BaseException) -> bool:
    """Failures ``allow_partial`` turns into a missing agency: the agency could not be
    reached or broke off. A refused fragment or a deadline still fails the query."""
    return isinstance(e, ConnectorError) and not isinstance(
        e, FragmentRefused | FragmentUnsupported
    )


def _fetch_all(
    fetches: dict[str, _Fetch],
    session: MergeSession,
    allow_partial: bool = False,
    schema_of: Callable[[Fragment], pa.Schema] | None = None,
) -> tuple[str, ...]:
    """Read every fragment concurrently into ``session``, each as soon as the
    fragments whose keys reduce it are in; the first failure wins and stops the
    others. With ``allow_partial``, a fragment whose agency cannot be reached
    yields no rows. Returns the missing agencies."""
    missing: dict[str, str] = {}
    order = _topological(list(fetches.values()))
    with ThreadPoolExecutor(
        max_workers=max(1, len(order)), thread_name_prefix="fedsql-fetch"
    ) as pool:
        futures: dict[str, Future[int]] = {}

        def run(f: _Fetch) -> int:
            for build in f.fragment.depends_on:
                futures[build].result()
            try:
                f.start(*bind(f.fragment, session.keys, session.table))
                return f.read_into(session)
            except FedSQLError as e:
                if not (allow_partial and schema_of is not None and _missing_ok(e)):
                    raise
                log.warning(
                    "agency missing query_id=%s agency=%s reason=%r",
                    f.query_id,
                    f.fragment.agency,
                    str(e),
                )
                missing[f.fragment.agency] = str(e)
                return session.put(f.fragment.id, schema_of(f.fragment).empty_table())

        # The same fragment twice (a subquery repeating the outer query's join, as in
        # TPC-H Q11, Q15) is fetched once: its result serves both names.
        canon: dict[str, str] = {}
        first: dict[tuple[object, ...], str] = {}
        for f in order:
            frag = f.fragment
            key = (
                frag.agency,
                frag.sql,
                frag.wrap_sql,
                tuple((canon[k.build], k.build_column, k.probe_sql) for k in frag.keys),
                tuple((s.sql, tuple(canon[b] for b in s.builds)) for s in frag.scalars),
            )
            canon[frag.id] = first.setdefault(key, frag.id)
            if canon[frag.id] != frag.id:
                futures[frag.id] = futures[canon[frag.id]]
                session.alias(frag.id, canon[frag.id])
            else:
                futures[frag.id] = pool.submit(run, f)
        error: BaseException | None = None
        for fut in futures.values():
            try:
                fut.result()
            except BaseException as e:  # noqa: BLE001 - re-raised below after cancelling
                if error is None:
                    error = e
                    for other in fetches.values():
                        other.cancel()
        if error is not None:
            raise error
    return tuple(sorted(missing))


def _topological(fetches: list[_Fetch]) -> list[_Fetch]:
    """Fragments in an order where every reducing fragment comes before those it reduces."""
    by_id = {f.fragment.id: f for f in fetches}
    done: set[str] = set()
    out: list[_Fetch] = []

    def visit(f: _Fetch) -> None:
        if f.fragment.id in done:
            return
        done.add(f.fragment.id)
        for build in f.fragment.depends_on:
            visit(by_id[build])
        out.append(f)

    for f in fetches:
        visit(f)
    return out


def _cancel_remote(links: dict[str, Link], agencies: set[str], query_id: str) -> None:
    """Cancel at every agency at once; at most CANCEL_TIMEOUT seconds in all."""
    calls = [
        (
            a,
            links[a].stub.Cancel.future(
                pb.CancelRequest(query_id=query_id), timeout=CANCEL_TIMEOUT
            ),
        )
        for a in sorted(agencies)
    ]
    for a, call in calls:
        try:
            call.result()
        except grpc.RpcError:
            log.debug("cancel failed query_id=%s agency=%s", query_id, a)


def connector_stats(runs: tuple[FragmentRun, ...]) -> dict[str, ConnectorStats]:
    by: dict[str, list[FragmentRun]] = {}
    for r in runs:
        by.setdefault(r.fragment.agency, []).append(r)
    return {
        a: ConnectorStats(
            fragments=len(rs),
            rows=sum(r.stats.rows for r in rs),
            bytes=sum(r.stats.bytes for r in rs),
            seconds=max(r.stats.seconds for r in rs),
        )
        for a, rs in by.items()
    }


__all__ = [  # MergeEngine, QueryWatch and TEMP_TABLE_ROWS live in merge.py / watch.py
    "TEMP_TABLE_ROWS",
    "ConnectorStats",
    "FragmentRun",
    "MergeEngine",
    "QueryStats",
    "QueryWatch",
    "execute",
]
