"""Cut a resolved query into fragments (one connector each) and a residual.

The cut, top-down over sqlglot scopes:

1. A scope (query, derived table, CTE, subquery, UNION branch) whose tables
   all live at one connector, that references nothing outside itself
   (no correlation, no outer CTE), runs there whole: joins, aggregates,
   subqueries, ORDER BY … LIMIT included.
2. Otherwise its children are cut the same way, and each base table left in
   it becomes a table fragment: the columns the query needs from it, and the
   conjuncts of WHERE / inner-join ON that touch only that table.

The residual is the original query with each pushed piece replaced by a scan
of its fragment's result; it runs in the coordinator's DuckDB. Pushed
predicates stay in the residual too, so pushdown can only remove rows that the
residual would have removed anyway (exact or not done).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, TokenError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope
from sqlglot.schema import MappingSchema

from fedsql.catalog import Catalog, TableRef
from fedsql.errors import CatalogError, PlanError
from fedsql.planner.resolve import (
    exists_select_one,
    resolve_tables,
    sqlglot_schema,
    table_ref,
)
from fedsql.planner.shape import ShapeBinder

DIALECT = "duckdb"
FRAGMENT_PREFIX = "__fedsql_f"


@dataclass(frozen=True, slots=True)
class Fragment:
    """SQL sent to one connector."""

    id: str  # the name its result has in the residual, e.g. "__fedsql_f0"
    agency: str
    sql: str  # DuckDB dialect, tables named as the connector exposes them
    kind: str  # "query" (the whole query), "subtree", or "table"
    tables: tuple[str, ...]  # qualified names of the tables it reads
    row_estimate: int  # largest row-count estimate among its tables (-1 unknown)


@dataclass(frozen=True, slots=True)
class Plan:
    fragments: tuple[Fragment, ...]
    residual: str | None  # None: the result is the single fragment's stream
    output_names: tuple[str, ...] = ()  # result column names, as one DuckDB would give them

    def explain(self) -> str:
        lines = []
        for f in self.fragments:
            lines.append(f"fragment {f.id} -> {f.agency}  [{f.kind}: {', '.join(f.tables)}]")
            lines.append("  " + f.sql)
        if self.residual is None:
            lines.append("residual: none (the fragment's result is the answer)")
        else:
            lines.append("residual (coordinator DuckDB):")
            lines.append("  " + self.residual)
        return "\n".join(lines)


def parse(sql: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except (ParseError, TokenError) as e:
        msg = str(e).splitlines()[0] if str(e) else "syntax error"
        raise PlanError(f"cannot parse the query: {msg}") from None
    if len(statements) != 1:
        raise PlanError(f"expected exactly one SQL statement, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Query) or isinstance(tree, exp.Subquery):
        raise PlanError(f"only SELECT queries are supported, got {tree.key.upper()}")
    return tree


def plan(sql: str, catalog: Catalog, binder: ShapeBinder | None = None) -> Plan:
    """Plan one query against the federation's catalog.

    ``binder`` (built from the same catalog) supplies the result's column names.
    """
    tree = parse(sql)
    for t in tree.find_all(exp.Table):
        if not isinstance(t.this, exp.Identifier):
            raise PlanError(f"table functions are not supported in federated queries: {t.sql()}")
    tree = resolve_tables(tree, catalog)
    tree = exists_select_one(tree)
    schema = MappingSchema(sqlglot_schema(catalog), dialect=DIALECT, normalize=False)
    try:
        tree = qualify(
            tree,
            schema=schema,
            dialect=DIALECT,
            validate_qualify_columns=True,
            quote_identifiers=True,
            identify=False,
        )
    except OptimizeError as e:
        raise CatalogError(_column_error(str(e))) from None
    cutter = _Cutter(tree)
    root_scope = build_scope(tree)
    if root_scope is None:
        raise PlanError("cannot plan this query")
    cutter.cut(root_scope)
    residual = None if cutter.whole_query else tree.sql(dialect=DIALECT)
    names = tuple(binder.output_names(sql)) if binder is not None else ()
    return Plan(tuple(cutter.fragments), residual, names)


def _column_error(msg: str) -> str:
    first = msg.splitlines()[0]
    return f"cannot resolve a column: {first}"


class _Cutter:
    def __init__(self, tree: exp.Query) -> None:
        self.tree = tree
        self.fragments: list[Fragment] = []
        self.whole_query = False
        self._ids = itertools.count()

    # -- analysis ---------------------------------------------------------
    @staticmethod
    def _tables(scope: Scope) -> list[tuple[str, exp.Table, TableRef]]:
        out = []
        for alias, (_node, source) in scope.selected_sources.items():
            if isinstance(source, exp.Table) and (ref := table_ref(source)) is not None:
                out.append((alias, source, ref))
        return out

    def _pushable_to(self, scope: Scope) -> str | None:
        """The one agency that can run this scope's whole subtree, if any."""
        inside = list(scope.traverse())
        inside_ids = {id(s) for s in inside}
        agencies: set[str] = set()
        for s in inside:
            read = set(s.selected_sources) | {t.alias_or_name for t in s.tables}
            for name, source in s.sources.items():
                if isinstance(source, Scope) and id(source) not in inside_ids and name in read:
                    return None  # reads a CTE defined outside the subtree
            for _, _, ref in self._tables(s):
                agencies.add(ref.agency)
            for t in s.tables:
                if table_ref(t) is None and not isinstance(s.sources.get(t.alias_or_name), Scope):
                    return None
            if s.is_udtf:
                return None
            for col in s.external_columns:
                if not self._resolves_inside(s, col, inside_ids):
                    return None
        if len(agencies) != 1:
            return None
        return agencies.pop()

    @staticmethod
    def _resolves_inside(scope: Scope, col: exp.Column, inside_ids: set[int]) -> bool:
        name = col.table
        s = scope.parent
        while s is not None and id(s) in inside_ids:
            if name in s.selected_sources or name in s.sources:
                return True
            s = s.parent
        return False

    # -- cutting ----------------------------------------------------------
    def _new_id(self) -> str:
        return f"{FRAGMENT_PREFIX}{next(self._ids)}"

    def cut(self, scope: Scope) -> None:
        agency = self._pushable_to(scope)
        if agency is not None:
            self._push_subtree(scope, agency)
            return
        children = itertools.chain(
            scope.cte_scopes, scope.set_operation_scopes, scope.table_scopes, scope.subquery_scopes
        )
        # Table fragments first: they read this scope's columns before children change.
        self._push_tables(scope)
        for child in list(children):
            self.cut(child)

    def _push_subtree(self, scope: Scope, agency: str) -> None:
        node = scope.expression
        tables = []
        row_est = -1
        frag_tree = node.copy()
        for s in scope.traverse():
            for _, _, ref in self._tables(s):
                tables.append(ref.qualified)
                row_est = max(row_est, ref.row_count_estimate)
        for t in frag_tree.find_all(exp.Table):
            ref = table_ref(t)
            if ref is not None:
                _to_remote(t, ref)
        fid = self._new_id()
        is_root = scope.parent is None and node is self.tree
        self.fragments.append(
            Fragment(
                id=fid,
                agency=agency,
                sql=frag_tree.sql(dialect=DIALECT),
                kind="query" if is_root else "subtree",
                tables=tuple(dict.fromkeys(tables)),
                row_estimate=row_est,
            )
        )
        if is_root:
            self.whole_query = True
            return
        node.replace(exp.select("*").from_(exp.to_table(fid)))

    def _push_tables(self, scope: Scope) -> None:
        if not isinstance(scope.expression, exp.Select):
            return
        select = scope.expression
        tables = self._tables(scope)
        if not tables:
            return
        null_supplying = _null_supplying(select)
        columns: dict[str, dict[str, None]] = {alias: {} for alias, _, _ in tables}
        for col in scope.columns:
            if col.table in columns:
                columns[col.table][col.name] = None
        where_conjuncts = _conjuncts(select.args.get("where"))
        for alias, node, ref in tables:
            preds: list[exp.Expression] = []
            if alias not in null_supplying:
                preds += [c for c in where_conjuncts if _only(c, alias)]
            join = node.parent if isinstance(node.parent, exp.Join) else None
            if join is not None and join.args.get("on") is not None:
                side = (join.side or "").upper()
                if side in ("", "LEFT") and (join.kind or "").upper() not in ("SEMI", "ANTI"):
                    preds += [c for c in _conjuncts(join.args["on"]) if _only(c, alias)]
            wanted = columns[alias]
            ordered = [f.name for f in ref.arrow_schema if f.name in wanted]
            if ordered:
                projs: list[exp.Expression] = [
                    exp.column(c, table=alias, quoted=True) for c in ordered
                ]
            else:
                projs = [exp.alias_(exp.Literal.number(1), "__fedsql_row", quoted=True)]
            remote = node.copy()
            _to_remote(remote, ref)
            frag = exp.select(*projs).from_(remote)
            if preds:
                frag = frag.where(exp.and_(*(p.copy() for p in preds)))
            fid = self._new_id()
            self.fragments.append(
                Fragment(
                    id=fid,
                    agency=ref.agency,
                    sql=frag.sql(dialect=DIALECT),
                    kind="table",
                    tables=(ref.qualified,),
                    row_estimate=ref.row_count_estimate,
                )
            )
            new = exp.Table(
                this=exp.to_identifier(fid),
                alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)),
            )
            node.replace(new)


