"""Expressions an agency computes instead of sending their columns (compute at the source).

TPC-H Q14's ``p_type LIKE 'PROMO%'`` becomes a boolean instead of a string;
Q9's ``l_extendedprice * (1 - l_discount)`` one decimal instead of two. Only at
agencies that declare ``exact_expressions`` (they compute every expression of
the language as DuckDB does), and only kinds that raise no errors on rows the
coordinator's joins would have dropped (:data:`COMPUTABLE`).
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from fedsql import names
from fedsql.lang import DIALECT
from fedsql.planner.agency import runnable
from fedsql.planner.rules import is_within
from fedsql.planner.state import CutState


def compute_at_source(
    st: CutState,
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
        while (up := node.parent) is not None and computable(up, aliases):
            node = up
        while isinstance(node, exp.Paren):
            node = node.this
        if node is not col and runnable(st, node, agency):
            found.setdefault(node.sql(dialect=DIALECT), node)
    # Keep those that free a column; dropping one can make another pointless.
    chosen = dict(found)
    places = {k: occurrences(select, e) for k, e in chosen.items()}
    mine = [
        c
        for c in scope.columns
        if c.table in aliases and is_within(c, st.tree) and not any(is_within(c, p) for p in preds)
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
    return [(f"{names.COMPUTED}{i}", e.copy()) for i, e in enumerate(chosen.values())]


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


def occurrences(select: exp.Select, e: exp.Expr) -> list[exp.Expr]:
    """Where ``e`` occurs in ``select`` itself (not in its subqueries)."""
    return [n for n in select.find_all(type(e)) if n == e and n.find_ancestor(exp.Select) is select]


def computable(node: exp.Expr, aliases: frozenset[str]) -> bool:
    """Can ``node`` (an expression around a column) be computed at the agency whose
    tables are ``aliases``?"""
    if not isinstance(node, COMPUTABLE) or isinstance(node, (exp.Column, exp.Identifier)):
        return False
    if isinstance(node, exp.In) and (node.args.get("query") or node.args.get("unnest")):
        return False
    if isinstance(node, exp.If) and isinstance(node.parent, exp.Case):
        return False  # a WHEN ... THEN branch of a CASE: not a value of its own
    for n in node.walk():
        if not isinstance(n, COMPUTABLE):
            return False
        if isinstance(n, exp.Column) and n.table not in aliases:
            return False
    return True
