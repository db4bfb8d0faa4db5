"""What a backend can run, as the planner and the connector both test it.

A capability set names what is *not* supported: sqlglot expression kinds
(``"Like"``, ``"Extract"``...) plus a few constructs below.
"""

from __future__ import annotations

from sqlglot import exp

# Special names (not sqlglot kinds).
CORRELATED_SUBQUERY = "CorrelatedSubquery"  # a subquery reading its outer query's columns


def first_unsupported(tree: exp.Expr, unsupported: frozenset[str]) -> str | None:
    """The first expression kind in ``tree`` that is in ``unsupported``.

    >>> import sqlglot
    >>> first_unsupported(sqlglot.parse_one("SELECT a FROM t WHERE b LIKE 'x%'"),
    ...                   frozenset({"Like"}))
    'Like'
    """
    if not unsupported:
        return None
    for node in tree.walk():
        name = type(node).__name__
        if name in unsupported:
            return name
    return None
