"""Which agency can run a piece of the query whole, and which conditions it can
evaluate exactly: the capability test every rule of the cut asks.

A scope (query, derived table, CTE, subquery, UNION branch) goes whole to an
agency when all its tables live there, it reads nothing outside itself (no
correlation beyond a co-located group, no outer CTE), no table in it carries
the federation's own policy, and the agency declares every capability it needs.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from fedsql.planner.resolve import coordinator_policy, table_ref
from fedsql.planner.state import CutState, caps_of, home_scope, tables_of


def pushable_to(
    st: CutState,
    scope: Scope,
    outer: Scope | None = None,
    outer_aliases: frozenset[str] = frozenset(),
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
        for _, _, ref in tables_of(s):
            agencies.add(ref.agency)
        for t in s.tables:
            if table_ref(t) is None and not isinstance(s.sources.get(t.alias_or_name), Scope):
                return None
            if coordinator_policy(t) is not None:
                return None  # the federation's own view is applied at the coordinator
        if s.is_udtf:
            return None
        for col in s.external_columns:
            home = home_scope(s, col)
            if home is None:
                return None
            if id(home) in inside_ids:
                continue
            if outer is None or home is not outer or col.table not in outer_aliases:
                return None
    if len(agencies) != 1:
        return None
    agency = agencies.pop()
    if agency in st.scan_only:
        return None
    caps = caps_of(st, agency)
    if caps.lacking(scope.expression, st.type_of) is not None:
        return None
    if not caps.has("correlated_subqueries") and (
        outer is not None or any(s.external_columns for s in inside if s is not scope)
    ):
        return None
    return agency


def runnable(st: CutState, pred: exp.Expr, agency: str) -> bool:
    """Can ``agency``'s backend evaluate this predicate exactly?"""
    if agency in st.scan_only:
        return False
    return caps_of(st, agency).lacking(pred, st.type_of) is None
