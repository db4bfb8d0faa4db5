"""Exact tree equality, for "what runs is what was checked".

sqlglot's ``==`` compares hashes that fold case (``'ABC'`` equals ``'abc'``)
and could collide; this compares node kinds, argument names and scalar
values exactly (but for the case of an anonymous function's name, which the
generator writes in upper case and DuckDB ignores), iteratively. Comments are
not part of a tree here: they are dropped when the text is parsed
(``bounds.parse``).

>>> import sqlglot
>>> same(sqlglot.parse_one("SELECT 'a'"), sqlglot.parse_one("SELECT  'a'"))
True
>>> same(sqlglot.parse_one("SELECT 'a'"), sqlglot.parse_one("SELECT 'A'"))
False
"""

from __future__ import annotations

from sqlglot import exp


def _present(args: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in args.items() if v is not None and v is not False and v != []}


def same(a: exp.Expr, b: exp.Expr) -> bool:
    """Whether ``a`` and ``b`` are the same tree, exactly."""
    return first_difference(a, b) is None


def first_difference(a: exp.Expr, b: exp.Expr) -> exp.Expr | None:
    """The innermost node of ``a`` where ``b`` differs from it (None: the same)."""
    stack: list[tuple[object, object, exp.Expr]] = [(a, b, a)]
    while stack:
        x, y, where = stack.pop()
        if isinstance(x, exp.Expr) or isinstance(y, exp.Expr):
            if type(x) is not type(y):
                return where
            assert isinstance(x, exp.Expr) and isinstance(y, exp.Expr)
            xa, ya = _present(x.args), _present(y.args)
            if xa.keys() != ya.keys():
                return x
            # the generator writes anonymous function names upper case
            if isinstance(x, exp.Anonymous) and (
                str(xa.pop("this")).lower() != str(ya.pop("this")).lower()
            ):
                return x
            stack.extend((xa[k], ya[k], x) for k in xa)
        elif isinstance(x, list) or isinstance(y, list):
            if not (isinstance(x, list) and isinstance(y, list)) or len(x) != len(y):
                return where
            stack.extend((p, q, where) for p, q in zip(x, y, strict=True))
        elif type(x) is not type(y) or x != y:
            return where
    return None


__all__ = ["first_difference", "same"]
