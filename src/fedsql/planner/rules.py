"""Rules that make a plan cheaper without changing its result.

Each takes an expression and returns one (the same tree, rewritten in place).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from fedsql.lang.predicates import (  # shared with the connector's scans
    NOT_PUSHABLE,
    flatten,
    is_within,
    null_supplying,
    reads_only,
)


def factor_or(tree: exp.Expr) -> exp.Expr:
    """Pull conjuncts common to every branch of an OR out of it:
    ``(a AND b) OR (a AND c)`` → ``a AND (b OR c)`` (boolean distributivity).

    A join condition hidden in every branch (TPC-H Q19) becomes a plain
    conjunct that the planner can use.

    >>> import sqlglot
    >>> q = "SELECT 1 FROM t, u WHERE (t.k = u.k AND t.a = 1) OR (t.k = u.k AND u.b = 2)"
    >>> factor_or(sqlglot.parse_one(q)).sql()
    'SELECT 1 FROM t, u WHERE t.k = u.k AND (t.a = 1 OR u.b = 2)'
    """
    for where in list(tree.find_all(exp.Where)):
        changed = False
        out: list[exp.Expr] = []
        for conj in flatten(where.this, exp.And):
            branches = flatten(conj, exp.Or)
            if len(branches) < 2:
                out.append(conj)
                continue
            parts = [flatten(b, exp.And) for b in branches]
            common = [c for c in parts[0] if all(any(c == d for d in p) for p in parts[1:])]
            if not common:
                out.append(conj)
                continue
            changed = True
            out.extend(c.copy() for c in common)
            rests = [[d for d in p if not any(d == c for c in common)] for p in parts]
            if all(rests):  # an empty branch would make the OR true: then nothing remains
                out.append(
                    exp.paren(exp.or_(*(exp.and_(*r) if len(r) > 1 else r[0] for r in rests)))
                )
        if changed:
            where.set("this", exp.and_(*out))
    return tree


def implied_by_or(pred: exp.Expr, keep: set[str]) -> exp.Expr | None:
    """From ``(a1 AND b1) OR (a2 AND b2)``, the condition on the tables in ``keep``
    alone that the OR implies: ``a1 OR a2`` when a1, a2 read only those tables.

    None when some branch says nothing about them (then nothing is implied).

    >>> import sqlglot
    >>> p = sqlglot.parse_one("(t.a = 1 AND u.b = 2) OR (t.a = 3 AND u.b = 4)")
    >>> implied_by_or(p, {"t"}).sql()
    't.a = 1 OR t.a = 3'
    """
    branches = flatten(pred, exp.Or)
    if len(branches) < 2:
        return None
    picked: list[exp.Expr] = []
    for b in branches:
        mine = [c for c in flatten(b, exp.And) if reads_only(c, keep)]
        if not mine:
            return None
        picked.append(exp.and_(*(c.copy() for c in mine)) if len(mine) > 1 else mine[0].copy())
    return exp.or_(*picked)


# Marks an equality infer_equalities added: redundant wherever the query keeps
# the others, so the residual drops it (extra join edges only confuse DuckDB's
# join ordering over fragment results, which come without statistics).
INFERRED = "fedsql_inferred"


def infer_equalities(tree: exp.Expr) -> exp.Expr:
    """Add the equalities that transitivity implies: ``a = b AND b = c`` → ``+ a = c``.

    Exact (an added conjunct is implied by the others); it lets co-located tables
    that the query only joins through a third table join where they live
    (TPC-H Q9: part and partsupp both join lineitem).

    >>> import sqlglot
    >>> q = "SELECT 1 FROM a, b, c WHERE a.k = b.k AND c.k = b.k"
    >>> infer_equalities(sqlglot.parse_one(q)).sql()
    'SELECT 1 FROM a, b, c WHERE a.k = b.k AND c.k = b.k AND a.k = c.k'
    """
    for select in list(tree.find_all(exp.Select)):
        where = select.args.get("where")
        if where is None:
            continue
        conjuncts = flatten(where.this, exp.And)
        parent: dict[tuple[str, str], tuple[str, str]] = {}
        present: set[frozenset[tuple[str, str]]] = set()
        nodes: dict[tuple[str, str], exp.Column] = {}
        for c in conjuncts:
            if (
                isinstance(c, exp.EQ)
                and isinstance(c.left, exp.Column)
                and isinstance(c.right, exp.Column)
                and c.left.table
                and c.right.table
            ):
                a = (c.left.table, c.left.name)
                b = (c.right.table, c.right.name)
                nodes.setdefault(a, c.left)
                nodes.setdefault(b, c.right)
                present.add(frozenset((a, b)))
                parent[_find(parent, a)] = _find(parent, b)
        classes: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for col in list(parent):
            classes.setdefault(_find(parent, col), []).append(col)
        added: list[exp.Expr] = []
        for members in classes.values():
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    if a[0] != b[0] and frozenset((a, b)) not in present:
                        present.add(frozenset((a, b)))
                        eq = exp.EQ(this=nodes[a].copy(), expression=nodes[b].copy())
                        eq.meta[INFERRED] = True
                        added.append(eq)
        if added:
            where.set("this", exp.and_(*conjuncts, *added))
    return tree


def drop_inferred(tree: exp.Expr) -> exp.Expr:
    """Replace the inferred equalities still in ``tree`` by TRUE (see INFERRED)."""
    for node in list(tree.find_all(exp.EQ)):
        if node.meta.get(INFERRED):
            node.replace(exp.true())
    return tree


def _find(parent: dict[tuple[str, str], tuple[str, str]], x: tuple[str, str]) -> tuple[str, str]:
    parent.setdefault(x, x)
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def split_aggregate(
    agg: exp.AggFunc,
    partial: Callable[[exp.Expr], exp.Expr],
    where: exp.Where | None = None,
) -> exp.Expr:
    """What replaces ``agg`` (SUM, MIN, MAX, COUNT or AVG, not DISTINCT) once its
    input is aggregated in parts: ``partial(e)`` records an aggregate each part
    computes and returns the column that holds it. A COUNT is the sum of the
    partial counts (0, not NULL, when there are none); AVG is SUM over COUNT.

    ``where``: the aggregate's FILTER (WHERE ...), applied by every part (so what
    replaces the FILTER as a whole combines the parts without one)."""
    if where is not None:
        inner = partial

        def partial(e: exp.Expr) -> exp.Expr:
            return inner(exp.Filter(this=e, expression=where.copy()))

    if isinstance(agg, exp.Avg):
        total = exp.Sum(this=partial(exp.Sum(this=agg.this.copy())))
        n = exp.Sum(this=partial(exp.Count(this=agg.this.copy())))
        avg = exp.Div(
            this=exp.cast(total, "DOUBLE"),
            expression=exp.func("nullif", n, exp.Literal.number(0)),
        )
        return exp.Paren(this=avg)
    if isinstance(agg, exp.Count):
        counted = exp.Sum(this=partial(agg.copy()))
        return exp.cast(exp.func("coalesce", counted, exp.Literal.number(0)), "BIGINT")
    return type(agg)(this=partial(agg.copy()))


__all__ = [
    "INFERRED",
    "NOT_PUSHABLE",
    "drop_inferred",
    "factor_or",
    "flatten",
    "implied_by_or",
    "infer_equalities",
    "is_within",
    "null_supplying",
    "reads_only",
    "split_aggregate",
]
