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
A fragment under one of the agency's policy views always runs locally: masks and
row filters have DuckDB's meaning on every backend (PostgreSQL's ``substr`` or
``LIKE`` would mean something else), and the backend only ever sees a scan with
the policy's own portable conditions (``scans.portable``), never a condition of
the caller's that it could evaluate on hidden rows or raw values first. Other
fragments the backend cannot run are refused as unsupported and the coordinator
plans smaller ones.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import ErrorLevel, UnsupportedError

from fedsql import lang
from fedsql.capabilities import TypeOf
from fedsql.connectors.backend import (
    TRANSPILED,
    Backend,
    BackendError,
    GuardedReader,
    Interrupter,
    Running,
    conform,
)
from fedsql.connectors.duckdb import DEFAULT_BATCH_ROWS, backend_error
from fedsql.connectors.guard import EXPOSED_META, table_lookup
from fedsql.connectors.keys import KeyCondition, in_list, with_keys
from fedsql.connectors.runs import (
    POLICY_VIEW_META,
    NotWhatWasChecked,
    Target,
    kinds_of,
    policy_views,
    verified,
)
from fedsql.connectors.scans import column_types, scan_select
from fedsql.connectors.shape import ShapeMirror
from fedsql.errors import RefusedFragment
from fedsql.lang import RESERVED_PREFIX
from fedsql.lockdown import open_locked
from fedsql.policy.masks import register_hash

log = logging.getLogger(__name__)

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
        self._local: duckdb.DuckDBPyConnection | None = None
        self._local_lock = threading.Lock()
        self._hash_key = hash_key
        self._engine = engine
        self._transpiled = TRANSPILED + tuple(getattr(backend, "transpiled_kinds", ()))
        # Local fragments take all their scans' connections at once, one fragment at a
        # time, so two of them never each hold half of what both need.
        self._scan_lock = threading.Lock()

    def target(self, covered: frozenset[str], key_sets: frozenset[str] = frozenset()) -> Target:
        """What SQL run for this fragment may read: exposed tables (those in
        ``covered`` only through their policy views) and the shipped key sets."""
        return Target(
            lookup=table_lookup(self._exposed, self.backend.default_schemas, key_sets),
            covered=lambda t: _full(t, "exposed") in covered,
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
        and a correlated scalar subquery over :data:`LOCAL_MIN_ROWS` estimated rows)."""
        tables = [t for t in tree.find_all(exp.Table) if t.meta.get(EXPOSED_META)]
        if not tables or len(tables) > self.backend.max_scans or self._engine == "native":
            return False
        if self._engine == "local":
            return True
        rows = sum(max(self._tables[t.meta[EXPOSED_META]].row_count_estimate, 0) for t in tables)
        return rows >= LOCAL_MIN_ROWS and _correlated_scalar(tree)

    def sql_to_run(
        self, tree: exp.Expr, covered: frozenset[str], key_sets: frozenset[str]
    ) -> str | None:
        """For a backend that runs fragments as written, the SQL to run for a checked
        fragment (its policy views in place), checked again (:func:`runs.verified`);
        None for the others, whose SQL holds the key sets' values and is written and
        checked again on every run."""
        if not self._native:
            return None
        return _checked(tree, self.target(covered, key_sets))

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
            expected = self._mirror.schema_of(_checked(shape, target))
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
            return self._run_locally(keyed(in_list), covered, expected, batch_rows, interrupter)
        if self._compute_locally(shape):
            return self._run_locally(keyed(in_list), covered, expected, batch_rows, interrupter)
        native = keyed(self.backend.key_condition)
        if lacking:
            raise BackendError(
                f"{self.backend.kind} cannot run {lacking} exactly as DuckDB does",
                user_error=False,
                unsupported=True,
            )
        sql = _checked(native, target, self.backend.dialect, transpiled=self._transpiled)
        run = self.backend.execute(sql, batch_rows, None, interrupter)
        return Running(_Conformed(run.reader, expected), run.cancel, run.close)

    def _local_engine(self) -> duckdb.DuckDBPyConnection:
        with self._local_lock:
            if self._local is None:
                key = self._hash_key

                def setup(con: duckdb.DuckDBPyConnection) -> None:
                    register_hash(con, key)

                self._local = open_locked(setup=setup, **self._limits)
            return self._local

    def _run_locally(
        self,
        tree: exp.Expr,
        covered: frozenset[str],
        expected: pa.Schema,
        batch_rows: int,
        interrupter: Interrupter | None = None,
    ) -> Running:
        """The fragment in the node's DuckDB, over filtered scans of the backend's tables."""
        cur = self._local_engine().cursor()
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
            local_sql = _checked(tree, _scan_target(scanned, covered))
            with self._scan_lock:
                for _, sql, _ in planned:
                    scans.append(self.backend.execute(sql, batch_rows, None, interrupter))
            for name, (_, _, schema), run in zip(scanned, planned, scans, strict=True):
                reader = pa.RecordBatchReader.from_batches(
                    schema, iter(_Conformed(run.reader, schema))
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
        return Running(_Conformed(guarded, expected), cancel, close, "local")

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
        return _checked(src, target, dialect, kinds=kinds)


def _is_view_source(table: exp.Table) -> bool:
    """Whether ``table`` is the source of one of the node's policy views."""
    select = table.parent.parent if table.parent is not None else None
    sub = select.parent if select is not None else None
    return isinstance(sub, exp.Subquery) and bool(sub.meta.get(POLICY_VIEW_META))


