"""Cut a resolved query into fragments (one connector each) and a residual.

The cut, top-down over sqlglot scopes:

1. A scope (query, derived table, CTE, subquery, UNION branch) that one agency
   can run whole (``agency.pushable_to``) goes there whole: joins, aggregates,
   subqueries, ORDER BY … LIMIT included.
2. Otherwise each base table left in it becomes part of a fragment
   (``push_group``), and the rules of :data:`SELECT_RULES` look at the SELECT
   whose tables just became fragments (each in its own module); then its
   children are cut the same way.

The residual is the original query with each pushed piece replaced by a scan
of its fragment's result; it runs in the coordinator's DuckDB. Pushdown is
exact or not done.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from fedsql.planner.agency import pushable_to, runnable
from fedsql.planner.distinct_at_source import distinct_at_source
from fedsql.planner.eager_aggregate import eager_aggregate
from fedsql.planner.model import RemoteQuery
from fedsql.planner.push_group import colocated_groups, push_group
from fedsql.planner.semi_join import find_semi_joins
from fedsql.planner.state import (
    CutState,
    conjuncts,
    inner_joins_only,
    lone_left_join,
    new_id,
    rename_to_remote,
    tables_of,
)

# Rules for a SELECT of inner joins right after its tables became fragments, in
# order: each may wrap a fragment (aggregated or distinct at its agency) or note
# semi-join candidates.
SELECT_RULES: tuple[Callable[[CutState, Scope, exp.Select], None], ...] = (
    eager_aggregate,
    distinct_at_source,
    find_semi_joins,
)


def cut_scope(st: CutState, scope: Scope) -> None:
    """Cut ``scope`` and, unless it goes whole to one agency, its children."""
    if id(scope) in st.consumed:
        return
    agency = pushable_to(st, scope)
    if agency is not None:
        push_subtree(st, scope, agency)
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
    push_tables(st, scope)
    for child in children:
        cut_scope(st, child)


def push_subtree(st: CutState, scope: Scope, agency: str) -> None:
    """The whole scope runs at ``agency``; the residual reads its result."""
    node = scope.expression
    tables = []
    row_est = -1
    frag_tree = node.copy()
    for s in scope.traverse():
        for _, _, ref in tables_of(s):
            tables.append(ref.qualified)
            row_est = max(row_est, ref.row_count_estimate)
    rename_to_remote(frag_tree)
    if (
        isinstance(frag_tree, exp.Select)
        and isinstance(node.parent, exp.Subquery)
        and isinstance(node.parent.parent, exp.In)
        and not any(frag_tree.args.get(k) for k in ("limit", "offset", "distinct", "order"))
    ):
        frag_tree.set("distinct", exp.Distinct())  # IN reads a set: duplicates stay home
    fid = new_id(st)
    is_root = scope.parent is None and node is st.tree
    st.fragments.append(
        RemoteQuery(
            id=fid,
            agency=agency,
            query=frag_tree,  # type: ignore[arg-type]  # a scope's expression: a query
            kind="query" if is_root else "subtree",
            tables=tuple(dict.fromkeys(tables)),
            row_estimate=row_est,
        )
    )
    if is_root:
        st.whole_query = True
        return
    node.replace(exp.select("*").from_(exp.to_table(fid)))


def push_tables(st: CutState, scope: Scope) -> None:
    """Fragments for the base tables of one SELECT: co-located groups or single tables."""
    if not isinstance(scope.expression, exp.Select):
        return
    select = scope.expression
    tables = tables_of(scope)
    if not tables:
        return
    where = conjuncts(select.args.get("where"))
    inner_only = inner_joins_only(select)
    if inner_only:
        join_preds = where + [
            c for j in select.args.get("joins") or [] for c in conjuncts(j.args.get("on"))
        ]
        groups = colocated_groups(
            tables,
            [c for c in join_preds if all(runnable(st, c, ref.agency) for _, _, ref in tables)],
            st.scan_only,
        )
    else:
        groups = [[t] for t in tables]
    for group in groups:
        # Read the WHERE afresh: pushing a group may rebuild it (a join's ON moves
        # there), and a conjunct of the old one would be replaced in a copy only.
        push_group(st, scope, select, group, conjuncts(select.args.get("where")), inner_only)
    if inner_only:
        for rule in SELECT_RULES:
            rule(st, scope, select)
    elif (right := lone_left_join(select)) is not None:
        eager_aggregate(st, scope, select, null_side=right)  # TPC-H Q13
