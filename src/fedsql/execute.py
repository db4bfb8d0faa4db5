"""Fan fragments out to connectors in parallel, then merge in DuckDB."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import duckdb
import grpc
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from fedsql.errors import (
    ExecutionError,
    QueryCancelled,
    QueryTimeout,
    from_rpc_error,
)
from fedsql.planner import Fragment, Plan
from fedsql.policy.masks import register_hash
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import (
    QUERY_ID_METADATA,
    FragmentStats,
    Principal,
    ipc_chunks_to_reader,
    key_set_to_proto,
    principal_to_proto,
)

log = logging.getLogger(__name__)

# Join keys for DuckDB connectors: up to INLINE_KEYS as an IN list in the SQL,
# more as an Arrow key set. Other backends: an IN list up to MAX_IN_KEYS, then
# a key range (parsing long IN lists costs ~10 µs a key).
INLINE_KEYS = 2000
# Fragment results at least this large are copied into temp tables for the merge
# (statistics for DuckDB's join order); smaller ones are read in place.
TEMP_TABLE_ROWS = 10_000
MAX_IN_KEYS = 2000


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

    def __getitem__(self, agency: str) -> ConnectorStats:
        return self.connectors[agency]

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.connectors.values())

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.connectors.values())


class _Fetch:
    """One fragment's call: streams IPC chunks and counts them."""

    def __init__(
        self,
        stub: pb_grpc.ConnectorStub,
        fragment: Fragment,
        query_id: str,
        principal: Principal,
        deadline: float,
    ) -> None:
        self.stub = stub
        self.fragment = fragment
        self.query_id = query_id
        self.principal = principal
        self.deadline = deadline
        self.bytes = 0
        self.server_rows: int | None = None
        self.started = self.ended = time.perf_counter()
        self.sql = fragment.sql
        self.call: Any = None
        self.cancelled = False
        self.compression = ""
        self.rows = 0  # read so far (for QueryWatch)
        self.watch: QueryWatch | None = None

    def start(self, sql: str, key_sets: list[pb.KeySet] | None = None) -> None:
        self.sql = sql
        self.started = time.perf_counter()
        if self.cancelled:
            raise QueryCancelled("the query was cancelled")
        timeout = max(0.001, self.deadline - time.monotonic())
        self.call = self.stub.Execute(
            pb.ExecuteRequest(
                query_id=self.query_id,
                sql=sql,
                principal=principal_to_proto(self.principal),
                key_sets=key_sets or [],
                compression=self.compression,
            ),
            timeout=timeout,
            metadata=((QUERY_ID_METADATA, self.query_id),),
        )

    def cancel(self) -> None:
        self.cancelled = True
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
        except grpc.RpcError as e:
            raise from_rpc_error(self.fragment.agency, e) from None
        finally:
            self.ended = time.perf_counter()

    def read_all(self) -> pa.Table:
        """Read the whole stream, then the call's last message (its stats), so the
        call ends cleanly instead of being cancelled half-read."""
        chunks = self._chunks()
        try:
            reader = ipc_chunks_to_reader(chunks)
            batches = []
            for batch in reader:  # batch by batch, so that a QueryWatch sees progress
                batches.append(batch)
                self.rows += batch.num_rows
                if self.watch is not None:
                    self.watch.moved()
            table = pa.Table.from_batches(batches, schema=reader.schema)
        except pa.ArrowInvalid as e:
            raise ExecutionError(
                f"agency '{self.fragment.agency}' sent a malformed Arrow stream: {e}"
            ) from None
        for _ in chunks:  # nothing but the stats message may follow the end of stream
            raise ExecutionError(f"agency '{self.fragment.agency}' sent data after its stream end")
        if self.server_rows is not None and self.server_rows != table.num_rows:
            raise ExecutionError(
                f"agency '{self.fragment.agency}' reported {self.server_rows} rows "
                f"but sent {table.num_rows}"
            )
        return table

    def stats(self, rows: int) -> FragmentStats:
        return FragmentStats(rows=rows, bytes=self.bytes, seconds=self.ended - self.started)


