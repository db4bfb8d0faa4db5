"""Predicates over SQL trees that both sides need: which conjuncts a condition is
made of, which tables it reads, whether it may be evaluated early, which side of
an outer join supplies NULLs. Used by the planner and by the connector's scans.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlglot import exp


def flatten(node: exp.Expr, kind: type[exp.Connector]) -> list[exp.Expr]:
    out: list[exp.Expr] = []
    stack = [node]
    while stack:
        n = stack.pop()
        while isinstance(n, exp.Paren):
            n = n.this
        if isinstance(n, kind):
            stack.extend([n.right, n.left])
        else:
            out.append(n)
    return out


# What a condition may not hold to be evaluated early, below joins or inside an
# agency: its value would change (subqueries, aggregates, windows) or differ
# between evaluations (random numbers, UUIDs), or it is not SQL yet (a parameter).
NOT_PUSHABLE = (
    exp.Subquery,
    exp.Query,
    exp.AggFunc,
    exp.Window,
    exp.Rand,
    exp.Uuid,
    exp.Placeholder,
)


def reads_only(pred: exp.Expr, aliases: Collection[str]) -> bool:
    """True if ``pred`` reads columns of ``aliases`` only (and some) and is safe to
    evaluate early.

    >>> import sqlglot
    >>> reads_only(sqlglot.parse_one("a.x > 1 AND a.y = 'b'"), {"a"})
    True
    >>> reads_only(sqlglot.parse_one("a.x > random()"), {"a"})
    False
    """
    if pred.find(*NOT_PUSHABLE) is not None:
        return False
    cols = list(pred.find_all(exp.Column))
    return bool(cols) and all(c.table in aliases for c in cols)


def null_supplying(select: exp.Select) -> set[str]:
    """Aliases on the NULL-supplying side of an outer join in this SELECT.

    >>> import sqlglot
    >>> null_supplying(sqlglot.parse_one("SELECT 1 FROM a LEFT JOIN b ON a.x = b.x JOIN c ON 1=1"))
    {'b'}
    """
    seen: list[str] = []
    from_ = select.args.get("from_") or select.args.get("from")
    if from_ is not None:
        seen.append(from_.this.alias_or_name)
    out: set[str] = set()
    for join in select.args.get("joins") or []:
        alias = join.this.alias_or_name
        side = (join.side or "").upper()
        if side in ("LEFT", "FULL"):
            out.add(alias)
        if side in ("RIGHT", "FULL"):
            out.update(seen)
        seen.append(alias)
    return out


def is_within(node: exp.Expr, ancestor: exp.Expr) -> bool:
    """Is ``node`` ``ancestor`` or somewhere below it?"""
    n: exp.Expr | None = node
    while n is not None:
        if n is ancestor:
            return True
        n = n.parent
    return False
