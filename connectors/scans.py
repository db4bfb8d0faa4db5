"""What a fragment needs from one table, as a scan the backend can run.

When the node computes a fragment in its own DuckDB (see ``execution.py``),
each table the fragment reads becomes one scan of the backend: only the
columns the fragment uses, and the ``WHERE`` conjuncts of the table's own
``SELECT`` that touch that table alone — so an index or a selective filter
still works inside the agency's database. Pushing is exact or not done: a
conjunct is left out when the table may be NULL-extended by an outer join,
when it holds a subquery, an aggregate, a window or a random function, when
a column is not qualified, or when the backend cannot run it as DuckDB would.
The conjuncts also stay in the fragment DuckDB runs, so a scan that filters
less is never wrong.

>>> import sqlglot
>>> import pyarrow as pa
>>> tree = sqlglot.parse_one(
...     "SELECT o.o_custkey, SUM(l.l_price) FROM orders AS o, lineitem AS l "
...     "WHERE o.o_orderkey = l.l_orderkey AND o.o_date >= DATE '1995-01-01' "
...     "AND l.l_flag = 'R' GROUP BY o.o_custkey", dialect="duckdb")
>>> schema = pa.schema([("l_orderkey", pa.int64()), ("l_price", pa.float64()),
...                     ("l_flag", pa.string()), ("l_comment", pa.string())])
>>> table = [t for t in tree.find_all(exp.Table) if t.name == "lineitem"][0]
>>> print(scan_select(table, tree, schema, frozenset()).sql(dialect="postgres"))
SELECT "l"."l_orderkey", "l"."l_price", "l"."l_flag" FROM "lineitem" AS l WHERE l.l_flag = 'R'
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from fedsql.capabilities import first_unsupported
from fedsql.planner.rules import flatten, null_supplying, reads_only


def scan_select(
    table: exp.Table, tree: exp.Expr, schema: pa.Schema, unsupported: frozenset[str]
) -> exp.Select:
    """The scan of ``table`` (a node of ``tree``) that the fragment needs."""
    alias = table.alias_or_name
    columns = _needed_columns(alias, tree, schema)
    src = exp.Table(this=exp.to_identifier(table.name, quoted=True))
    if table.args.get("db"):
        src.set("db", table.args["db"].copy())
    scan = exp.select(*[exp.column(c, table=alias, quoted=True) for c in columns]).from_(
        exp.alias_(src, alias, table=True)
    )
    preds = _pushable(table, alias, unsupported)
    if preds:
        scan = scan.where(exp.and_(*preds))
    return scan


def _needed_columns(alias: str, tree: exp.Expr, schema: pa.Schema) -> list[str]:
    names = [f.name for f in schema]
    lower = {n.lower(): n for n in names}
    if any(not isinstance(s.parent, exp.Count) for s in tree.find_all(exp.Star)):
        return names  # SELECT *, t.* (COUNT(*) reads no column)
    want: set[str] = set()
    key = alias.lower()
    for col in tree.find_all(exp.Column):
        qual = col.table.lower()
        name = col.name.lower()
        if qual == key and name in lower:
            want.add(lower[name])
        elif not qual and (name in lower or name == key):
            # unqualified: it may be ours (or the whole row, named by the alias)
            if name == key:
                return names
            want.add(lower[name])
    # keep the table's order; a scan needs one column even for COUNT(*)
    return [n for n in names if n in want] or names[:1]


def _pushable(table: exp.Table, alias: str, unsupported: frozenset[str]) -> list[exp.Expr]:
    select = table.parent
    while select is not None and not isinstance(select, exp.Select):
        if isinstance(select, exp.Subquery | exp.Union | exp.Intersect | exp.Except):
            return []
        select = select.parent
    if select is None or alias.lower() in {a.lower() for a in null_supplying(select)}:
        return []
    where = select.args.get("where")
    if where is None:
        return []
    out = []
    for pred in flatten(where.this, exp.And):
        if reads_only(pred, (alias,)) and first_unsupported(pred, unsupported) is None:
            out.append(pred.copy())
    return out
