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
from dataclasses import dataclass, replace

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope
from sqlglot.schema import MappingSchema

from fedsql import lang
from fedsql.capabilities import Capabilities, TypeOf
from fedsql.catalog import Catalog, TableRef
from fedsql.errors import CatalogError, PlanError
from fedsql.planner.partial import push_partial_aggregates
from fedsql.planner.resolve import (
    coordinator_policy,
    exists_select_one,
    resolve_tables,
    sqlglot_schema,
    table_ref,
)
from fedsql.planner.rules import (
    NOT_PUSHABLE,
    drop_inferred,
    factor_or,
    flatten,
    implied_by_or,
    infer_equalities,
    is_within,
    null_supplying,
    reads_only,
    split_aggregate,
)
from fedsql.planner.shape import ShapeBinder
from fedsql.policy import view_for
from fedsql.policy.model import Policy

DIALECT = "duckdb"
_NO_CAPABILITIES = Capabilities(frozenset())  # an agency not in the catalog: nothing
FRAGMENT_PREFIX = "__fedsql_f"
# Below this estimated size a fragment is not worth waiting for another's keys.
# (Small fragments still take keys: a filtered dimension table passes its filter on
# down the chain, e.g. nation → supplier → lineitem in TPC-H Q21.)
MIN_PROBE_ROWS = 2_000


