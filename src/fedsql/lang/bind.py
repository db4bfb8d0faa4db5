"""Binding by scope: every table reference names something in reach, or is refused.

A table reference (a ``Table`` node in FROM or JOIN) is, in this order:

1. a CTE visible where it stands: one defined by a WITH of an enclosing query,
   earlier in the same WITH or on the query itself (a CTE does not see itself:
   recursion is not in the language);
2. otherwise whatever ``lookup`` says the name is (an exposed table at a
   connector, a catalog table at the coordinator, a key set shipped with the
   request), or ``lookup`` raises.

Derived tables (subqueries in FROM) are not table references. CTE names are
checked once for the whole tree: each defined once, none shadowing what
``reserved`` says is taken, so the order of lookups above is never a question.

>>> import sqlglot
>>> def lookup(t):
...     if t.name == "people":
...         return "people"
...     raise LookupError(f"table {t.name} is not exposed")
>>> tree = sqlglot.parse_one(
...     "WITH a AS (SELECT * FROM people) SELECT * FROM a JOIN people ON true", read="duckdb")
>>> sorted((b.kind, b.target) for b in bind(tree, lookup))
[('cte', 'a'), ('table', 'people'), ('table', 'people')]
>>> bind(sqlglot.parse_one(
...     'WITH z AS (WITH "salaries" AS (SELECT 1) SELECT 1) SELECT * FROM "salaries"',
...     read="duckdb"), lookup)
Traceback (most recent call last):
...
LookupError: table salaries is not exposed
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from fedsql.lang.errors import BindError

QUERIES = (exp.Select, exp.Union, exp.Intersect, exp.Except)
RESERVED_PREFIX = "__fedsql_"  # names fedsql gives its own relations


@dataclass(frozen=True, slots=True)
class Binding:
    table: exp.Table
    kind: str  # "cte" or "table" (whatever lookup resolved)
    target: object  # the CTE's name, or what lookup returned


def bind(
    tree: exp.Expr,
    lookup: Callable[[exp.Table], object],
    reserved: Callable[[str], bool] = lambda name: False,
) -> list[Binding]:
    """Bind every table reference of ``tree`` (CTE bodies first)."""
    _check_cte_names(tree, reserved)
    out: list[Binding] = []
    _bind_query(tree, {}, lookup, out)
    return out


def _check_cte_names(tree: exp.Expr, reserved: Callable[[str], bool]) -> None:
    seen: set[str] = set()
    for cte in tree.find_all(exp.CTE):
        name = cte.alias_or_name.lower()
        if not name:
            raise BindError("a CTE needs a name")
        if name.startswith(RESERVED_PREFIX):
            raise BindError(f"the name {name} is reserved for fedsql's own relations")
        if reserved(name):
            raise BindError(f"a CTE may not be named like the table {name}; give it another name")
        if name in seen:
            raise BindError(f"the CTE name {name} is defined twice; give each CTE its own name")
        seen.add(name)


def _bind_query(
    query: exp.Expr,
    env: dict[str, exp.CTE],
    lookup: Callable[[exp.Table], object],
    out: list[Binding],
) -> None:
    with_ = query.args.get("with_")
    if with_ is not None:
        env = dict(env)
        for cte in with_.expressions:
            _bind_query(cte.this, env, lookup, out)  # sees the CTEs before it, not itself
            env[cte.alias_or_name.lower()] = cte
    stack = [child for key, child in _children(query) if key != "with_"]
    while stack:
        node = stack.pop()
        if isinstance(node, QUERIES):
            _bind_query(node, env, lookup, out)
            continue
        if isinstance(node, exp.Table):
            name = node.name.lower()
            if not node.args.get("db") and not node.args.get("catalog") and name in env:
                out.append(Binding(node, "cte", name))
            else:
                out.append(Binding(node, "table", lookup(node)))
        stack.extend(node.iter_expressions())  # what _children yields, without the keys


def _children(node: exp.Expr) -> list[tuple[str, exp.Expr]]:
    out = []
    for key, value in node.args.items():
        for child in value if isinstance(value, list) else (value,):
            if isinstance(child, exp.Expr):
                out.append((key, child))
    return out


__all__ = ["Binding", "BindError", "RESERVED_PREFIX", "bind"]
