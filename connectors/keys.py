"""Join keys shipped as Arrow key sets, for backends that cannot join an Arrow table.

The coordinator sends many join keys (semi-join reduction) as an Arrow key set
named in the fragment as ``EXISTS (SELECT 1 FROM __fedsql_keysN WHERE
__fedsql_keysN.k = probe)``. A DuckDB backend joins the Arrow table itself; for
other backends the node rewrites the condition as the backend says
(``Backend.key_condition``: PostgreSQL's ``probe = ANY(CAST('{...}' AS type[]))``,
one literal probed through a hash table or an index; SQLite's and the node's own
DuckDB's ``probe IN (...)``, :func:`in_list`). Only integer, string and date keys
travel this way (the coordinator sends others as a range).

>>> import pyarrow as pa, sqlglot
>>> tree = sqlglot.parse_one("SELECT o.a FROM o WHERE EXISTS "
...     "(SELECT 1 FROM __fedsql_keys0 WHERE __fedsql_keys0.k = o.b)", dialect="duckdb")
>>> keys = {"__fedsql_keys0": pa.table({"k": pa.array([3, 1, 2])})}
>>> print(with_keys(tree, keys, in_list).sql(dialect="sqlite"))
SELECT o.a FROM o WHERE o.b IN (3, 1, 2)
>>> print(with_keys(tree, keys, None).sql(dialect="duckdb"))
SELECT o.a FROM o WHERE TRUE
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
from sqlglot import exp

from fedsql.connectors.guard import KEY_SET_META
from fedsql.joinkeys import inlinable_keys, key_literal

KeyCondition = Callable[[exp.Expr, list[Any]], exp.Expr]  # (probe, keys) -> a condition


def in_list(probe: exp.Expr, values: list[Any]) -> exp.Expr:
    """``probe IN (v1, v2, ...)``: how most engines take a set of keys."""
    return exp.In(this=probe.copy(), expressions=[key_literal(v) for v in values])


def with_keys(tree: exp.Expr, keys: dict[str, pa.Table], render: KeyCondition | None) -> exp.Expr:
    """A copy of ``tree`` whose key-set conditions are written by ``render`` (the
    backend's ``key_condition``; None: TRUE, for computing the result's schema)."""
    tree = tree.copy()
    for node in list(tree.find_all(exp.Exists)):
        found = _key_condition(node, keys)
        if found is None:
            continue
        probe, column = found
        if render is None:  # no need to read the keys
            node.replace(exp.true())
            continue
        node.replace(render(probe, column.to_pylist()))
    for table in tree.find_all(exp.Table):
        if table.meta.get(KEY_SET_META):
            raise ValueError(
                f"key set {table.name} is used in a way this backend cannot run; it may only "
                f"appear as EXISTS (SELECT 1 FROM {table.name} WHERE {table.name}.k = ...)"
            )
    return tree


def _key_condition(
    node: exp.Exists, keys: dict[str, pa.Table]
) -> tuple[exp.Expr, pa.ChunkedArray] | None:
    inner = node.this
    if not isinstance(inner, exp.Select):
        return None
    if any(v for k, v in inner.args.items() if k not in ("expressions", "from_", "where")):
        return None
    from_ = inner.args.get("from_") or inner.args.get("from")
    if from_ is None or not isinstance(from_.this, exp.Table) or inner.args.get("joins"):
        return None
    name = from_.this.name
    where = inner.args.get("where")
    if name not in keys or where is None or not isinstance(where.this, exp.EQ):
        return None
    eq = where.this
    left, right = eq.this, eq.expression
    if isinstance(left, exp.Column) and left.table == name:
        probe = right
    elif isinstance(right, exp.Column) and right.table == name:
        probe = left
    else:
        return None
    column = keys[name].column(0)
    if not inlinable_keys(column.type):
        raise ValueError(f"join keys of type {column.type} cannot be inlined")
    return probe, column