@dataclass(frozen=True, slots=True)
class Fragment:
    """SQL sent to one connector."""

    id: str  # the name its result has in the residual, e.g. "__fedsql_f0"
    agency: str
    sql: str  # DuckDB dialect, tables named as the connector exposes them
    kind: str  # "query" (the whole query), "subtree", "table" or "join"
    tables: tuple[str, ...]  # qualified names of the tables it reads
    row_estimate: int  # largest row-count estimate among its tables (-1 unknown)
    # Semi-join reduction: before this fragment is sent, it is also filtered to the
    # join keys another fragment returned (see ``execute``).
    reduce_by: tuple[Reducer, ...] = ()
    # The agency joins key sets shipped as Arrow tables (capability arrow_key_sets);
    # else they are shipped only where they can be written into its SQL.
    arrow_keys: bool = True
    # Eager aggregation: when set, what is sent is this query with the table
    # __fedsql_inner replaced by ``sql`` (after any semi-join reduction of it).
    wrap: str = ""
    # Conditions that compare with an uncorrelated scalar subquery run at another
    # agency: sent once that value is in, as a literal (see ``ScalarFilter``).
    scalar_filters: tuple[ScalarFilter, ...] = ()

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The fragments whose results this one waits for."""
        deps = [r.build for r in self.reduce_by]
        deps += [b for sf in self.scalar_filters for b in sf.builds]
        return tuple(dict.fromkeys(deps))


@dataclass(frozen=True, slots=True)
class ScalarFilter:
    """A WHERE conjunct of the fragment's tables and uncorrelated scalar subqueries,
    each of which became a one-column fragment (``builds``); in ``sql`` (the
    fragment's dialect, DuckDB) each subquery is the column ``__fedsql_scalar_<id>``.

    Exact: the conjunct also stays in the residual, so this only drops rows the
    residual would drop; it is left out unless each subquery returned one row
    whose value has an exact literal.
    """

    sql: str
    builds: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reducer:
    """``probe_sql IN (the distinct values of column `build_column` of fragment `build`)``.

    Exact because the probe fragment only feeds an inner join (or a correlated
    subquery) on that equality: rows without a matching key could never count.
    """

    build: str  # fragment id whose result supplies the keys
    build_column: str  # output column of that fragment
    probe_sql: str  # the expression in the probe fragment's own SQL (DuckDB dialect)


@dataclass(frozen=True, slots=True)
class Plan:
    fragments: tuple[Fragment, ...]
    residual: str | None  # None: the result is the single fragment's stream
    output_names: tuple[str, ...] = ()  # result column names, as one DuckDB would give them
    policies: tuple[str, ...] = ()  # which masks and row filters apply where

    def explain(self, pretty: bool = False) -> str:
        """Each fragment with the agency that runs it, then the residual query."""

        def show(sql: str) -> str:
            if pretty:
                sql = sqlglot.transpile(sql, read=DIALECT, write=DIALECT, pretty=True)[0]
            return "\n".join("    " + line for line in sql.splitlines())

        lines = []
        for f in self.fragments:
            lines.append(f"fragment {f.id} -> {f.agency}  [{f.kind}: {', '.join(f.tables)}]")
            lines.append(show(f.sql))
            for r in f.reduce_by:
                lines.append(
                    f"    + semi-join: {r.probe_sql} IN (keys of {r.build}.{r.build_column})"
                )
            for sf in f.scalar_filters:
                lines.append(f"    + filter, with the value of {', '.join(sf.builds)}: {sf.sql}")
            if f.wrap:
                lines.append("    + aggregated at the agency: " + f.wrap)
        if self.residual is None:
            lines.append("residual: none (the fragment's result is the answer)")
        else:
            lines.append("residual (coordinator DuckDB):")
            lines.append(show(self.residual))
        if self.policies:
            lines.append("policies:")
            lines += [f"    {p}" for p in self.policies]
        return "\n".join(lines)


LANGUAGE_DOC = "docs/fragment-language.md"


def parse(sql: str) -> exp.Query:
    """The analyst's query, bounded before parsing and in the fragment language
    (tables may be named ``agency.schema.table``): what fedsql plans is what its
    connectors and its merge engine accept."""
    try:
        tree = lang.parse(sql, "the query")
    except lang.BadSyntax as e:
        raise PlanError(f"cannot parse the query: {e}") from None
    except lang.Refused as e:
        raise PlanError(str(e)) from None
    if not isinstance(tree, exp.Query) or isinstance(tree, exp.Subquery):
        raise PlanError(f"only SELECT queries are supported, got {tree.key.upper()}")
    try:
        lang.check(tree, catalogs=True)
    except lang.Refused as e:
        raise PlanError(f"{e}; fedsql accepts the SQL described in {LANGUAGE_DOC}") from None
    assert isinstance(tree, exp.Query)
    for node in tree.walk():
        # The parser's token positions, deep-copied with every copy() of a node,
        # are a third of the planner's copying time; nothing reads them after parsing.
        if node._meta and node._meta.keys() <= _POSITIONS:
            node._meta = None
    return tree


_POSITIONS = frozenset({"line", "col", "start", "end"})


def plan(
    sql: str,
    catalog: Catalog,
    binder: ShapeBinder | None = None,
    policy: Policy | None = None,
    roles: tuple[str, ...] = (),
    scan_only: frozenset[str] = frozenset(),
) -> Plan:
    """Plan one query against the federation's catalog.

    ``binder`` (built from the same catalog) supplies the result's column names;
    ``policy`` is the federation's own masks and row filters, for ``roles``.
    """
    tree = parse(sql)
    declared = _declared_names(tree, catalog)
    resolve_tables(tree, catalog, policy, roles)
    notes = _policy_notes(tree)
    exists_select_one(tree)
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
    caps = {a: c.capabilities for a, c in catalog.catalogs.items()}
    push_partial_aggregates(tree, _agency_of)
    factor_or(tree)
    infer_equalities(tree)
    cutter = _Cutter(tree, caps, scan_only)
    root_scope = build_scope(tree)
    if root_scope is None:
        raise PlanError("cannot plan this query")
    cutter.cut(root_scope)
    fragments = cutter.with_reducers()
    if not cutter.whole_query:
        fragments = _derive_coarser(fragments, tree)
    residual = None
    if not cutter.whole_query:
        residual_tree = _drop_true(drop_inferred(tree))
        _reads_only_fragments(residual_tree, {f.id for f in fragments})
        residual = residual_tree.sql(dialect=DIALECT, copy=False)
    if declared is not None:
        names = declared
    else:
        names = tuple(binder.output_names(sql)) if binder is not None else ()
    return Plan(tuple(fragments), residual, names, notes)


def _reads_only_fragments(residual: exp.Expr, fragment_ids: set[str]) -> None:
    """The merge engine sees only this query's fragment results: every table the
    residual reads binds, by scope, to one of them (or to its own CTEs)."""

    def lookup(table: exp.Table) -> object:
        if table.args.get("db") is None and table.name in fragment_ids:
            return table.name
        raise PlanError(f"internal error: the residual would read {table.sql(dialect=DIALECT)}")

    try:
        lang.bind(residual, lookup)
    except lang.Refused as e:
        raise PlanError(f"internal error: the residual does not bind: {e}") from None


def _derive_coarser(fragments: list[Fragment], tree: exp.Expr) -> list[Fragment]:
    """A fragment that is another's join pre-aggregated on fewer keys is computed
    from that one at the coordinator instead of being run again (TPC-H Q11: its
    subquery's total per nation is the sum of the outer query's per-part sums).

    Exact: grouping is associative for the partial SUM, MIN, MAX and COUNT that
    eager aggregation sends (a COUNT adds up as a SUM).
    """
    wrapped = [f.agency for f in fragments if f.wrap]
    if len(wrapped) == len(set(wrapped)):
        return fragments  # no agency has two pre-aggregated fragments
    used = {b for f in fragments for b in f.depends_on}
    by_id = {f.id: f for f in fragments}
    canon: dict[str, object] = {}

    def same_input(f: Fragment) -> object:
        """What decides a fragment's rows (not its columns): equal for two fragments
        that read the same rows, their reducers' builds compared the same way."""
        if f.id not in canon:
            tree = sqlglot.parse_one(f.sql, read=DIALECT)
            tree.set("expressions", [exp.Star()])
            canon[f.id] = (
                f.agency,
                tree.sql(dialect=DIALECT),
                tuple((key(r.build), r.build_column, r.probe_sql) for r in f.reduce_by),
                tuple((sf.sql, tuple(key(b) for b in sf.builds)) for sf in f.scalar_filters),
            )
        return canon[f.id]

    def key(fid: str) -> object:
        f = by_id[fid]
        return (same_input(f), f.sql, f.wrap)

    shapes = {f.id: shape for f in fragments if f.wrap and (shape := _wrap_shape(f.wrap))}
    derived: dict[str, exp.Expr] = {}
    for b in fragments:
        fine = shapes.get(b.id)
        if fine is None or b.id in used:
            continue
        b_keys, b_aggs = fine
        for a in fragments:
            if a.id == b.id or a.id in derived or a.id not in shapes:
                continue
            if a.agency != b.agency or same_input(a) != same_input(b):
                continue
            if not _projections(b.sql).items() <= _projections(a.sql).items():
                continue
            a_keys, a_aggs = shapes[a.id]
            by_sql = {agg: name for name, agg in a_aggs.items()}
            if not set(b_keys) <= set(a_keys) or any(g not in by_sql for g in b_aggs.values()):
                continue
            projs: list[exp.Expr] = [exp.column(k, quoted=True) for k in b_keys]
            for name, agg in b_aggs.items():
                combine = (
                    exp.Min
                    if agg.startswith("MIN(")
                    else exp.Max
                    if agg.startswith("MAX(")
                    else exp.Sum
                )
                projs.append(
                    exp.alias_(
                        combine(this=exp.column(by_sql[agg], quoted=True)), name, quoted=True
                    )
                )
            q = exp.select(*projs).from_(exp.to_table(a.id))
            if b_keys:
                q = q.group_by(*[exp.column(k, quoted=True) for k in b_keys])
            derived[b.id] = q
            break
    if not derived:
        return fragments
    for t in list(tree.find_all(exp.Table)):
        if t.name in derived and not t.args.get("db"):
            alias = t.args.get("alias")
            t.replace(exp.Subquery(this=derived[t.name].copy(), alias=alias))
    # What only a derived fragment waited for (its reducers' builds) is not needed.
    read = {t.name for t in tree.find_all(exp.Table)}
    kept = [f for f in fragments if f.id not in derived]
    while True:
        needed = read | {b for f in kept for b in f.depends_on}
        fewer = [f for f in kept if f.id in needed]
        if len(fewer) == len(kept):
            return kept
        kept = fewer


def _projections(sql: str) -> dict[str, str]:
    """A fragment's outputs: {name: the expression's SQL}."""
    tree = sqlglot.parse_one(sql, read=DIALECT)
    return {e.alias_or_name: e.unalias().sql(dialect=DIALECT) for e in tree.expressions}


def _wrap_shape(wrap: str) -> tuple[list[str], dict[str, str]] | None:
    """(grouping key names, {partial name: its aggregate, tables unnamed}) of an
    eager-aggregation wrap; None for other wraps."""
    q = sqlglot.parse_one(wrap, read=DIALECT)
    group = q.args.get("group")
    if not isinstance(q, exp.Select) or group is None or q.args.get("distinct"):
        return None
    keys = [g.name for g in group.expressions if isinstance(g, exp.Column)]
    if len(keys) != len(group.expressions):
        return None
    aggs: dict[str, str] = {}
    for e in q.expressions:
        if isinstance(e, exp.Column) and e.name in keys:
            continue
        if not (
            isinstance(e, exp.Alias) and isinstance(e.this, (exp.Sum, exp.Min, exp.Max, exp.Count))
        ):
            return None
        if isinstance(e.this.this, exp.Distinct):
            return None
        bare = e.this.copy()
        for c in bare.find_all(exp.Column):
            c.set("table", None)
        aggs[e.alias] = bare.sql(dialect=DIALECT)
    return keys, aggs


def _declared_names(tree: exp.Query, catalog: Catalog) -> tuple[str, ...] | None:
    """The result's column names when the query spells them out, as DuckDB would
    name them — every output an alias (named as written) or a column whose name is
    spelled as its table spells it — so binding it in DuckDB (several ms) is not
    needed; None otherwise (stars, set operations, expressions without alias)."""
    if not isinstance(tree, exp.Select):
        return None
    # Names the query itself defines (derived tables' and CTEs' outputs): a column
    # of one of them is named as the definition spells it.
    defined: dict[str, set[str]] = {}
    for node in tree.find_all(exp.Alias, exp.TableAlias):
        if isinstance(node, exp.TableAlias):
            spelled = [c.name for c in node.columns]
        else:
            spelled = [node.alias]
        for name in spelled:
            defined.setdefault(name.lower(), set()).add(name)
    names = []
    for e in tree.expressions:
        if isinstance(e, exp.Alias):
            names.append(e.alias)
        elif isinstance(e, exp.Column) and isinstance(e.this, exp.Identifier):
            # Spelled exactly one way wherever it could come from (else DuckDB decides).
            own = defined.get(e.name.lower(), set())
            if e.name in catalog.field_names:
                if own - {e.name}:
                    return None
            elif own != {e.name} or e.name.lower() in catalog.lowered_names:
                return None
            names.append(e.name)
        else:
            return None
    return tuple(names)


def _agency_of(table: exp.Table) -> str | None:
    ref = table_ref(table)
    return ref.agency if ref is not None else None


def _policy_notes(tree: exp.Expr) -> tuple[str, ...]:
    """Which masks and row filters apply where, for explain."""
    notes: dict[str, None] = {}
    for t in tree.find_all(exp.Table):
        ref = table_ref(t)
        if ref is None:
            continue
        for col, mask in ref.masks:
            notes[f"at agency {ref.agency}: {ref.qualified}.{col} masked ({mask})"] = None
        if ref.row_filtered:
            notes[f"at agency {ref.agency}: {ref.qualified} row filter"] = None
        tp = coordinator_policy(t)
        if tp is not None:
            for col, m in tp.masks.items():
                notes[f"at coordinator: {ref.qualified}.{col} masked ({m.describe()})"] = None
            for f in tp.filters:
                notes[f"at coordinator: {ref.qualified} row filter: {f.sql}"] = None
    return tuple(notes)


def _column_error(msg: str) -> str:
    first = msg.splitlines()[0]
    return f"cannot resolve a column: {first}"


class _Cutter:
    def __init__(
        self, tree: exp.Query, caps: dict[str, Capabilities], scan_only: frozenset[str]
    ) -> None:
        self.tree = tree
        self.caps = caps  # agency → what its backend runs as DuckDB does
        self.type_of = _column_types(tree)
        self.scan_only = scan_only  # agencies that get plain table scans only
        self.fragments: list[Fragment] = []
        self.whole_query = False
        self._ids = itertools.count()
        self._consumed: set[int] = set()
        # For semi-join reduction: residual alias → fragment, per scope; each
        # fragment's output columns as expressions in its own SQL; candidate edges.
        self._scope_frags: dict[int, dict[str, str]] = {}
        self._outputs: dict[str, dict[str, str]] = {}
        self._est: dict[str, float] = {}
        self._types: dict[str, dict[str, pa.DataType]] = {}  # each fragment's output types
        # Fragments that return a whole table, unfiltered: their keys reduce nothing.
        self._whole: set[str] = set()
        self._edges: list[tuple[str, str, Reducer, bool]] = []  # (build, probe, r, forced)
        # (fragment, its conjunct with subquery i as column __fedsql_scalar_i, the
        # subqueries in the tree): resolved to ScalarFilters once every scope is cut.
        self._scalars: list[tuple[str, exp.Expr, list[exp.Subquery]]] = []

    # -- analysis ---------------------------------------------------------
    @staticmethod
    def _tables(scope: Scope) -> list[tuple[str, exp.Table, TableRef]]:
        out = []
        for alias, (_node, source) in scope.selected_sources.items():
            if isinstance(source, exp.Table) and (ref := table_ref(source)) is not None:
                out.append((alias, source, ref))
        return out

    def _pushable_to(
        self, scope: Scope, outer: Scope | None = None, outer_aliases: frozenset[str] = frozenset()
    ) -> str | None:
        """The one agency that can run this scope's whole subtree, if any.

        With ``outer``, the subtree may also read columns of ``outer_aliases`` in
        the scope ``outer`` (a correlated subquery joining a co-located group).
        """
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
                if coordinator_policy(t) is not None:
                    return None  # the federation's own view is applied at the coordinator
            if s.is_udtf:
                return None
            for col in s.external_columns:
                home = _home_scope(s, col)
                if home is None:
                    return None
                if id(home) in inside_ids:
                    continue
                if outer is None or home is not outer or col.table not in outer_aliases:
                    return None
        if len(agencies) != 1:
            return None
        agency = agencies.pop()
        if agency in self.scan_only:
            return None
        caps = self._caps(agency)
        if caps.lacking(scope.expression, self.type_of) is not None:
            return None
        if not caps.has("correlated_subqueries") and (
            outer is not None or any(s.external_columns for s in inside if s is not scope)
        ):
            return None
        return agency

    def _runnable(self, pred: exp.Expr, agency: str) -> bool:
        """Can ``agency``'s backend evaluate this predicate exactly?"""
        if agency in self.scan_only:
            return False
        return self._caps(agency).lacking(pred, self.type_of) is None

    def _caps(self, agency: str) -> Capabilities:
        return self.caps.get(agency, _NO_CAPABILITIES)

    # -- cutting ----------------------------------------------------------
    def _new_id(self) -> str:
        return f"{FRAGMENT_PREFIX}{next(self._ids)}"

    def cut(self, scope: Scope) -> None:
        if id(scope) in self._consumed:
            return
        agency = self._pushable_to(scope)
        if agency is not None:
            self._push_subtree(scope, agency)
            return
        children = list(
            itertools.chain(
                scope.cte_scopes,
                scope.set_operation_scopes,
                scope.table_scopes,
                scope.subquery_scopes,
            )
        )
        # Table fragments first: they read this scope's columns before children change.
        self._push_tables(scope)
        for child in children:
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
        _rename_to_remote(frag_tree)
        if (
            isinstance(frag_tree, exp.Select)
            and isinstance(node.parent, exp.Subquery)
            and isinstance(node.parent.parent, exp.In)
            and not any(frag_tree.args.get(k) for k in ("limit", "offset", "distinct", "order"))
        ):
            frag_tree.set("distinct", exp.Distinct())  # IN reads a set: duplicates stay home
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
        """Fragments for the base tables of one SELECT: co-located groups or single tables."""
        if not isinstance(scope.expression, exp.Select):
            return
        select = scope.expression
        tables = self._tables(scope)
        if not tables:
            return
        where = _conjuncts(select.args.get("where"))
        inner_only = _inner_joins_only(select)
        if inner_only:
            join_preds = where + [
                c for j in select.args.get("joins") or [] for c in _conjuncts(j.args.get("on"))
            ]
            groups = _colocated_groups(
                tables,
                [
                    c
                    for c in join_preds
                    if all(self._runnable(c, ref.agency) for _, _, ref in tables)
                ],
                self.scan_only,
            )
        else:
            groups = [[t] for t in tables]
        for group in groups:
            # Read the WHERE afresh: pushing a group may rebuild it (a join's ON moves
            # there), and a conjunct of the old one would be replaced in a copy only.
            self._push_group(scope, select, group, _conjuncts(select.args.get("where")), inner_only)
        if inner_only:
            self._eager_aggregate(scope, select)
            self._distinct_fragments(scope, select)
            self._find_reducers(scope, select)
        elif (right := _lone_left_join(select)) is not None:
            self._eager_aggregate(scope, select, null_side=right)  # TPC-H Q13

    def _eager_aggregate(
        self, scope: Scope, select: exp.Select, null_side: str | None = None
    ) -> None:
        """Aggregate one fragment at its agency before the cross-agency join.

        Applies when every aggregate of this SELECT is SUM/MIN/MAX/COUNT over that
        fragment's columns alone and the rest of the query reads only columns it
        can group by (join keys, grouping columns). Each pre-aggregated row stands
        for rows that join and group identically, so SUM of partial SUMs, MIN of
        MINs, MAX of MAXes and SUM of COUNTs give the same answer (eager
        aggregation; Yan & Larson, VLDB 1995).
        """
        if select.args.get("distinct") or select.args.get("qualify"):
            return
        group = select.args.get("group")
        if group is not None and any(
            group.args.get(k) for k in ("rollup", "cube", "grouping_sets", "all")
        ):
            return
        if select.find(exp.Window) is not None:
            return
        aggs = [a for a in select.find_all(exp.AggFunc) if a.find_ancestor(exp.Select) is select]
        if not aggs:
            return
        frags = self._scope_frags.get(id(scope), {})
        owners = set()
        distinct: dict[str, None] = {}  # columns of AGG(DISTINCT col): kept as keys
        for a in aggs:
            if not isinstance(a, (exp.Sum, exp.Min, exp.Max, exp.Count, exp.Avg)):
                return
            if any(n is not a for n in a.find_all(exp.AggFunc, exp.Subquery)):
                return
            if isinstance(a.this, exp.Distinct):
                (col,) = a.this.expressions if len(a.this.expressions) == 1 else (None,)
                if not isinstance(col, exp.Column):
                    return
                distinct[col.name] = None
            cols = {c.table for c in a.find_all(exp.Column)}
            if len(cols) > 1:
                return
            owners |= cols
        if len(owners) != 1:
            return  # COUNT(*) alone, or aggregates over several fragments
        (alias,) = owners
        if null_side is not None and (
            alias != null_side
            or any(isinstance(a, exp.Count) and isinstance(a.this, exp.Star) for a in aggs)
        ):
            # Under a LEFT JOIN only the NULL-supplying side may be pre-aggregated, and
            # COUNT(*) counts unmatched rows that a sum of partial counts would not.
            return
        fid = frags.get(alias)
        index = self._index_of(fid)
        if fid is None or index is None or self.fragments[index].kind not in ("table", "join"):
            return
        types = self._types.get(fid, {})
        for a in aggs:
            # AVG becomes SUM / COUNT: numbers only (a SUM of dates would fail)
            if (
                isinstance(a, exp.Avg)
                and not isinstance(a.this, exp.Distinct)
                and not all(_numeric(types.get(c.name)) for c in a.find_all(exp.Column))
            ):
                return
        keys: dict[str, None] = {}
        for col in scope.columns:
            if col.table != alias or not is_within(col, select):
                continue  # another table's, or in a condition already pushed down
            if col.find_ancestor(exp.Select) is not select:
                return  # read by a correlated subquery too
            if not any(is_within(col, a) for a in aggs):
                keys[col.name] = None
        keys.update(distinct)
        if not keys:
            return
        inner = exp.to_identifier(alias, quoted=True)
        projs: list[exp.Expr] = [exp.column(k, table=alias, quoted=True) for k in keys]
        # What the agency computes per group, and what the residual makes of it.
        partials: list[exp.Expr] = []

        def partial(e: exp.Expr) -> exp.Expr:
            partials.append(e)
            return exp.column(f"__fedsql_pa{len(partials) - 1}", table=alias, quoted=True)

        final: list[tuple[exp.AggFunc, exp.Expr | None]] = []
        for a in aggs:
            if isinstance(a.this, exp.Distinct):
                final.append((a, None))  # its column travels as a grouping key
            else:
                final.append((a, split_aggregate(a, partial)))
        for i, e in enumerate(partials):
            projs.append(exp.alias_(e, f"__fedsql_pa{i}", quoted=True))
        wrap = (
            exp.select(*projs)
            .from_(
                exp.Table(
                    this=exp.to_identifier("__fedsql_inner"), alias=exp.TableAlias(this=inner)
                )
            )
            .group_by(*[exp.column(k, table=alias, quoted=True) for k in keys])
        )
        f = self.fragments[index]
        if f.agency in self.scan_only or self._caps(f.agency).lacking(wrap, self.type_of):
            return  # the agency gets the plain fragment; the residual aggregates it all
        self.fragments[index] = replace(f, wrap=wrap.sql(dialect=DIALECT))
        self._outputs[fid] = {k: v for k, v in self._outputs[fid].items() if k in keys}
        self._est[fid] = self._est.get(fid, 0.0) / 3  # grouped rows: fewer than it reads
        for a, new in final:
            if new is not None:
                a.replace(new)

    def _index_of(self, fid: str | None) -> int | None:
        return next((i for i, f in enumerate(self.fragments) if f.id == fid), None)

    def _distinct_fragments(self, scope: Scope, select: exp.Select) -> None:
        """Under ``SELECT DISTINCT``, or in the body of an EXISTS or IN subquery (no
        aggregates, windows or subqueries), a fragment of an inner join may
        drop its duplicate rows at the agency: they could only make duplicate rows,
        which DISTINCT removes and existence does not count (TPC-H Q22's orders)."""
        distinct = select.args.get("distinct")
        in_list = isinstance(select.parent, exp.Subquery) and isinstance(
            select.parent.parent, exp.In
        )
        if distinct is None and not (in_list or isinstance(select.parent, exp.Exists)):
            return
        if distinct is not None and distinct.args.get("on") is not None:
            return
        if select.args.get("group") or (
            in_list and (select.args.get("limit") or select.args.get("offset"))
        ):
            return  # which rows a LIMIT keeps for IN would depend on the duplicates
        if any(n is not select for n in select.find_all(exp.AggFunc, exp.Window, exp.Query)):
            return
        for fid in self._scope_frags.get(id(scope), {}).values():
            index = self._index_of(fid)
            assert index is not None
            f = self.fragments[index]
            if f.kind not in ("table", "join") or f.wrap or f.agency in self.scan_only:
                continue
            inner = exp.to_identifier("__fedsql_d", quoted=True)
            cols = [exp.column(name, table=inner, quoted=True) for name in self._outputs[fid]]
            if not cols:
                continue
            source = exp.Table(
                this=exp.to_identifier("__fedsql_inner"), alias=exp.TableAlias(this=inner)
            )
            wrap = exp.select(*cols).distinct().from_(source)
            self.fragments[index] = replace(f, wrap=wrap.sql(dialect=DIALECT))

    def _find_reducers(self, scope: Scope, select: exp.Select) -> None:
        """Equalities between two fragments' columns: semi-join reduction candidates."""
        conds = _conjuncts(select.args.get("where"))
        for j in select.args.get("joins") or []:
            conds += _conjuncts(j.args.get("on"))
        for c in conds:
            if not (
                isinstance(c, exp.EQ)
                and isinstance(c.left, exp.Column)
                and isinstance(c.right, exp.Column)
            ):
                continue
            a = self._resolve(scope, c.left)
            b = self._resolve(scope, c.right)
            if a is None or b is None or a[0] == b[0]:
                continue
            (fa, ca, local_a), (fb, cb, local_b) = a, b
            if local_a and local_b:  # an inner join here: either side may filter the other
                self._edge(fa, ca, fb, cb, forced=False)
                self._edge(fb, cb, fa, ca, forced=False)
            elif local_a:  # b is an outer query's column: its keys may filter us, not back
                self._edge(fb, cb, fa, ca, forced=True)
            elif local_b:
                self._edge(fa, ca, fb, cb, forced=True)

    def _resolve(self, scope: Scope, col: exp.Column) -> tuple[str, str, bool] | None:
        """(fragment, its output column, whether it is read in ``scope`` itself)."""
        s: Scope | None = scope
        while s is not None:
            frags = self._scope_frags.get(id(s), {})
            if col.table in frags:
                fid = frags[col.table]
                return (fid, col.name, s is scope) if col.name in self._outputs[fid] else None
            if col.table in s.sources or col.table in s.selected_sources:
                return None  # a source that is not a fragment (derived table, CTE)
            s = s.parent
        return None

    def _edge(self, build: str, bcol: str, probe: str, pcol: str, forced: bool) -> None:
        if next(f.kind for f in self.fragments if f.id == probe) not in ("table", "join"):
            return
        r = Reducer(build=build, build_column=bcol, probe_sql=self._outputs[probe][pcol])
        self._edges.append((build, probe, r, forced))

    def with_reducers(self) -> list[Fragment]:
        """Keep the edges worth it (a smaller build side), acyclic by construction."""
        keep: dict[str, list[Reducer]] = {}
        # A small fragment is still worth reducing when its keys go on to reduce a
        # large one (TPC-H Q21: nation -> supplier -> lineitem).
        relays = {b for b, p, _, _ in self._edges if self._est.get(p, 0.0) >= MIN_PROBE_ROWS}
        # Smallest builds first, so a build's own reductions are known before its keys
        # are used: a whole, unfiltered table's keys (all parts, all suppliers) filter
        # nothing and would only cost a wave (TPC-H Q14, Q21 before its nation filter).
        for build, probe, r, forced in sorted(self._edges, key=lambda e: self._est.get(e[0], 0)):
            eb, ep = self._est.get(build, 0.0), self._est.get(probe, 0.0)
            if ep < MIN_PROBE_ROWS and probe not in relays:
                continue
            if not forced and (eb, build) >= (ep, probe):
                continue
            if not forced and build in self._whole and not keep.get(build):
                continue
            if r not in keep.setdefault(probe, []):
                keep[probe].append(r)
        filters: dict[str, list[ScalarFilter]] = {}
        for fid, template, subs in self._scalars:
            found = [_scalar_fragment(sub) for sub in subs]
            builds = [b for b in found if b is not None]
            if len(builds) != len(found):
                continue  # a subquery that is not one agency's fragment
            cond = template.copy()
            for col in list(cond.find_all(exp.Column)):
                if col.name.startswith("__fedsql_scalar_"):
                    build = builds[int(col.name.removeprefix("__fedsql_scalar_"))]
                    col.replace(exp.column(f"__fedsql_scalar_{build}", quoted=True))
            sf = ScalarFilter(cond.sql(dialect=DIALECT), tuple(builds))
            filters.setdefault(fid, []).append(sf)
        return [
            replace(
                f,
                reduce_by=tuple(keep.get(f.id, ())),
                arrow_keys=self._caps(f.agency).has("arrow_key_sets"),
                scalar_filters=tuple(filters.get(f.id, ())),
            )
            for f in self.fragments
        ]

    def _scalar_candidate(
        self, scope: Scope, conj: exp.Expr, aliases: frozenset[str], agency: str
    ) -> tuple[exp.Expr, list[exp.Subquery]] | None:
        """A conjunct over these tables and uncorrelated scalar subqueries that each
        run whole at one agency: (it with subquery i as column __fedsql_scalar_i,
        the subqueries)."""
        subs = _top_subqueries(conj)
        if not subs:
            return None
        for q in subs:
            up = q.parent
            while up is not None and up is not conj.parent:
                if isinstance(up, (exp.In, exp.Exists, exp.Any, exp.All, exp.AggFunc)):
                    return None
                up = up.parent
            sub_scope = next((s for s in scope.subquery_scopes if s.expression is q.this), None)
            if sub_scope is None or self._pushable_to(sub_scope) is None:
                return None
        template = conj.copy()
        for i, q in enumerate(_top_subqueries(template)):
            q.replace(exp.column(f"__fedsql_scalar_{i}", quoted=True))
        cols = [
            c for c in template.find_all(exp.Column) if not c.name.startswith("__fedsql_scalar_")
        ]
        if not cols or any(c.table not in aliases for c in cols):
            return None
        if template.find(*NOT_PUSHABLE) is not None or not self._runnable(template, agency):
            return None
        _rename_to_remote(template)
        return template, subs

    def _push_group(
        self,
        scope: Scope,
        select: exp.Select,
        group: list[tuple[str, exp.Table, TableRef]],
        where: list[exp.Expr],
        inner_only: bool,
    ) -> None:
        aliases = frozenset(a for a, _, _ in group)
        agency = group[0][2].agency
        preds: list[exp.Expr] = []
        absorbed: list[tuple[exp.Expr, list[Scope]]] = []
        scalars: list[tuple[exp.Expr, list[exp.Subquery]]] = []
        coord = coordinator_policy(group[0][1]) if len(group) == 1 else None
        if coord is not None:
            inner_only = False  # no subquery absorption under the federation's view
        if inner_only:
            for j in select.args.get("joins") or []:
                preds += [c for c in _conjuncts(j.args.get("on")) if reads_only(c, aliases)]
            for c in where:
                if reads_only(c, aliases):
                    preds.append(c)
                elif (subs := self._absorbable(scope, select, c, aliases, agency)) is not None:
                    preds.append(c)
                    absorbed.append((c, subs))
                elif (scalar := self._scalar_candidate(scope, c, aliases, agency)) is not None:
                    scalars.append(scalar)
        else:
            ((alias, node, _),) = group
            if alias not in null_supplying(select):
                preds += [c for c in where if reads_only(c, aliases)]
            join = node.parent if isinstance(node.parent, exp.Join) else None
            if join is not None and join.args.get("on") is not None:
                side = (join.side or "").upper()
                if side in ("", "LEFT") and (join.kind or "").upper() not in ("SEMI", "ANTI"):
                    preds += [c for c in _conjuncts(join.args["on"]) if reads_only(c, aliases)]
        preds = [p for p in preds if self._runnable(p, agency)]
        absorbed = [(c, subs) for c, subs in absorbed if any(p is c for p in preds)]
        if coord is not None:
            # Predicates must see masked values: only those on unmasked columns go
            # down (below the federation's row filter, which commutes with them).
            preds = [
                p
                for p in preds
                if not any(c.name.lower() in coord.masks for c in p.find_all(exp.Column))
            ]

        # Conditions an OR implies about these tables alone (TPC-H Q7, Q19) filter
        # the fragment too; the OR itself stays in the residual.
        implied: list[exp.Expr] = []
        if inner_only or coord is not None:
            for c in where:
                if reads_only(c, aliases) or not isinstance(_unparen(c), exp.Or):
                    continue
                imp = implied_by_or(_unparen(c), set(aliases))
                if imp is None or not self._runnable(imp, agency):
                    continue
                if coord is not None and any(
                    col.name.lower() in coord.masks for col in imp.find_all(exp.Column)
                ):
                    continue
                implied.append(imp)
        fid = self._new_id()
        single = len(group) == 1
        residual_alias = group[0][0] if single else f"__fedsql_g{fid[len(FRAGMENT_PREFIX) :]}"
        computed: list[tuple[str, exp.Expr]] = []  # (output name, expression) computed there
        if inner_only and coord is None and self._caps(agency).has("exact_expressions"):
            computed = self._compute_at_agency(scope, select, aliases, preds, agency)
            for name, e in computed:
                for occ in _occurrences(select, e):
                    if not any(is_within(occ, p) for p in preds):
                        occ.replace(exp.column(name, table=residual_alias, quoted=True))
            if computed:
                scope.clear_cache()  # its columns now include the computed ones

        # Pushed conjuncts are done exactly at the agency: the residual drops them,
        # so columns that only they read need not travel.
        wanted: dict[str, dict[str, None]] = {a: {} for a in aliases}
        for col in scope.columns:
            if col.table in wanted and not any(is_within(col, p) for p in preds):
                wanted[col.table][col.name] = None
        if coord is not None:
            for f in coord.filters:  # the federation's row filters read these too
                for c in sqlglot.parse_one(f.sql, read=DIALECT).find_all(exp.Column):
                    wanted[group[0][0]][c.name] = None
            lowered = {k.lower(): None for k in wanted[group[0][0]]}
            wanted[group[0][0]] = {
                f.name: None for f in group[0][2].arrow_schema if f.name.lower() in lowered
            }
        projs: list[exp.Expr] = []
        for alias, _, ref in group:
            for f in ref.arrow_schema:
                if f.name in wanted[alias]:
                    col = exp.column(f.name, table=alias, quoted=True)
                    projs.append(
                        col if single else exp.alias_(col, f"{alias}.{f.name}", quoted=True)
                    )
        for name, e in computed:
            remote = e.copy()
            _rename_to_remote(remote)
            projs.append(exp.alias_(remote, name, quoted=True))
        if not projs:
            projs = [exp.alias_(exp.Literal.number(1), "__fedsql_row", quoted=True)]
        remotes = [node.copy() for _, node, _ in group]
        for r, (_, _, ref) in zip(remotes, group, strict=True):
            _to_remote(r, ref)
        frag = exp.select(*projs).from_(remotes[0])
        for r in remotes[1:]:
            frag = frag.join(r)
        if preds or implied:
            copies = [p.copy() for p in preds] + implied
            for c in copies:
                _rename_to_remote(c)
            frag = frag.where(exp.and_(*copies, copy=False), copy=False)
        names = [ref.qualified for _, _, ref in group]
        for _, subs in absorbed:
            for sub in subs:
                for s in sub.traverse():
                    names += [ref.qualified for _, _, ref in self._tables(s)]
        row_est = max(ref.row_count_estimate for _, _, ref in group)
        self.fragments.append(
            Fragment(
                id=fid,
                agency=agency,
                sql=frag.sql(dialect=DIALECT, copy=False),
                kind="table" if single and not absorbed else "join",
                tables=tuple(dict.fromkeys(names)),
                row_estimate=row_est,
            )
        )
        # A crude estimate of what it returns: each pushed filter (a condition on one
        # table; joins inside the group are taken as key joins) keeps a third.
        filters = sum(
            1 for p in preds + implied if len({c.table for c in p.find_all(exp.Column)}) == 1
        )
        self._est[fid] = max(row_est, 0) * (1 / 3) ** min(filters + len(scalars), 3)
        self._scalars += [(fid, template, subs) for template, subs in scalars]
        if single and not absorbed and not preds and not implied:
            self._whole.add(fid)
        if coord is None:  # a federation view changes values: no keys from/into it
            self._scope_frags.setdefault(id(scope), {})[residual_alias] = fid
            self._types[fid] = {
                (f.name if single else f"{a}.{f.name}"): f.type
                for a, _, ref in group
                for f in ref.arrow_schema
                if f.name in wanted[a]
            }
            self._outputs[fid] = {
                (f.name if single else f"{a}.{f.name}"): exp.column(
                    f.name, table=a, quoted=True
                ).sql(DIALECT)
                for a, _, ref in group
                for f in ref.arrow_schema
                if f.name in wanted[a]
            }
            for name, e in computed:
                remote = e.copy()
                _rename_to_remote(remote)
                self._outputs[fid][name] = remote.sql(DIALECT)

        # The residual: pushed conjuncts are done at the agency ...
        for conj in preds:
            conj.replace(exp.true())
        for _, subs in absorbed:
            self._consumed.update(id(s) for sub in subs for s in sub.traverse())
        if single:
            ((alias, node, ref),) = group
            scan = exp.Table(this=exp.to_identifier(fid))
            shipped = pa.schema([f for f in ref.arrow_schema if f.name in wanted[alias]])
            view = view_for(coord, fid, shipped, source=scan) if coord and len(shipped) else None
            talias = exp.TableAlias(this=exp.to_identifier(alias, quoted=True))
            if view is not None:  # the federation's own masks, at the coordinator
                node.replace(exp.Subquery(this=view, alias=talias))
            else:
                scan.set("alias", talias)
                node.replace(scan)
            return
        # ... and the group's tables become one scan, its columns renamed.
        galias = f"__fedsql_g{fid[len(FRAGMENT_PREFIX) :]}"
        for col in scope.columns:
            if col.table in aliases:
                col.set("this", exp.to_identifier(f"{col.table}.{col.name}", quoted=True))
                col.set("table", exp.to_identifier(galias, quoted=True))
        first, *rest = group
        first[1].replace(
            exp.Table(
                this=exp.to_identifier(fid),
                alias=exp.TableAlias(this=exp.to_identifier(galias, quoted=True)),
            )
        )
        moved: list[exp.Expr] = []
        for _, node, _ in rest:
            parent = node.parent
            assert isinstance(parent, exp.Join)
            if parent.args.get("on") is not None:
                moved.append(parent.args["on"])
            parent.pop()
        if moved:
            old = select.args.get("where")
            conds = ([old.this] if old is not None else []) + moved
            select.set("where", exp.Where(this=exp.and_(*conds)))

    def _compute_at_agency(
        self,
        scope: Scope,
        select: exp.Select,
        aliases: frozenset[str],
        preds: list[exp.Expr],
        agency: str,
    ) -> list[tuple[str, exp.Expr]]:
        """Expressions of this SELECT over these tables alone that the agency can
        compute instead of sending their columns (TPC-H Q14's ``p_type LIKE
        'PROMO%'``: a boolean instead of a string; Q9's ``l_extendedprice * (1 -
        l_discount)``: one decimal instead of two). Each is the largest such
        expression around a column, of kinds that evaluate the same everywhere
        and raise no errors (:data:`COMPUTABLE`), and is kept only if one of its
        columns then need not travel at all."""
        found: dict[str, exp.Expr] = {}
        for col in scope.columns:
            if col.table not in aliases or col.find_ancestor(exp.Select) is not select:
                continue
            if any(is_within(col, p) for p in preds):
                continue
            node: exp.Expr = col
            while (up := node.parent) is not None and _computable(up, aliases):
                node = up
            while isinstance(node, exp.Paren):
                node = node.this
            if node is not col and self._runnable(node, agency):
                found.setdefault(node.sql(dialect=DIALECT), node)
        # Keep those that free a column; dropping one can make another pointless.
        chosen = dict(found)
        places = {k: _occurrences(select, e) for k, e in chosen.items()}
        mine = [
            c
            for c in scope.columns
            if c.table in aliases
            and is_within(c, self.tree)
            and not any(is_within(c, p) for p in preds)
        ]
        while True:
            elsewhere = {
                (c.table, c.name)
                for c in mine
                if not any(is_within(c, n) for k in chosen for n in places[k])
            }
            drop = [
                k
                for k, e in chosen.items()
                if all((c.table, c.name) in elsewhere for c in e.find_all(exp.Column))
            ]
            if not drop:
                break
            for k in drop:
                del chosen[k]
        return [(f"__fedsql_e{i}", e.copy()) for i, e in enumerate(chosen.values())]

    def _absorbable(
        self,
        scope: Scope,
        select: exp.Select,
        conj: exp.Expr,
        aliases: frozenset[str],
        agency: str,
    ) -> list[Scope] | None:
        """Subquery scopes of ``conj`` if the whole conjunct can run with the group."""
        subs = [s for s in scope.subquery_scopes if is_within(s.expression, conj)]
        if not subs:
            return None
        for col in conj.find_all(exp.Column):
            if col.find_ancestor(exp.Select) is select and col.table not in aliases:
                return None
        for sub in subs:
            if self._pushable_to(sub, scope, aliases) != agency:
                return None
        return subs


def _top_subqueries(node: exp.Expr) -> list[exp.Subquery]:
    """The subqueries in ``node`` that are not inside another of its subqueries."""
    out = []
    for q in node.find_all(exp.Subquery):
        up = q.parent
        while up is not None and up is not node and not isinstance(up, exp.Subquery):
            up = up.parent
        if up is None or up is node:
            out.append(q)
    return out


def _scalar_fragment(sub: exp.Subquery) -> str | None:
    """The fragment a (cut) scalar subquery reads whole: ``(SELECT * FROM __fedsql_fN)``."""
    inner = sub.this
    if not isinstance(inner, exp.Select) or len(inner.expressions) != 1:
        return None
    if not isinstance(inner.expressions[0], exp.Star) or inner.args.get("where"):
        return None
    if inner.args.get("joins") or inner.args.get("group") or inner.args.get("limit"):
        return None
    from_ = inner.args.get("from_")
    if from_ is None or not isinstance(from_.this, exp.Table):
        return None
    name = from_.this.name
    return name if name.startswith(FRAGMENT_PREFIX) else None


# Expression kinds an agency's DuckDB computes exactly as the coordinator's would,
# without raising errors on rows the coordinator's joins would have dropped.
COMPUTABLE = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Var,
    exp.Paren,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Neg,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Like,
    exp.ILike,
    exp.And,
    exp.Or,
    exp.Not,
    exp.Is,
    exp.Between,
    exp.In,
    exp.Case,
    exp.If,
    exp.Coalesce,
    exp.Extract,
    exp.Substring,
)


