"""A fragment another fragment already answers, derived at the coordinator.

TPC-H Q11: its subquery's total per nation is the sum of the outer query's
per-part sums, both eager aggregations of one partsupp join at industry; the
coarser one is computed from the finer at the coordinator instead of being run
again. (A fragment repeated exactly is fetched once by the executor.)
"""

from __future__ import annotations

from sqlglot import exp

from fedsql.lang import DIALECT
from fedsql.planner.model import RemoteQuery


def derive_coarser(fragments: list[RemoteQuery], tree: exp.Expr) -> list[RemoteQuery]:
    """A fragment that is another's join pre-aggregated on fewer keys is computed
    from that one at the coordinator instead of being run again (TPC-H Q11: its
    subquery's total per nation is the sum of the outer query's per-part sums).

    Exact: grouping is associative for the partial SUM, MIN, MAX and COUNT that
    eager aggregation sends (a COUNT adds up as a SUM).
    """
    wrapped = [f.agency for f in fragments if f.wrap is not None]
    if len(wrapped) == len(set(wrapped)):
        return fragments  # no agency has two pre-aggregated fragments
    used = {b for f in fragments for b in f.depends_on}
    by_id = {f.id: f for f in fragments}
    canon: dict[str, object] = {}

    def same_input(f: RemoteQuery) -> object:
        """What decides a fragment's rows (not its columns): equal for two fragments
        that read the same rows, their reducers' builds compared the same way."""
        if f.id not in canon:
            tree = f.query.copy()
            tree.set("expressions", [exp.Star()])
            canon[f.id] = (
                f.agency,
                tree.sql(dialect=DIALECT),
                tuple((key(k.build), k.build_column, k.probe_sql) for k in f.keys),
                tuple((s.sql, tuple(key(b) for b in s.builds)) for s in f.scalars),
            )
        return canon[f.id]

    def key(fid: str) -> object:
        f = by_id[fid]
        return (same_input(f), f.sql, f.wrap_sql)

    shapes = {
        f.id: shape for f in fragments if f.wrap is not None and (shape := wrap_shape(f.wrap))
    }
    derived: dict[str, exp.Expr] = {}
    sources: set[str] = set()  # fragments others are derived from: they stay fetched
    for b in fragments:
        fine = shapes.get(b.id)
        if fine is None or b.id in used or b.id in sources:
            continue
        b_keys, b_aggs = fine
        for a in fragments:
            if a.id == b.id or a.id in derived or a.id not in shapes:
                continue
            if a.agency != b.agency or same_input(a) != same_input(b):
                continue
            if not projections(b.query).items() <= projections(a.query).items():
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
            sources.add(a.id)
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


def projections(tree: exp.Query) -> dict[str, str]:
    """A fragment's outputs: {name: the expression's SQL}."""
    return {e.alias_or_name: e.unalias().sql(dialect=DIALECT) for e in tree.expressions}


def wrap_shape(q: exp.Select) -> tuple[list[str], dict[str, str]] | None:
    """(grouping key names, {partial name: its aggregate, tables unnamed}) of an
    eager-aggregation wrap; None for other wraps."""
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