def execute(
    plan: Plan,
    stubs: dict[str, pb_grpc.ConnectorStub],
    principal: Principal,
    query_id: str,
    timeout: float,
    merger: MergeEngine,
    compression: str = "",
    watch: QueryWatch | None = None,
) -> tuple[pa.Table, tuple[FragmentRun, ...], float, float]:
    """Run a plan; returns (result, fragment runs, fetch seconds, merge seconds)."""
    deadline = time.monotonic() + timeout
    t0 = time.perf_counter()
    fetches = {
        f.id: _Fetch(stubs[f.agency], f, query_id, principal, deadline) for f in plan.fragments
    }
    for f in fetches.values():
        f.compression = compression
    try:
        if watch is not None:
            watch.attach(list(fetches.values()))
        if plan.residual is None:
            (only,) = fetches.values()
            only.start(only.fragment.sql)
            table = only.read_all()
            runs: tuple[FragmentRun, ...] = (
                FragmentRun(only.fragment, only.stats(table.num_rows), only.sql),
            )
            return table, runs, time.perf_counter() - t0, 0.0
        tables = _fetch_all(fetches)
        t1 = time.perf_counter()
        runs = tuple(
            FragmentRun(f.fragment, f.stats(tables[fid].num_rows), f.sql)
            for fid, f in fetches.items()
        )
        result = merger.run(plan.residual, tables, deadline)
        return result, runs, t1 - t0, time.perf_counter() - t1
    except BaseException:
        for f in fetches.values():
            f.cancel()
        _cancel_remote(stubs, {f.fragment.agency for f in fetches.values()}, query_id)
        raise


def _fetch_all(fetches: dict[str, _Fetch]) -> dict[str, pa.Table]:
    """Read every fragment concurrently, each as soon as the fragments whose keys
    reduce it are in; the first failure wins and stops the others."""
    out: dict[str, pa.Table] = {}
    order = _topological(list(fetches.values()))
    with ThreadPoolExecutor(
        max_workers=max(1, len(order)), thread_name_prefix="fedsql-fetch"
    ) as pool:
        futures: dict[str, Future[pa.Table]] = {}

        def run(f: _Fetch) -> pa.Table:
            builds = {r.build: futures[r.build].result() for r in f.fragment.reduce_by}
            f.start(*reduced_sql(f.fragment, builds))
            return f.read_all()

        for f in order:
            futures[f.fragment.id] = pool.submit(run, f)
        error: BaseException | None = None
        for fid, fut in futures.items():
            try:
                out[fid] = fut.result()
            except BaseException as e:  # noqa: BLE001 - re-raised below after cancelling
                if error is None:
                    error = e
                    for other in fetches.values():
                        other.cancel()
        if error is not None:
            raise error
    return out


def _topological(fetches: list[_Fetch]) -> list[_Fetch]:
    """Fragments in an order where every reducing fragment comes before those it reduces."""
    by_id = {f.fragment.id: f for f in fetches}
    done: set[str] = set()
    out: list[_Fetch] = []

    def visit(f: _Fetch) -> None:
        if f.fragment.id in done:
            return
        done.add(f.fragment.id)
        for r in f.fragment.reduce_by:
            visit(by_id[r.build])
        out.append(f)

    for f in fetches:
        visit(f)
    return out


def reduced_sql(fragment: Fragment, builds: dict[str, pa.Table]) -> tuple[str, list[pb.KeySet]]:
    """The fragment's SQL, also filtered to the join keys its reducers returned,
    and the key sets shipped with it."""
    if not fragment.reduce_by and not fragment.wrap:
        return fragment.sql, []
    tree = sqlglot.parse_one(fragment.sql, read="duckdb")
    assert isinstance(tree, exp.Select)
    key_sets: list[pb.KeySet] = []
    for r in fragment.reduce_by:
        column = sqlglot.parse_one(r.probe_sql, read="duckdb")
        keys = pc.unique(builds[r.build].column(r.build_column).combine_chunks()).drop_null()
        cond: exp.Expr | None
        if fragment.dialect == "duckdb" and len(keys) > INLINE_KEYS:
            # Many keys travel as Arrow, not SQL text: the connector joins them.
            name = f"__fedsql_keys{len(key_sets)}"
            key_sets.append(key_set_to_proto(name, keys))
            # EXISTS, not IN (SELECT ...): DuckDB 2.0 can stall on an IN-subquery
            # beside correlated EXISTS clauses (TPC-H Q21's fragment).
            cond = exp.Exists(
                this=exp.select("1")
                .from_(name)
                .where(exp.EQ(this=exp.column("k", table=name), expression=column))
            )
        else:
            cond = key_filter(column, keys)
        if cond is not None:
            tree = tree.where(cond, copy=False)
    if fragment.wrap:  # eager aggregation around the (reduced) fragment
        outer = sqlglot.parse_one(fragment.wrap, read="duckdb")
        placeholder = next(t for t in outer.find_all(exp.Table) if t.name == "__fedsql_inner")
        placeholder.replace(exp.Subquery(this=tree, alias=placeholder.args["alias"]))
        return outer.sql(dialect="duckdb"), key_sets
    return tree.sql(dialect="duckdb"), key_sets


