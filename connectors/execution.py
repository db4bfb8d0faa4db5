"""How a checked fragment runs on a backend.

DuckDB backends run the fragment as it is. Other backends get it transpiled
to their dialect (sqlglot), and every batch they return is cast to the schema
DuckDB would have produced. A fragment that needs what the backend lacks
because of the agency's *own* policy views (the ``hash`` mask's keyed
function, string functions SQLite does not have) runs in the node's own DuckDB
over plain scans of the backend's tables, so policies hold on every backend.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import duckdb
import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import ErrorLevel, UnsupportedError

from fedsql.capabilities import first_unsupported
from fedsql.connectors.backend import Backend, BackendError, Interrupter, Running, conform
from fedsql.connectors.duckdb import DEFAULT_BATCH_ROWS
from fedsql.connectors.guard import EXPOSED_META
from fedsql.connectors.shape import ShapeMirror
from fedsql.policy.masks import HASH_FUNCTION, register_hash


def _uses_hash(tree: exp.Expr) -> bool:
    return any(str(f.name).lower() == HASH_FUNCTION for f in tree.find_all(exp.Anonymous))


class FragmentRunner:
    def __init__(self, backend: Backend, hash_key: bytes | None) -> None:
        self.backend = backend
        self._native = backend.dialect == "duckdb"
        self._tables = {t.full_name.lower(): t for t in backend.tables()}
        self._mirror = None if self._native else ShapeMirror(backend.tables())
        self._local: duckdb.DuckDBPyConnection | None = None
        self._hash_key = hash_key

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
        if keys:
            raise BackendError(
                f"{self.backend.kind} backends take join keys inline, not as key sets",
                user_error=False,
                unsupported=True,
            )
        assert self._mirror is not None
        duck_sql = tree.sql(dialect="duckdb")
        try:
            expected = self._mirror.schema_of(duck_sql)
        except duckdb.Error as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BackendError(first, user_error=True) from None
        lacking = first_unsupported(tree, self.backend.unsupported)
        if policy_applied and (_uses_hash(tree) or lacking):
            return self._run_locally(tree, expected, batch_rows, interrupter)
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
        """The fragment in the node's DuckDB, over full scans of the backend's tables."""
        if self._local is None:
            self._local = duckdb.connect(":memory:")
            register_hash(self._local, self._hash_key)
        cur = self._local.cursor()
        if interrupter is not None:
            interrupter.arm(cur.interrupt)
        scans: list[Running] = []
        tree = tree.copy()
        names = itertools.count()
        try:
            for table in list(tree.find_all(exp.Table)):
                full = table.meta.get(EXPOSED_META)
                if full is None:
                    continue
                remote = self._tables[full]
                src = exp.select(*[exp.column(f.name, quoted=True) for f in remote.arrow_schema])
                src = src.from_(exp.to_table(full))
                run = self.backend.execute(
                    src.sql(dialect=self.backend.dialect), batch_rows, None, interrupter
                )
                scans.append(run)
                name = f"__fedsql_scan{next(names)}"
                reader = pa.RecordBatchReader.from_batches(
                    remote.arrow_schema, iter(_Conformed(run.reader, remote.arrow_schema))
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
        except duckdb.Error as e:
            for s in scans:
                s.close()
            cur.close()
            raise BackendError(str(e).splitlines()[0], user_error=True) from None

        def close() -> None:
            for s in scans:
                s.close()
            cur.close()

        def cancel() -> None:
            cur.interrupt()
            for s in scans:
                s.cancel()

        return Running(_Conformed(result, expected), cancel, close)


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