def _occurrences(select: exp.Select, e: exp.Expr) -> list[exp.Expr]:
    """Where ``e`` occurs in ``select`` itself (not in its subqueries)."""
    return [n for n in select.find_all(type(e)) if n == e and n.find_ancestor(exp.Select) is select]


def _computable(node: exp.Expr, aliases: frozenset[str]) -> bool:
    """Can ``node`` (an expression around a column) be computed at the agency whose
    tables are ``aliases``?"""
    if not isinstance(node, COMPUTABLE) or isinstance(node, (exp.Column, exp.Identifier)):
        return False
    if isinstance(node, exp.In) and (node.args.get("query") or node.args.get("unnest")):
        return False
    for n in node.walk():
        if not isinstance(n, COMPUTABLE):
            return False
        if isinstance(n, exp.Column) and n.table not in aliases:
            return False
    return True


def _numeric(t: pa.DataType | None) -> bool:
    return t is not None and (
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    )


def _home_scope(scope: Scope, col: exp.Column) -> Scope | None:
    """The scope whose FROM defines the source that ``col`` (external to ``scope``) reads."""
    s = scope.parent
    while s is not None:
        if col.table in s.selected_sources or col.table in s.sources:
            return s
        s = s.parent
    return None


def _lone_left_join(select: exp.Select) -> str | None:
    """The right table's alias when the SELECT is ``FROM a LEFT JOIN b ON ...`` alone."""
    joins = select.args.get("joins") or []
    if len(joins) != 1:
        return None
    j = joins[0]
    if (j.side or "").upper() != "LEFT" or (j.kind or "").upper() not in ("", "OUTER"):
        return None
    if j.args.get("using") or not isinstance(j.this, exp.Table):
        return None
    return str(j.this.alias_or_name)