def key_filter(column: exp.Expr, values: pa.Array) -> exp.Expr | None:
    """``column IN (keys)`` for a few keys, ``BETWEEN min AND max`` for many; None when
    the key type has no literal form here."""
    if len(values) == 0:
        return exp.false()
    t = values.type
    if not (
        pa.types.is_integer(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_date(t)
    ):
        return None

    def lit(v: object) -> exp.Expr:
        if isinstance(v, dt.date):
            return exp.cast(exp.Literal.string(v.isoformat()), "DATE")
        return exp.convert(v)

    if len(values) <= MAX_IN_KEYS:
        return exp.In(this=column.copy(), expressions=[lit(v) for v in values.to_pylist()])
    lo, hi = pc.min_max(values).values()
    return exp.Between(this=column.copy(), low=lit(lo.as_py()), high=lit(hi.as_py()))


class QueryWatch:
    """Another thread's handle on a running query: rows and bytes per agency as they
    stream in, and ``cancel()``, which cancels the in-flight calls (the query then
    fails and each agency is sent a Cancel for its id, as on any failure)."""

    def __init__(self, on_progress: Callable[[QueryWatch], None] | None = None) -> None:
        self.on_progress = on_progress
        self.cancelled = False
        self.stats: QueryStats | None = None  # set when the query has finished
        self._fetches: list[_Fetch] = []
        self._lock = threading.Lock()

    def progress(self) -> dict[str, tuple[int, int]]:
        """agency -> (rows, bytes) received so far."""
        with self._lock:
            fetches = list(self._fetches)
        out: dict[str, tuple[int, int]] = {}
        for f in fetches:
            rows, nbytes = out.get(f.fragment.agency, (0, 0))
            out[f.fragment.agency] = (rows + f.rows, nbytes + f.bytes)
        return out

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            fetches = list(self._fetches)
        for f in fetches:
            f.cancel()

    def attach(self, fetches: list[_Fetch]) -> None:
        with self._lock:
            self._fetches.extend(fetches)
            for f in fetches:
                f.watch = self
            cancelled = self.cancelled
        if cancelled:
            raise QueryCancelled("the query was cancelled")

    def moved(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self)


class MergeEngine:
    """The coordinator's DuckDB: one database per Federation, one cursor per query.

    Opening a DuckDB database costs tens of milliseconds; a cursor costs
    microseconds, and what a cursor registers is visible to it alone.
    """

    def __init__(self, hash_key: bytes | None = None) -> None:
        self._db = duckdb.connect(":memory:")
        register_hash(self._db, hash_key)  # for the federation's own 'hash' masks
        self._lock = threading.Lock()

    def run(self, residual: str, tables: dict[str, pa.Table], deadline: float) -> pa.Table:
        with self._lock:
            con = self._db.cursor()
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), con.interrupt)
        timer.start()
        try:
            for name, table in tables.items():
                if table.num_rows < TEMP_TABLE_ROWS:
                    con.register(name, table)
                    continue
                # A temp table, not a registered Arrow view: DuckDB keeps statistics
                # for it, and its join order over fragment results depends on them
                # (TPC-H Q5 at SF 1: 1.0 s over Arrow views, 12 ms over temp tables).
                con.register(f"{name}_arrow", table)
                con.execute(f'CREATE TEMP TABLE "{name}" AS SELECT * FROM "{name}_arrow"')
                con.unregister(f"{name}_arrow")
            return con.sql(residual).to_arrow_table()
        except duckdb.InterruptException:
            raise QueryTimeout("the query's deadline passed while merging results") from None
        except duckdb.Error as e:
            first = str(e).splitlines()[0]
            raise ExecutionError(f"the residual query failed at the coordinator: {first}") from None
        finally:
            timer.cancel()
            con.close()

    def close(self) -> None:
        self._db.close()


def _cancel_remote(
    stubs: dict[str, pb_grpc.ConnectorStub], agencies: set[str], query_id: str
) -> None:
    for a in agencies:
        try:
            stubs[a].Cancel(pb.CancelRequest(query_id=query_id), timeout=2.0)
        except grpc.RpcError:
            log.debug("query %s: cancel at %s failed", query_id, a)


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


__all__ = ["ConnectorStats", "FragmentRun", "MergeEngine", "QueryStats", "QueryWatch", "execute"]
