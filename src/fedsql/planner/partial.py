"""Partial aggregation below a UNION ALL of agencies.

``SELECT k, SUM(v), AVG(v) FROM (a UNION ALL b) t GROUP BY k`` — the same kind
of table held by several agencies — becomes

    SELECT k, SUM(p0), CAST(SUM(p1) AS DOUBLE) / NULLIF(SUM(p2), 0)
    FROM (SELECT k, SUM(v) AS p0, SUM(v) AS p1, COUNT(v) AS p2 FROM (a) t GROUP BY k
          UNION ALL
          SELECT k, SUM(v), SUM(v), COUNT(v) FROM (b) t GROUP BY k) t
    GROUP BY k

so each agency returns one row per group instead of its rows. Exact: grouping
is associative for SUM, COUNT, MIN and MAX (a COUNT is the SUM of partial
counts, 0 when there are none; AVG is SUM over COUNT), and an aggregate over
DISTINCT values keeps its column among the branch's grouping keys, so every
distinct value still reaches the coordinator. The outer WHERE moves into the
branches (it filters rows before they are grouped).
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from sqlglot import exp

from fedsql.planner.resolve import table_ref
from fedsql.planner.rules import NOT_PUSHABLE, is_within, split_aggregate

_DECOMPOSABLE = (exp.Sum, exp.Count, exp.Min, exp.Max, exp.Avg)


def push_partial_aggregates(tree: exp.Expr, agency_of: Callable[[exp.Table], str | None]) -> None:
    """Rewrite, in place, every aggregate over a UNION ALL whose branches read
    more than one agency (a qualified tree: every column names its table)."""
    for select in list(tree.find_all(exp.Select)):
        _rewrite(select, agency_of)


def _same_types(branches: list[exp.Select], positions: set[int]) -> bool:
    """Do the branches give each of these output positions the same known type?

    The union unifies its branches' types before the original aggregates run
    (a MIN over integers and strings compares strings); aggregated apart, each
    branch would use its own. Only plain columns of tables, of equal types, qualify.
    """
    seen: dict[int, pa.DataType] = {}
    for b in branches:
        tables = {t.alias_or_name: t for t in b.find_all(exp.Table) if t.parent_select is b}
        for i in positions:
            e = b.expressions[i]
            col = e.this if isinstance(e, exp.Alias) else e
            if not isinstance(col, exp.Column) or col.table not in tables:
                return False
            ref = table_ref(tables[col.table])
            if ref is None or ref.arrow_schema.get_field_index(col.name) < 0:
                return False
            t = ref.arrow_schema.field(col.name).type
            if not seen.setdefault(i, t).equals(t):
                return False
    return True


def _branches(node: exp.Expr) -> list[exp.Select] | None:
    """The SELECTs of a UNION ALL chain; None if any part is not one."""
    if isinstance(node, exp.Select):
        return [node]
    if not isinstance(node, exp.Union) or node.args.get("distinct"):
        return None
    if any(node.args.get(k) for k in ("order", "limit", "offset", "by_name", "side", "kind")):
        return None
    left, right = _branches(node.left), _branches(node.right)
    if left is None or right is None:
        return None
    return left + right


def _rewrite(select: exp.Select, agency_of: Callable[[exp.Table], str | None]) -> None:
    from_ = select.args.get("from_")
    if from_ is None or select.args.get("joins") or not isinstance(from_.this, exp.Subquery):
        return
    sub = from_.this
    branches = _branches(sub.this)
    alias = sub.alias
    if not branches or len(branches) < 2 or not alias or sub.args["alias"].columns:
        return
    agencies = {agency_of(t) for b in branches for t in b.find_all(exp.Table)}
    if len(agencies - {None}) < 2:
        return  # one agency runs the whole union anyway
    names = sub.this.named_selects
    for b in branches:
        if len(b.expressions) != len(names) or any(
            b.args.get(k) for k in ("order", "limit", "offset", "distinct")
        ):
            return
    group = select.args.get("group")
    keys: list[str] = []
    if group is not None:
        if any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets", "all", "totals")):
            return
        for g in group.expressions:
            if not (isinstance(g, exp.Column) and g.table == alias and g.name in names):
                return
            keys.append(g.name)
    if select.args.get("qualify") or select.find(exp.Window) is not None:
        return
    if any(q is not select and not is_within(q, sub) for q in select.find_all(exp.Query)):
        return  # a subquery in the SELECT list, WHERE or HAVING
    where = select.args.get("where")
    aggs = [a for a in select.find_all(exp.AggFunc) if a.find_ancestor(exp.Select) is select]
    if not aggs or any(isinstance(a.parent, exp.Filter) for a in aggs):
        return

    partials: dict[str, exp.Expr] = {}  # what each branch computes (once each), in order

    def partial(e: exp.Expr) -> exp.Expr:
        key = e.sql()
        partials.setdefault(key, e)
        i = list(partials).index(key)
        return exp.column(f"__fedsql_pu{i}", table=alias, quoted=True)

    replace: list[tuple[exp.AggFunc, exp.Expr | None]] = []
    for a in aggs:
        if not isinstance(a, _DECOMPOSABLE) or any(n is not a for n in a.find_all(*NOT_PUSHABLE)):
            return
        arg = a.this
        if isinstance(arg, exp.Distinct):
            (col,) = arg.expressions if len(arg.expressions) == 1 else (None,)
            if not (isinstance(col, exp.Column) and col.name in names):
                return
            keys.append(col.name)  # the distinct values travel; the aggregate stays
            replace.append((a, None))
        else:
            replace.append((a, split_aggregate(a, partial)))
    keys = list(dict.fromkeys(keys))
    read = {c.name for a in aggs for c in a.find_all(exp.Column)}
    if not _same_types(branches, {i for i, n in enumerate(names) if n in read}):
        return

    new_branches = []
    for b in branches:
        inner = b.copy()
        for e, name in zip(inner.expressions, names, strict=True):
            body = e.this if isinstance(e, exp.Alias) else e
            e.replace(exp.alias_(body.copy(), name, quoted=True))
        projs: list[exp.Expr] = [exp.column(k, table=alias, quoted=True) for k in keys]
        projs += [
            exp.alias_(p.copy(), f"__fedsql_pu{i}", quoted=True)
            for i, p in enumerate(partials.values())
        ]
        inner_alias = exp.TableAlias(this=exp.to_identifier(alias, quoted=True))
        w = exp.select(*projs).from_(exp.Subquery(this=inner, alias=inner_alias))
        if where is not None:
            w = w.where(where.this.copy(), copy=False)
        if keys:
            w = w.group_by(*[exp.column(k, table=alias, quoted=True) for k in keys], copy=False)
        new_branches.append(w)
    union: exp.Expr = new_branches[0]
    for w in new_branches[1:]:
        union = exp.Union(this=union, expression=w, distinct=False)
    sub.set("this", union)
    if where is not None:
        where.pop()
    for agg, new in replace:
        if new is not None:
            agg.replace(new)