def _full(t: object, kind: str) -> str:
    """The exposed table a binding's target names, if it is of ``kind``."""
    return str(t[1]) if isinstance(t, tuple) and len(t) == 2 and t[0] == kind else ""


def _scan_target(scanned: dict[str, str], covered: frozenset[str]) -> Target:
    """The local DuckDB reads the fragment's scans, each by its (unguessable) name."""

    def lookup(node: exp.Table) -> object:
        name = node.name
        if node.args.get("db") is None and name in scanned:
            return ("scan", scanned[name])
        raise lang.BindError(f"table {name} is not a scan of this fragment")

    return Target(lookup=lookup, covered=lambda t: _full(t, "scan") in covered)


def _checked(
    tree: exp.Expr,
    target: Target,
    dialect: str | None = None,
    kinds: Any = None,
    transpiled: tuple[type[exp.Expr], ...] = (),
) -> str:
    """:func:`runs.verified`, in the backend's terms (``dialect``: the backend's, for
    SQL transpiled to it; None: the fragment language as written, run by DuckDB). A
    fragment's construct that does not read back is refused; SQL as written that
    fails otherwise is the node's own bug; SQL transpiled to another dialect that
    fails it is something that dialect cannot say the way it was checked:
    unsupported, so a smaller fragment may work."""
    views = None
    if dialect is not None:
        try:
            views = [
                lang.parse(v.sql(dialect=dialect), "policy view", dialect)
                for v in policy_views(tree)
            ]
        except lang.Refused as e:
            raise BackendError(f"cannot write a policy in {dialect}: {e}", False, True) from None
        if kinds is None:
            kinds = kinds_of(tree, *transpiled)
    try:
        return verified(tree, target, dialect, views, kinds)
    except lang.NotInLanguage as e:  # the fragment's own construct does not read back
        raise RefusedFragment(str(e)) from None
    except NotWhatWasChecked as e:
        log.error("fragment not run (%s): %s", dialect or lang.DIALECT, e)
        if dialect is not None:
            raise BackendError(
                f"the fragment cannot be written in {dialect} as it was checked", False, True
            ) from None
        raise BackendError(
            "the connector could not check the SQL it would run for this fragment "
            "(a fedsql bug; the connector's log has details)",
            user_error=False,
        ) from None


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
