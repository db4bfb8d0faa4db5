"""The one place a remote query becomes the SQL an agency receives.

:func:`bind` writes a fragment's runtime values into copies of its trees — the
join keys of its key slots (an IN list, a range, or an Arrow key set shipped
with the request), the values of its scalar slots (exact literals) — and wraps
it in its aggregation at the agency, then generates the SQL once. :func:`shown`
writes the same SQL with the slots left open (``$keys(fragment.column)``,
``$value(fragment)``), for ``explain``. Nothing is re-parsed.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from fedsql import names
from fedsql.joinkeys import inlinable_keys, key_literal, scalar_literal
from fedsql.lang import DIALECT
from fedsql.planner.model import RemoteQuery, ScalarSlot
from fedsql.v1 import connector_pb2 as pb
from fedsql.wire import key_set_to_proto

# Join keys: up to INLINE_KEYS as an IN list in the SQL, more as an Arrow key set
# (which PostgreSQL/SQLite connectors write into their query as one array or
# list). Parsing an IN list costs the connector's check and DuckDB ~20 µs a key:
# with 2000 keys inline, TPC-H SF 0.1 Q9/Q22 took 2-3x as long as with key sets.
# Keys of other types: an IN list up to MAX_IN_KEYS, then a key range.
INLINE_KEYS = 128
MAX_IN_KEYS = 2000

KeysOf = Callable[[str, str], pa.Array]  # (build fragment, column) -> its distinct keys
ResultOf = Callable[[str], pa.Table]  # a fetched fragment's result


def bind(
    f: RemoteQuery, keys_of: KeysOf | None = None, result_of: ResultOf | None = None
) -> tuple[str, list[pb.KeySet]]:
    """The SQL ``f``'s agency receives, its slots bound, and the key sets shipped
    with it. ``keys_of(build, column)``: the distinct non-NULL values of that
    column of that fetched fragment; ``result_of(fragment)``: its whole result.
    A slot whose value is not available is left out (the residual still applies
    the condition, so the result is the same)."""
    if not f.keys and f.wrap is None and not f.scalars:
        return f.sql, []
    tree = f.query.copy()
    assert isinstance(tree, exp.Select)  # slots and wraps go on table or join fragments
    key_sets: list[pb.KeySet] = []
    for slot in f.keys:
        if keys_of is None:
            break
        keys = keys_of(slot.build, slot.build_column)
        cond: exp.Expr | None
        if len(keys) > INLINE_KEYS and (f.arrow_keys or inlinable_keys(keys.type)):
            # Many keys travel as Arrow, not SQL text: the connector joins them (or,
            # for PostgreSQL/SQLite, writes them into the backend's query itself).
            name = f"{names.KEYS}{len(key_sets)}"
            key_sets.append(key_set_to_proto(name, keys))
            match = exp.EQ(this=exp.column("k", table=name), expression=slot.probe.copy())
            if f.arrow_keys and not any(
                isinstance(e, exp.Star) or isinstance(e.this, exp.Star) for e in tree.expressions
            ):
                # A join with the (unique, non-NULL) keys is the semi-join, and one
                # DuckDB plans best: with TPC-H Q21's correlated EXISTS clauses, 0.2 s
                # where EXISTS over the keys takes 6 s and IN (SELECT ...) can stall.
                tree = tree.join(exp.to_table(name), copy=False)
                cond = match
            else:  # PostgreSQL/SQLite connectors write this EXISTS as an array or list
                cond = exp.Exists(this=exp.select("1").from_(name).where(match))
        else:
            cond = key_filter(slot.probe, keys)
        if cond is not None:
            tree = tree.where(cond, copy=False)
    for scalar in f.scalars:
        cond = scalar_condition(scalar, result_of) if result_of is not None else None
        if cond is not None:
            tree = tree.where(cond, copy=False)
    return _wrapped(f, tree).sql(dialect=DIALECT), key_sets


def shown(f: RemoteQuery, pretty: bool = False) -> str:
    """The SQL of ``f`` with its slots open: what ``explain`` prints."""
    tree = f.query.copy()
    if not isinstance(tree, exp.Select):
        return tree.sql(dialect=DIALECT, pretty=pretty)
    for slot in f.keys:
        hole = exp.Var(this=f"$keys({slot.build}.{slot.build_column})")
        tree = tree.where(exp.In(this=slot.probe.copy(), expressions=[hole]), copy=False)
    for scalar in f.scalars:
        cond = scalar.condition.copy()
        for col in list(cond.find_all(exp.Column)):
            if col.name.startswith(names.SCALAR):
                build = col.name.removeprefix(names.SCALAR)
                col.replace(exp.Var(this=f"$value({build})"))
        tree = tree.where(cond, copy=False)
    return _wrapped(f, tree).sql(dialect=DIALECT, pretty=pretty)


def _wrapped(f: RemoteQuery, tree: exp.Query) -> exp.Query:
    if f.wrap is None:
        return tree
    outer = f.wrap.copy()
    inner = next(t for t in outer.find_all(exp.Table) if t.name == names.INNER)
    inner.replace(exp.Subquery(this=tree, alias=inner.args["alias"].copy()))
    return outer


def scalar_condition(slot: ScalarSlot, result_of: ResultOf) -> exp.Expr | None:
    """The condition with each subquery's value written in, or None when a subquery
    did not return exactly one non-NULL value of a type with an exact literal."""
    values: dict[str, exp.Expr] = {}
    for build in slot.builds:
        table = result_of(build)
        if table.num_rows != 1 or table.num_columns != 1:
            return None
        literal = scalar_literal(table.column(0)[0])
        if literal is None:
            return None
        values[f"{names.SCALAR}{build}"] = literal
    cond = slot.condition.copy()
    for col in list(cond.find_all(exp.Column)):
        if col.name in values:
            col.replace(values[col.name].copy())
    return cond


def key_filter(column: exp.Expr, values: pa.Array) -> exp.Expr | None:
    """``column IN (keys)`` for a few keys, ``BETWEEN min AND max`` for many; None when
    the key type has no literal form here."""
    if len(values) == 0:
        return exp.false()
    if not inlinable_keys(values.type):
        return None
    if len(values) <= MAX_IN_KEYS:
        return exp.In(this=column.copy(), expressions=[key_literal(v) for v in values.to_pylist()])
    lo, hi = pc.min_max(values).values()
    return exp.Between(
        this=column.copy(), low=key_literal(lo.as_py()), high=key_literal(hi.as_py())
    )


__all__ = ["INLINE_KEYS", "MAX_IN_KEYS", "bind", "key_filter", "scalar_condition", "shown"]
