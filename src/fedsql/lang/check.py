"""The allow-list check: every node of a tree is in the fragment language.

Walks the tree iteratively; each node's kind must be listed in ``spec`` and
every argument it carries must be one its kind allows (with the values and
literal rules the spec gives). The first thing that is not is refused, named
as SQL names it.

>>> import sqlglot
>>> check(sqlglot.parse_one("SELECT a, count(*) FROM t WHERE b > 1 GROUP BY a", read="duckdb"))
>>> check(sqlglot.parse_one("SELECT * FROM t UNPIVOT (v FOR k IN (a, b))", read="duckdb"))
Traceback (most recent call last):
...
fedsql.lang.errors.NotInLanguage: PIVOT/UNPIVOT on a table is not in the fragment language
>>> check(sqlglot.parse_one("SELECT current_setting('threads')", read="duckdb"))
Traceback (most recent call last):
...
fedsql.lang.errors.NotInLanguage: function current_setting is not in the fragment language
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlglot import exp

from fedsql.lang.errors import NotInLanguage
from fedsql.lang.spec import (
    ANONYMOUS,
    ARG_RULES,
    CLAUSE_NAMES,
    CLAUSES,
    TYPES,
    VALUES,
    SmallInt,
    StringLiteral,
    function_kinds,
)

MAX_IDENTIFIER = 255
_FUNCTIONS = function_kinds()
_QUERIES = (exp.Select, exp.Union, exp.Intersect, exp.Except)
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*( [A-Za-z_]+)?")
_INTEGER = re.compile(r"\d{1,18}")
_TABLE_WITH_CATALOG = CLAUSES[exp.Table] | {"catalog"}


def _refuse(what: str) -> NotInLanguage:
    return NotInLanguage(f"{what} is not in the fragment language")


def check(
    tree: exp.Expr,
    trusted: Callable[[exp.Subquery], bool] | None = None,
    catalogs: bool = False,
) -> None:
    """Raise :class:`NotInLanguage` for the first construct the language lacks.

    ``trusted(subquery)``: True for subqueries the connector itself wrote (its
    policy views, already compared with what it meant to write): not walked.
    ``catalogs``: table names may have three parts (``agency.schema.table``), as
    analysts write them at the coordinator; fragments name tables in two.
    """
    if not isinstance(tree, _QUERIES):
        raise NotInLanguage(f"only a SELECT query is allowed, got {tree.key.upper()}")
    stack: list[exp.Expr] = [tree]
    while stack:
        node = stack.pop()
        if trusted is not None and isinstance(node, exp.Subquery) and trusted(node):
            continue
        allowed = (
            _TABLE_WITH_CATALOG if catalogs and type(node) is exp.Table else _allowed_args(node)
        )
        for key, value in node.args.items():
            if value is None or value is False or (isinstance(value, list) and not value):
                continue
            if key not in allowed:
                raise _refuse(_clause(node, key, value))
            rule = ARG_RULES.get((type(node), key))
            if rule is not None:
                _apply_rule(node, key, value, rule)
            for child in value if isinstance(value, list) else (value,):
                if isinstance(child, exp.Expr):
                    stack.append(child)
                else:
                    _check_scalar(node, key, child)
        _check_node(node)


def _allowed_args(node: exp.Expr) -> frozenset[str]:
    kind = type(node)
    if kind in CLAUSES:
        return CLAUSES[kind]
    if kind in _FUNCTIONS:
        return frozenset(kind.arg_types)
    if isinstance(node, exp.Anonymous):
        name = str(node.name).lower()
        arity = ANONYMOUS.get(name)
        if arity is None:
            raise _refuse(f"function {name}")
        n = len(node.expressions)
        lo, hi = arity
        if n < lo or (hi is not None and n > hi):
            most = "any number of" if hi is None else f"at most {hi}"
            raise NotInLanguage(
                f"function {name} takes at least {lo} and {most} arguments, got {n}"
            )
        return frozenset({"this", "expressions"})
    if isinstance(node, exp.Func):
        raise _refuse(f"function {node.sql_name().lower()}")
    raise _refuse(_kind_name(node))


def _kind_name(node: exp.Expr) -> str:
    names = {
        exp.Lambda: "a lambda (x -> ...)",
        exp.Pivot: "PIVOT/UNPIVOT",
        exp.Lateral: "LATERAL",
        exp.Unnest: "UNNEST",
        exp.TableSample: "TABLESAMPLE",
        exp.Placeholder: "a parameter placeholder",
        exp.Comprehension: "a list comprehension",
    }
    for kind, name in names.items():
        if isinstance(node, kind):
            return name
    return node.key.upper()


def _clause(node: exp.Expr, key: str, value: object) -> str:
    if (type(node), key) == (exp.Join, "method"):
        return f"{str(value).upper()} JOIN"
    name = CLAUSE_NAMES.get((type(node), key))
    if name is not None:
        return name
    return f"the {key.rstrip('_')} clause of {node.key.upper()}"


def _check_scalar(node: exp.Expr, key: str, value: object) -> None:
    allowed = VALUES.get((type(node), key))
    if allowed is not None and str(value).upper() not in allowed:
        raise _refuse(f"{str(value).upper()} in {node.key.upper()}")
    if isinstance(value, str) and isinstance(node, exp.Identifier) and key == "this":
        if len(value) > MAX_IDENTIFIER:
            raise NotInLanguage(f"a name is longer than {MAX_IDENTIFIER} characters")
        if "\x00" in value:
            raise NotInLanguage("a name contains a NUL character")


def _apply_rule(node: exp.Expr, key: str, value: object, rule: object) -> None:
    fname = node.sql_name().lower() if isinstance(node, exp.Func) else node.key
    if isinstance(rule, SmallInt):
        if not (
            isinstance(value, exp.Literal)
            and not value.is_string
            and _INTEGER.fullmatch(value.name)
            and int(value.name) <= rule.most
        ):
            raise NotInLanguage(
                f"{fname}: its size argument must be a whole number literal of at most {rule.most}"
            )
    elif isinstance(rule, StringLiteral) and not (
        (isinstance(value, exp.Literal) and value.is_string) or isinstance(value, exp.Star)
    ):
        raise NotInLanguage(f"{fname}: its argument must be a string literal")


def _check_node(node: exp.Expr) -> None:
    """Rules on where a kind may stand and what its values may be."""
    parent = node.parent
    if isinstance(node, exp.Table):
        if not isinstance(parent, exp.From | exp.Join) or node.arg_key != "this":
            raise _refuse("a table name in this position")
        if isinstance(node.this, exp.Func):
            raise _refuse(f"table function {node.this.sql_name().lower()}")
        if not isinstance(node.this, exp.Identifier):
            raise _refuse(f"{_kind_name(node.this)} as a table")
    elif isinstance(node, exp.Subquery):
        if not isinstance(node.this, _QUERIES):
            raise _refuse("a parenthesized table or join")
    elif isinstance(node, exp.Exists):
        if not isinstance(node.this, _QUERIES):
            raise _refuse("EXISTS over something other than a query")
    elif isinstance(node, exp.Limit | exp.Offset):
        value = node.expression
        if not (
            isinstance(value, exp.Literal)
            and not value.is_string
            and _INTEGER.fullmatch(value.name)
        ):
            raise NotInLanguage(f"{node.key.upper()} must be a whole number literal")
    elif isinstance(node, exp.DataType):
        if node.this not in TYPES or node.args.get("nested"):
            raise _refuse(f"the type {node.sql(dialect='duckdb')}")
        for p in node.expressions:
            if not (isinstance(p, exp.DataTypeParam) and isinstance(p.this, exp.Literal)):
                raise _refuse(f"the type {node.sql(dialect='duckdb')}")
    elif isinstance(node, exp.Var):
        if not _WORD.fullmatch(str(node.this)):
            raise _refuse(f"the word {str(node.this)[:40]!r}")
    elif isinstance(node, exp.Identifier) and not isinstance(node.this, str):
        raise _refuse("a computed name")


__all__ = ["NotInLanguage", "check"]
