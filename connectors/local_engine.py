"""The node's own DuckDB computing a fragment over filtered scans of the backend.

For SQLite and PostgreSQL fragments under a policy view, or (``engine = "auto"``)
a correlated scalar subquery over many rows (``execution.py`` chooses): each scan
reads only the columns the fragment uses, filtered by the conjuncts that touch
that table alone (``scans.py``; under a policy view only the policy's own
portable conditions), and every scan's SQL is checked like the fragment's.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import ErrorLevel, UnsupportedError

from fedsql import lang
from fedsql.connectors.backend import (
    Backend,
    BackendError,
    Conformed,
    GuardedReader,
    Interrupter,
    Running,
)
from fedsql.connectors.duckdb import DEFAULT_BATCH_ROWS, backend_error
from fedsql.connectors.guard import EXPOSED_META, table_lookup
from fedsql.connectors.runs import POLICY_VIEW_META, Target, checked_sql, kinds_of, target_table
from fedsql.connectors.scans import scan_select
from fedsql.lang import RESERVED_PREFIX
from fedsql.lockdown import open_locked
from fedsql.policy.masks import register_hash
from fedsql.wire import RemoteTable


class LocalEngine:
    """One locked DuckDB per node, opened at its first local fragment."""

    def __init__(
        self,
        backend: Backend,
        tables: dict[str, RemoteTable],
        exposed: dict[tuple[str, str], tuple[str, str]],
        hash_key: bytes | None,
        limits: dict[str, Any],
        transpiled: tuple[type[exp.Expr], ...],
    ) -> None:
        self.backend = backend
        self._tables = tables  # the runner's: lower-case full name -> table
        self._exposed = exposed  # (schema, name) lower case -> as the backend spells them
        self._hash_key = hash_key
        self._limits = limits
        self._transpiled = transpiled
        self._local: duckdb.DuckDBPyConnection | None = None
        self._local_lock = threading.Lock()
        # Local fragments take all their scans' connections at once, one fragment at a
        # time, so two of them never each hold half of what both need.
        self._scan_lock = threading.Lock()

    def _engine(self) -> duckdb.DuckDBPyConnection:
        with self._local_lock:
            if self._local is None:
                key = self._hash_key

                def setup(con: duckdb.DuckDBPyConnection) -> None:
                    register_hash(con, key)

                self._local = open_locked(setup=setup, **self._limits)
            return self._local

    def run(
        self,
        tree: exp.Expr,
        covered: frozenset[str],
        expected: pa.Schema,
        batch_rows: int,
        interrupter: Interrupter | None = None,
    ) -> Running:
        """The fragment in the node's DuckDB, over filtered scans of the backend's tables."""
        cur = self._engine().cursor()
        if interrupter is not None:
            interrupter.arm(cur.interrupt, repeat=True)
        scans: list[Running] = []
        tree = tree.copy()
        # Names no fragment can spell: the language reserves the prefix, and the token
        # differs for every fragment.
        prefix = f"{RESERVED_PREFIX}scan_{secrets.token_hex(6)}_"
        names = itertools.count()
        scanned: dict[str, str] = {}  # scan name -> the exposed table it reads
        try:
            planned: list[tuple[exp.Table, str, pa.Schema]] = []
            for table in list(tree.find_all(exp.Table)):
                full = table.meta.get(EXPOSED_META)
                if full is None:
                    continue
                remote = self._tables[full]
                src = scan_select(
                    table,
                    tree,
                    remote.arrow_schema,
                    self.backend.capabilities,
                    portable_only=_is_view_source(table),
                )
                schema = pa.schema(
                    [remote.arrow_schema.field(c.alias_or_name) for c in src.expressions]
                )
                planned.append((table, self._scan_sql(src, tree), schema))
            for table, _, _ in planned:
                name = f"{prefix}{next(names)}"
                scanned[name] = table.meta[EXPOSED_META]
                alias = table.args.get("alias")
                new = exp.Table(
                    this=exp.to_identifier(name),
                    alias=alias.copy()
                    if alias
                    else exp.TableAlias(this=exp.to_identifier(table.name)),
                )
                table.replace(new)
            local_sql = checked_sql(tree, _scan_target(scanned, covered))
            with self._scan_lock:
                for _, sql, _ in planned:
                    scans.append(self.backend.execute(sql, batch_rows, None, interrupter))
            for name, (_, _, schema), run in zip(scanned, planned, scans, strict=True):
                reader = pa.RecordBatchReader.from_batches(
                    schema, iter(Conformed(run.reader, schema))
                )
                cur.register(name, reader)
            result = cur.sql(local_sql).to_arrow_reader(batch_rows or DEFAULT_BATCH_ROWS)
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
        return Running(Conformed(guarded, expected), cancel, close, "local")

    def _scan_sql(self, src: exp.Select, tree: exp.Expr) -> str:
        """One scan's SQL in the backend's dialect, checked: one exposed table, no
        subquery, and no node kind the checked fragment does not have."""
        dialect = self.backend.dialect
        kinds = kinds_of(tree, *self._transpiled)
        target = Target(
            lookup=table_lookup(self._exposed, self.backend.default_schemas),
            covered=lambda t: False,  # a scan reads the raw table: the view runs over it
        )
        try:
            src.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)
        except UnsupportedError:  # DuckDB applies the filter anyway
            src = src.where(None, append=False)
        if sum(1 for _ in src.find_all(exp.Select)) != 1:
            raise BackendError("a scan may not hold a subquery", user_error=False)
        return checked_sql(src, target, dialect, kinds=kinds)


def _is_view_source(table: exp.Table) -> bool:
    """Whether ``table`` is the source of one of the node's policy views."""
    select = table.parent.parent if table.parent is not None else None
    sub = select.parent if select is not None else None
    return isinstance(sub, exp.Subquery) and bool(sub.meta.get(POLICY_VIEW_META))


def _scan_target(scanned: dict[str, str], covered: frozenset[str]) -> Target:
    """The local DuckDB reads the fragment's scans, each by its (unguessable) name."""

    def lookup(node: exp.Table) -> object:
        name = node.name
        if node.args.get("db") is None and name in scanned:
            return ("scan", scanned[name])
        raise lang.BindError(f"table {name} is not a scan of this fragment")

    return Target(lookup=lookup, covered=lambda t: target_table(t, "scan") in covered)