def _inner_joins_only(select: exp.Select) -> bool:
    for j in select.args.get("joins") or []:
        if (j.side or "") or (j.kind or "").upper() not in ("", "INNER", "CROSS"):
            return False
        if j.args.get("using") or j.method or not isinstance(j.this, (exp.Table, exp.Subquery)):
            return False
    from_ = select.args.get("from_")
    return from_ is None or isinstance(from_.this, (exp.Table, exp.Subquery))


def _colocated_groups(
    tables: list[tuple[str, exp.Table, TableRef]],
    conjuncts: list[exp.Expr],
    scan_only: frozenset[str] = frozenset(),
) -> list[list[tuple[str, exp.Table, TableRef]]]:
    """Tables of one agency connected by join predicates, in order of appearance."""
    parent = {a: a for a, _, _ in tables}
    # A table under the federation's own policy is read alone (its view is applied
    # at the coordinator), so it gets an agency of its own here.
    agency = {
        a: ref.agency
        if coordinator_policy(node) is None and ref.agency not in scan_only
        else f"\0{a}"
        for a, node, ref in tables
    }

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for c in conjuncts:
        if c.find(*NOT_PUSHABLE) is not None:
            continue
        used = {col.table for col in c.find_all(exp.Column)}
        if len(used) == 2 and used <= set(parent):
            x, y = sorted(used)
            if agency[x] == agency[y]:
                parent[find(x)] = find(y)
    groups: dict[str, list[tuple[str, exp.Table, TableRef]]] = {}
    for t in tables:
        groups.setdefault(find(t[0]), []).append(t)
    return list(groups.values())


