"""Aggregate a fragment at its agency before the cross-agency join (eager aggregation).

Applies to a SELECT whose aggregates are all SUM/MIN/MAX/COUNT/AVG over one
fragment's columns, when the rest of the query reads only columns it can group
by. Each pre-aggregated row stands for rows that join and group identically, so
SUM of partial SUMs, MIN of MINs, MAX of MAXes and SUM of COUNTs give the same
answer (Yan & Larson, VLDB 1995); AVG travels as SUM and COUNT.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from fedsql import names
from fedsql.planner import cost
from fedsql.planner.rules import is_within, split_aggregate
from fedsql.planner.state import CutState, caps_of, index_of, numeric


def eager_aggregate(
    st: CutState, scope: Scope, select: exp.Select, null_side: str | None = None
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
    frags = st.scope_frags.get(id(scope), {})
    owners = set()
    distinct: dict[str, None] = {}  # columns of AGG(DISTINCT col): kept as keys
    for a in aggs:
        if not isinstance(a, (exp.Sum, exp.Min, exp.Max, exp.Count, exp.Avg)):
            return
        if any(n is not a for n in _whole(a).find_all(exp.AggFunc, exp.Subquery)):
            return
        if isinstance(a.this, exp.Distinct):
            if isinstance(a.parent, exp.Filter):
                return  # its FILTER stays in the residual, over the aggregated rows
            (col,) = a.this.expressions if len(a.this.expressions) == 1 else (None,)
            if not isinstance(col, exp.Column):
                return
            distinct[col.name] = None
        cols = {c.table for c in _whole(a).find_all(exp.Column)}
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
    index = index_of(st, fid)
    if fid is None or index is None or st.fragments[index].kind not in ("table", "join"):
        return
    types = st.types.get(fid, {})
    for a in aggs:
        # AVG becomes SUM / COUNT: numbers only (a SUM of dates would fail)
        if (
            isinstance(a, exp.Avg)
            and not isinstance(a.this, exp.Distinct)
            and not all(numeric(types.get(c.name)) for c in a.find_all(exp.Column))
        ):
            return
    keys: dict[str, None] = {}
    for col in scope.columns:
        if col.table != alias or not is_within(col, select):
            continue  # another table's, or in a condition already pushed down
        if col.find_ancestor(exp.Select) is not select:
            return  # read by a correlated subquery too
        if not any(is_within(col, _whole(a)) for a in aggs):
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
        return exp.column(f"{names.PARTIAL}{len(partials) - 1}", table=alias, quoted=True)

    final: list[tuple[exp.Expr, exp.Expr | None]] = []
    for a in aggs:
        if isinstance(a.this, exp.Distinct):
            final.append((a, None))  # its column travels as a grouping key
        else:
            where = a.parent.expression if isinstance(a.parent, exp.Filter) else None
            final.append((_whole(a), split_aggregate(a, partial, where)))
    for i, e in enumerate(partials):
        projs.append(exp.alias_(e, f"{names.PARTIAL}{i}", quoted=True))
    wrap = (
        exp.select(*projs)
        .from_(exp.Table(this=exp.to_identifier(names.INNER), alias=exp.TableAlias(this=inner)))
        .group_by(*[exp.column(k, table=alias, quoted=True) for k in keys])
    )
    f = st.fragments[index]
    if f.agency in st.scan_only or caps_of(st, f.agency).lacking(wrap, st.type_of):
        return  # the agency gets the plain fragment; the residual aggregates it all
    st.fragments[index] = replace(f, wrap=wrap)
    st.outputs[fid] = {k: v for k, v in st.outputs[fid].items() if k in keys}
    st.est[fid] = cost.grouped(st.est.get(fid, 0.0))
    for node, new in final:
        if new is not None:
            node.replace(new)


def _whole(agg: exp.AggFunc) -> exp.Expr:
    """The aggregate with its FILTER (WHERE ...), if it has one: the FILTER's
    columns are the aggregate's input too, computed by the part that aggregates."""
    return agg.parent if isinstance(agg.parent, exp.Filter) else agg
