"""How a checked fragment runs on a backend.

DuckDB backends run the fragment as it is. Other backends (PostgreSQL, SQLite)
run it one of two ways, chosen per fragment:

- *native*: transpiled to the backend's dialect (sqlglot); every batch it
  returns is cast to the schema DuckDB would have produced;
- *local* (``local_engine.py``): the node's own DuckDB computes the fragment over
  scans of the backend — each scan only the columns the fragment uses, filtered by the
  conjuncts that touch that table alone (``scans.py``), so indexes and
  selective filters still run in the database while joins and aggregates run
  vectorised and in parallel. Only the fragment's result leaves the agency
  either way.

``engine = "auto"`` (the default) picks local for a fragment with a correlated
subquery the backend runs once per outer row (``Backend.per_row_subqueries``:
PostgreSQL a scalar one, SQLite also EXISTS and IN; TPC-H Q21 on SQLite at SF
0.1: 178 s) over at least :data:`LOCAL_MIN_ROWS` estimated rows, and native for
the rest: measured, PostgreSQL
aggregates in place faster than it can export rows (~2 µs a row through COPY).
A fragment under one of the agency's policy views always runs locally: masks and
row filters have DuckDB's meaning on every backend (PostgreSQL's ``substr`` or
``LIKE`` would mean something else), and the backend only ever sees a scan with
the policy's own portable conditions (``scans.portable``), never a condition of
the caller's that it could evaluate on hidden rows or raw values first. Other
fragments the backend cannot run are refused as unsupported and the coordinator
plans smaller ones.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from fedsql.capabilities import TypeOf
from fedsql.connectors.backend import (
    TRANSPILED,
    Backend,
    BackendError,
    Conformed,
    Interrupter,
    Running,
)
from fedsql.connectors.guard import EXPOSED_META, table_lookup
from fedsql.connectors.keys import KeyCondition, in_list, with_keys
from fedsql.connectors.local_engine import LocalEngine
from fedsql.connectors.runs import Target, checked_sql, policy_views, target_table
from fedsql.connectors.scans import column_types
from fedsql.connectors.shape import ShapeMirror

# The estimated rows a fragment must read before "auto" computes it in the node's DuckDB.
LOCAL_MIN_ROWS = 50_000


def correlated_kinds(tree: exp.Expr) -> frozenset[str]:
    """The kinds of correlated subquery a fragment holds: ``scalar``, ``exists``,
    ``in``, each one that reads an outer query's columns. DuckDB decorrelates them
    into joins; PostgreSQL runs a correlated scalar subquery once per outer row (a
    SubPlan), SQLite every kind (``Backend.per_row_subqueries``).

    >>> import sqlglot
    >>> sorted(correlated_kinds(sqlglot.parse_one(
    ...     "SELECT 1 FROM l WHERE l.q < (SELECT avg(i.q) FROM l AS i WHERE i.p = l.p)")))
    ['scalar']
    >>> sorted(correlated_kinds(sqlglot.parse_one(
    ...     "SELECT 1 FROM l WHERE EXISTS (SELECT 1 FROM o WHERE o.k = l.k) "
    ...     "AND l.x IN (SELECT y FROM z WHERE z.k = l.k) AND l.x IN (SELECT y FROM z)")))
    ['exists', 'in']
    >>> sorted(correlated_kinds(sqlglot.parse_one(
    ...     "SELECT 1 FROM l WHERE NOT EXISTS (SELECT 1 FROM o WHERE o.k = 1)")))
    []
    """
    kinds: set[str] = set()
    for node in tree.find_all(exp.Subquery, exp.Exists):
        if isinstance(node, exp.Exists):
            kind = "exists"
        elif isinstance(node.parent, exp.In):
            kind = "in"
        elif isinstance(node.parent, exp.Exists | exp.From | exp.Join):
            continue  # the EXISTS itself is looked at; a derived table runs once
        else:
            kind = "scalar"
        inner = node.this
        own = {t.alias_or_name.lower() for t in inner.find_all(exp.Table)}
        if any(c.table and c.table.lower() not in own for c in inner.find_all(exp.Column)):
            kinds.add(kind)
    return frozenset(kinds)


class FragmentRunner:
    def __init__(
        self,
        backend: Backend,
        hash_key: bytes | None,
        engine: str = "auto",
        limits: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self._native = backend.runs_as_written
        self._tables = {t.full_name.lower(): t for t in backend.tables()}
        self._exposed = {
            (t.schema.lower(), t.name.lower()): (t.schema, t.name) for t in backend.tables()
        }
        self._limits = limits or {}
        self._mirror = None if self._native else ShapeMirror(backend.tables())
        self._engine = engine
        self._transpiled = TRANSPILED + tuple(getattr(backend, "transpiled_kinds", ()))
        self._localized = LocalEngine(
            backend, self._tables, self._exposed, hash_key, self._limits, self._transpiled
        )

    def target(self, covered: frozenset[str], key_sets: frozenset[str] = frozenset()) -> Target:
        """What SQL run for this fragment may read: exposed tables (those in
        ``covered`` only through their policy views) and the shipped key sets."""
        return Target(
            lookup=table_lookup(self._exposed, self.backend.default_schemas, key_sets),
            covered=lambda t: target_table(t, "exposed") in covered,
            reserved={n for _, n in self._exposed}.__contains__,
        )

    def _type_of(self, tree: exp.Expr) -> TypeOf:
        """Column types of a fragment, from the exposed tables it binds."""
        schemas = {
            t.alias_or_name.lower(): self._tables[t.meta[EXPOSED_META]].arrow_schema
            for t in tree.find_all(exp.Table)
            if t.meta.get(EXPOSED_META)
        }
        return column_types(schemas)

    def _compute_locally(self, tree: exp.Expr) -> bool:
        """Whether this fragment goes to the node's DuckDB (``engine`` local, or auto
        and a correlated subquery the backend runs once per outer row, over
        :data:`LOCAL_MIN_ROWS` estimated rows)."""
        tables = [t for t in tree.find_all(exp.Table) if t.meta.get(EXPOSED_META)]
        if not tables or len(tables) > self.backend.max_scans or self._engine == "native":
            return False
        if self._engine == "local":
            return True
        rows = sum(max(self._tables[t.meta[EXPOSED_META]].row_count_estimate, 0) for t in tables)
        per_row = self.backend.per_row_subqueries
        return bool(per_row) and rows >= LOCAL_MIN_ROWS and bool(correlated_kinds(tree) & per_row)

    def sql_to_run(
        self, tree: exp.Expr, covered: frozenset[str], key_sets: frozenset[str]
    ) -> str | None:
        """For a backend that runs fragments as written, the SQL to run for a checked
        fragment (its policy views in place), checked again (:func:`runs.verified`);
        None for the others, whose SQL holds the key sets' values and is written and
        checked again on every run."""
        if not self._native:
            return None
        return checked_sql(tree, self.target(covered, key_sets))

    def start(
        self,
        tree: exp.Expr | None,
        batch_rows: int,
        covered: frozenset[str] = frozenset(),
        keys: dict[str, pa.Table] | None = None,
        interrupter: Interrupter | None = None,
        sql: str | None = None,
    ) -> Running:
        """Run a checked fragment, its policy views in place (``covered``: the exposed
        tables that have a policy for this caller, read only through their views).
        ``sql``: what :meth:`sql_to_run` returned for it (``tree`` may then be None)."""
        if interrupter is not None:
            interrupter.check()
        keys = keys or {}
        if self._native:
            if sql is None:
                assert tree is not None
                sql = self.sql_to_run(tree, covered, frozenset(keys))
            assert sql is not None
            return self.backend.execute(sql, batch_rows, keys, interrupter)
        assert tree is not None
        assert self._mirror is not None
        target = self.target(covered)

        def keyed(render: KeyCondition | None) -> exp.Expr:
            """The tree with its key-set conditions written by ``render``."""
            try:
                return with_keys(tree, keys, render) if keys else tree
            except ValueError as e:
                raise BackendError(str(e), user_error=False, unsupported=True) from None

        shape = keyed(None)  # key conditions as TRUE: the result's schema, the choice
        try:
            expected = self._mirror.schema_of(checked_sql(shape, target))
        except duckdb.Error as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BackendError(first, user_error=True) from None
        lacking = self.backend.capabilities.lacking(shape, self._type_of(shape))
        # Policies have one meaning, DuckDB's: a fragment under a policy view runs in
        # the node's DuckDB, over scans that read only the policy's own portable
        # conditions, so nothing of the caller's runs in the backend on hidden rows
        # or raw values, and no policy means something else in the backend's SQL.
        if policy_views(shape):
            scans = sum(1 for t in shape.find_all(exp.Table) if t.meta.get(EXPOSED_META))
            if scans > self.backend.max_scans:
                raise BackendError(
                    f"the fragment reads {scans} tables under policies; this node scans at "
                    f"most {self.backend.max_scans} at once",
                    user_error=False,
                    unsupported=True,  # the coordinator sends smaller fragments
                )
            return self._localized.run(keyed(in_list), covered, expected, batch_rows, interrupter)
        if self._compute_locally(shape):
            return self._localized.run(keyed(in_list), covered, expected, batch_rows, interrupter)
        native = keyed(self.backend.key_condition)
        if lacking:
            raise BackendError(
                f"{self.backend.kind} cannot run {lacking} exactly as DuckDB does",
                user_error=False,
                unsupported=True,
            )
        sql = checked_sql(native, target, self.backend.dialect, transpiled=self._transpiled)
        run = self.backend.execute(sql, batch_rows, None, interrupter)
        return Running(Conformed(run.reader, expected), run.cancel, run.close)


__all__ = ["FragmentRunner"]