def _column_types(tree: exp.Expr) -> TypeOf:
    """A column's Arrow type when its table alias is a federated table (for the
    capabilities that depend on types: ordering text)."""
    schemas = {
        t.alias_or_name.lower(): ref.arrow_schema
        for t in tree.find_all(exp.Table)
        if (ref := table_ref(t)) is not None
    }

    def type_of(col: exp.Column) -> pa.DataType | None:
        schema = schemas.get(col.table.lower())
        if schema is None:
            return None
        name = col.name.lower()
        return next((f.type for f in schema if f.name.lower() == name), None)

    return type_of


def _drop_true(tree: exp.Expr) -> exp.Expr:
    """Remove the TRUE left where pushed conjuncts were: ``x AND TRUE`` → ``x``."""
    true = exp.true()
    changed = True
    while changed:
        changed = False
        for node in list(tree.find_all(exp.And)):
            if node.left == true or node.right == true:
                node.replace(node.right if node.left == true else node.left)
                changed = True
                break
    for where in list(tree.find_all(exp.Where)):
        if where.this == true:
            where.pop()
    return tree


def _rename_to_remote(tree: exp.Expr) -> None:
    for t in tree.find_all(exp.Table):
        ref = table_ref(t)
        if ref is not None:
            _to_remote(t, ref)


def _to_remote(table: exp.Table, ref: TableRef) -> None:
    """Name a table as its connector exposes it (no agency; schema only if not default)."""
    table.set("catalog", None)
    table.set("db", exp.to_identifier(ref.schema, quoted=True) if ref.schema else None)
    table.set("this", exp.to_identifier(ref.name, quoted=True))


def _conjuncts(node: exp.Expr | None) -> list[exp.Expr]:
    if node is None:
        return []
    return flatten(node.this if isinstance(node, exp.Where) else node, exp.And)


def _unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node
