"""Fan fragments out to connectors in parallel, then merge in DuckDB."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import pyarrow as pa

from fedsql.audit.coordinator import Calls
from fedsql.errors import ConnectorError, FedSQLError, FragmentRefused, FragmentUnsupported
from fedsql.fetch import Fetch
from fedsql.merge import TEMP_TABLE_ROWS, MergeEngine, MergeSession
from fedsql.planner import Fragment, Plan
from fedsql.planner.render import bind
from fedsql.resilience import Link, RunOptions
from fedsql.stats import ConnectorStats, FragmentRun, QueryStats, connector_stats, human_bytes
from fedsql.v1 import connector_pb2 as pb
from fedsql.watch import QueryWatch
from fedsql.wire import Principal

log = logging.getLogger(__name__)

CANCEL_TIMEOUT = 2.0
# Rows per batch asked of a connector whose result streams straight to the caller
# (~5 MB of TPC-H lineitem): peak memory is a few batches in flight.
PASS_THROUGH_BATCH_ROWS = 32_768


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
) -> dict[str, Fetch]:
    return {
        f.id: Fetch(links[f.agency], f, query_id, principal, deadline, opts, calls)
        for f in plan.fragments
    }


def _cancel_all(fetches: dict[str, Fetch], links: dict[str, Link], query_id: str) -> None:
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
    fetches: dict[str, Fetch],
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
    pool = _fetch_pool()
    futures: dict[str, Future[int]] = {}

    def run(f: Fetch) -> int:
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


# Fragments are fetched on threads that outlive the query: a pool of its own per
# query started a thread per fragment, 0.4 ms each (median; more beside busy fetch
# threads), 1.5 ms a query over the TPC-H SF 1 runs. Shared by every query, it is
# still free of deadlock: a fetch waits only for fragments of its query submitted
# before it (topological order) and the pool starts tasks first in, first out, so
# what a fetch waits for has started.
FETCH_THREADS = 256
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _fetch_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fedsql-fetch")
        return _pool


def _topological(fetches: list[Fetch]) -> list[Fetch]:
    """Fragments in an order where every reducing fragment comes before those it reduces."""
    by_id = {f.fragment.id: f for f in fetches}
    done: set[str] = set()
    out: list[Fetch] = []

    def visit(f: Fetch) -> None:
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


def renamed(reader: pa.RecordBatchReader, names: tuple[str, ...]) -> pa.RecordBatchReader:
    """The stream with the query's own output names (duplicates kept, unlike DuckDB)."""
    if not names or len(names) != len(reader.schema):
        return reader
    schema = pa.schema(
        [f.with_name(n) for f, n in zip(reader.schema, names, strict=True)],
        metadata=reader.schema.metadata,
    )
    return pa.RecordBatchReader.from_batches(
        schema, (pa.RecordBatch.from_arrays(b.columns, schema=schema) for b in reader)
    )


__all__ = [  # re-exported from merge.py, watch.py and stats.py
    "TEMP_TABLE_ROWS",
    "ConnectorStats",
    "FragmentRun",
    "MergeEngine",
    "QueryStats",
    "QueryWatch",
    "connector_stats",
    "execute",
    "human_bytes",
]
