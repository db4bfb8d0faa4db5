"""How a checked fragment runs on a backend.

DuckDB backends run the fragment as it is. Other backends (PostgreSQL, SQLite)
run it one of two ways, chosen per fragment:

- *native*: transpiled to the backend's dialect (sqlglot); every batch it
  returns is cast to the schema DuckDB would have produced;
- *local*: the node's own DuckDB computes the fragment over scans of the
  backend — each scan only the columns the fragment uses, filtered by the
  conjuncts that touch that table alone (``scans.py``), so indexes and
  selective filters still run in the database while joins and aggregates run
  vectorised and in parallel. Only the fragment's result leaves the agency
  either way.

``engine = "auto"`` (the default) picks local for a fragment with a correlated
scalar subquery over at least :data:`LOCAL_MIN_ROWS` estimated rows (PostgreSQL
runs it once per outer row) and native for the rest: measured, PostgreSQL
aggregates in place faster than it can export rows (~2 µs a row through COPY).
A fragment whose agency policy views need what the backend cannot run exactly
(the ``hash`` mask's keyed function, functions SQLite lacks) runs locally too,
so policies hold on every backend; other fragments the backend cannot run are
refused as unsupported and the coordinator plans smaller ones.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import duckdb
import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import ErrorLevel, UnsupportedError

from fedsql.capabilities import first_unsupported
from fedsql.connectors.backend import (
    Backend,
    BackendError,
    GuardedReader,
    Interrupter,
    Running,
    conform,
)
from fedsql.connectors.duckdb import DEFAULT_BATCH_ROWS, backend_error
from fedsql.connectors.guard import EXPOSED_META
from fedsql.connectors.keys import with_keys
from fedsql.connectors.scans import scan_select
from fedsql.connectors.shape import ShapeMirror
from fedsql.policy.masks import HASH_FUNCTION, register_hash

# The estimated rows a fragment must read before "auto" computes it in the node's DuckDB.
LOCAL_MIN_ROWS = 50_000


def _correlated_scalar(tree: exp.Expr) -> bool:
    """A scalar subquery reading an outer query's columns: PostgreSQL runs it once per
    outer row (a SubPlan), where DuckDB decorrelates it into a join.

    >>> import sqlglot
    >>> _correlated_scalar(sqlglot.parse_one(
    ...     "SELECT 1 FROM l WHERE l.q < (SELECT avg(i.q) FROM l AS i WHERE i.p = l.p)"))
    True
    >>> _correlated_scalar(sqlglot.parse_one(
    ...     "SELECT 1 FROM l WHERE EXISTS (SELECT 1 FROM o WHERE o.k = l.k)"))
    False
    """
    for sub in tree.find_all(exp.Subquery):
        if isinstance(sub.parent, exp.Exists | exp.In | exp.From | exp.Join):
            continue
        inner = sub.this
        own = {t.alias_or_name.lower() for t in inner.find_all(exp.Table)}
        if any(c.table and c.table.lower() not in own for c in inner.find_all(exp.Column)):
            return True
    return False


def _uses_hash(tree: exp.Expr) -> bool:
    return any(str(f.name).lower() == HASH_FUNCTION for f in tree.find_all(exp.Anonymous))


class FragmentRunner:
    def __init__(self, backend: Backend, hash_key: bytes | None, engine: str = "auto") -> None:
        self.backend = backend
        self._native = backend.dialect == "duckdb"
        self._tables = {t.full_name.lower(): t for t in backend.tables()}
        self._mirror = None if self._native else ShapeMirror(backend.tables())
        self._local: duckdb.DuckDBPyConnection | None = None
        self._hash_key = hash_key
        self._engine = engine
        # Local fragments take all their scans' connections at once, one fragment at a
        # time, so two of them never each hold half of what both need.
        self._scan_lock = threading.Lock()

    def _compute_locally(self, tree: exp.Expr) -> bool:
        """Whether this fragment goes to the node's DuckDB (``engine`` local, or auto
        and a correlated scalar subquery over :data:`LOCAL_MIN_ROWS` estimated rows)."""
        tables = [t for t in tree.find_all(exp.Table) if t.meta.get(EXPOSED_META)]
        if not tables or len(tables) > self.backend.max_scans or self._engine == "native":
            return False
        if self._engine == "local":
            return True
        rows = sum(max(self._tables[t.meta[EXPOSED_META]].row_count_estimate, 0) for t in tables)
        return rows >= LOCAL_MIN_ROWS and _correlated_scalar(tree)

    def start(
        self,
        tree: exp.Expr,
        batch_rows: int,
        policy_applied: bool,
        keys: dict[str, pa.Table] | None = None,
        interrupter: Interrupter | None = None,
    ) -> Running:
        if interrupter is not None:
            interrupter.check()
        if self._native:
            return self.backend.execute(tree.sql(dialect="duckdb"), batch_rows, keys, interrupter)
        assert self._mirror is not None
        keys = keys or {}

        def keyed(dialect: str | None) -> exp.Expr:
            """The tree with its key-set conditions written for ``dialect``'s engine."""
            try:
                return with_keys(tree, keys, dialect) if keys else tree
            except ValueError as e:
                raise BackendError(str(e), user_error=False, unsupported=True) from None

        shape = keyed(None)  # key conditions as TRUE: the result's schema, the choice
        try:
            expected = self._mirror.schema_of(shape.sql(dialect="duckdb"))
        except duckdb.Error as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BackendError(first, user_error=True) from None
        lacking = first_unsupported(shape, self.backend.unsupported)
        if (policy_applied and (_uses_hash(shape) or lacking)) or self._compute_locally(shape):
            return self._run_locally(keyed("duckdb"), expected, batch_rows, interrupter)
        tree = keyed(self.backend.dialect)
        if lacking:
            raise BackendError(
                f"{self.backend.kind} cannot run {lacking} exactly as DuckDB does",
                user_error=False,
                unsupported=True,
            )
        try:
            sql = tree.sql(dialect=self.backend.dialect, unsupported_level=ErrorLevel.RAISE)
        except UnsupportedError as e:
            raise BackendError(
                f"cannot express the fragment in {self.backend.dialect}: {e}",
                user_error=False,
                unsupported=True,
            ) from None
        run = self.backend.execute(sql, batch_rows, None, interrupter)
        return Running(_Conformed(run.reader, expected), run.cancel, run.close)

    def _run_locally(
        self,
        tree: exp.Expr,
        expected: pa.Schema,
        batch_rows: int,
        interrupter: Interrupter | None = None,
    ) -> Running:
        """The fragment in the node's DuckDB, over filtered scans of the backend's tables."""
        if self._local is None:
            self._local = duckdb.connect(":memory:")
            register_hash(self._local, self._hash_key)
        cur = self._local.cursor()
        if interrupter is not None:
            interrupter.arm(cur.interrupt, repeat=True)
        scans: list[Running] = []
        tree = tree.copy()
        names = itertools.count()
        try:
            planned: list[tuple[exp.Table, str, pa.Schema]] = []
            for table in list(tree.find_all(exp.Table)):
                full = table.meta.get(EXPOSED_META)
                if full is None:
                    continue
                remote = self._tables[full]
                src = scan_select(table, tree, remote.arrow_schema, self.backend.unsupported)
                schema = pa.schema(
                    [remote.arrow_schema.field(c.alias_or_name) for c in src.expressions]
                )
                try:
                    sql = src.sql(dialect=self.backend.dialect, unsupported_level=ErrorLevel.RAISE)
                except UnsupportedError:  # DuckDB applies the filter anyway
                    sql = src.where(None, append=False).sql(dialect=self.backend.dialect)
                planned.append((table, sql, schema))
            with self._scan_lock:
                for _, sql, _ in planned:
                    scans.append(self.backend.execute(sql, batch_rows, None, interrupter))
            for (table, _, schema), run in zip(planned, scans, strict=True):
                name = f"__fedsql_scan{next(names)}"
                reader = pa.RecordBatchReader.from_batches(
                    schema, iter(_Conformed(run.reader, schema))
                )
                cur.register(name, reader)
                alias = table.args.get("alias")
                new = exp.Table(
                    this=exp.to_identifier(name),
                    alias=alias.copy()
                    if alias
                    else exp.TableAlias(this=exp.to_identifier(table.name)),
                )
                table.replace(new)
            result = cur.sql(tree.sql(dialect="duckdb")).to_arrow_reader(
                batch_rows or DEFAULT_BATCH_ROWS
            )
        except BaseException as e:
            for s in scans:
                s.close()
            cur.close()
            if isinstance(e, duckdb.Error):
                raise backend_error(e) from None
            raise

        def close() -> None:
            for s in scans:
                s.close()
            cur.close()

        def cancel() -> None:
            cur.interrupt()
            for s in scans:
                s.cancel()

        # DuckDB errors while the result streams (a failed cast...) mapped like the
        # DuckDB backend's: classified, quoted values cut out.
        guarded = GuardedReader(result, backend_error, (duckdb.Error,))
        return Running(_Conformed(guarded, expected), cancel, close, "local")


class _Conformed:
    """A backend's stream, cast batch by batch to the expected schema."""

    def __init__(self, reader: object, schema: pa.Schema) -> None:
        self._reader = reader
        self.schema = schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self._reader:  # type: ignore[attr-defined]
            try:
                yield conform(batch, self.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
                raise BackendError(
                    f"a result column does not fit its type: {e}", user_error=False
                ) from None


__all__ = ["FragmentRunner"]