def _to_remote(table: exp.Table, ref: TableRef) -> None:
    """Name a table as its connector exposes it (no agency; schema only if not default)."""
    table.set("catalog", None)
    table.set("db", exp.to_identifier(ref.schema, quoted=True) if ref.schema else None)
    table.set("this", exp.to_identifier(ref.name, quoted=True))


def _conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    if node is None:
        return []
    if isinstance(node, exp.Where):
        node = node.this
    out: list[exp.Expression] = []
    stack = [node]
    while stack:
        n = stack.pop()
        while isinstance(n, exp.Paren):
            n = n.this
        if isinstance(n, exp.And):
            stack.extend([n.right, n.left])
        else:
            out.append(n)
    return out


_NOT_PUSHABLE = (exp.Subquery, exp.Query, exp.AggFunc, exp.Window, exp.Rand, exp.Placeholder)


def _only(pred: exp.Expression, alias: str) -> bool:
    """True if ``pred`` reads only columns of ``alias`` and is safe to evaluate early."""
    if pred.find(*_NOT_PUSHABLE) is not None:
        return False
    cols = list(pred.find_all(exp.Column))
    if not cols:
        return False
    return all(c.table == alias for c in cols)


def _null_supplying(select: exp.Select) -> set[str]:
    """Aliases on the NULL-supplying side of an outer join in this SELECT."""
    seen: list[str] = []
    from_ = select.args.get("from_") or select.args.get("from")
    if from_ is not None:
        seen.append(from_.this.alias_or_name)
    out: set[str] = set()
    for join in select.args.get("joins") or []:
        alias = join.this.alias_or_name
        side = (join.side or "").upper()
        if side == "LEFT":
            out.add(alias)
        elif side == "RIGHT":
            out.update(seen)
        elif side == "FULL":
            out.update(seen)
            out.add(alias)
        seen.append(alias)
    return out
