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
>>> from fedsql.capabilities import Capabilities
>>> print(scan_select(table, tree, schema, Capabilities()).sql(dialect="postgres"))
SELECT "l"."l_orderkey", "l"."l_price", "l"."l_flag" FROM "lineitem" AS l WHERE l.l_flag = 'R'
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from fedsql.capabilities import Capabilities, TypeOf
from fedsql.lang.predicates import flatten, null_supplying, reads_only


def scan_select(
    table: exp.Table,
    tree: exp.Expr,
    schema: pa.Schema,
    capabilities: Capabilities,
    portable_only: bool = False,
) -> exp.Select:
    """The scan of ``table`` (a node of ``tree``) that the fragment needs.

    ``portable_only``: the table is a policy view's source; only conjuncts that
    mean the same in every backend (:func:`portable`) go into the scan, the
    rest (and these again) are evaluated by the node's DuckDB.
    """
    alias = table.alias_or_name
    columns = _needed_columns(alias, tree, schema)
    src = exp.Table(this=exp.to_identifier(table.name, quoted=True))
    if table.args.get("db"):
        src.set("db", table.args["db"].copy())
    scan = exp.select(*[exp.column(c, table=alias, quoted=True) for c in columns]).from_(
        exp.alias_(src, alias, table=True)
    )
    preds = _pushable(table, alias, capabilities, schema)
    if portable_only:
        preds = [p for p in preds if portable(p, schema)]
    if preds:
        scan = scan.where(exp.and_(*preds))
    return scan


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_date(t):
        return "date"
    return ""


def portable(pred: exp.Expr, schema: pa.Schema) -> bool:
    """Whether ``pred`` has one meaning in DuckDB, PostgreSQL and SQLite for the
    same stored values: AND/OR/NOT of comparisons of a column with a literal of its
    own kind — integers (=, <>, <, <=, >, >=, BETWEEN, IN), strings (=, <>, IN:
    byte equality; ordering depends on collation), dates (against DATE '...') —
    and IS [NOT] NULL. Functions, LIKE, arithmetic, casts and floating or decimal
    values are not (SQLite stores decimals as doubles, PostgreSQL's substr counts
    differently, LIKE escapes differ...).

    >>> import sqlglot
    >>> s = pa.schema([("region", pa.string()), ("level", pa.int32())])
    >>> portable(sqlglot.parse_one("region <> 'x' AND level >= 3"), s)
    True
    >>> portable(sqlglot.parse_one("substr(region, -4) <> 'x'"), s)
    False
    >>> portable(sqlglot.parse_one("region LIKE 'a_%'"), s)
    False
    """
    kinds = {f.name.lower(): _kind(f.type) for f in schema}

    def column_kind(e: exp.Expr) -> str:
        return kinds.get(e.name.lower(), "") if isinstance(e, exp.Column) else ""

    def literal_kind(e: exp.Expr) -> str:
        if isinstance(e, exp.Literal):
            if e.is_string:
                return "string"
            return "integer" if e.name.lstrip("-").isdigit() else ""
        if isinstance(e, exp.Neg) and isinstance(e.this, exp.Literal) and e.this.name.isdigit():
            return "integer"
        if (
            isinstance(e, exp.Cast)
            and e.to.this == exp.DataType.Type.DATE
            and isinstance(e.this, exp.Literal)
            and e.this.is_string
        ):
            return "date"
        return ""

    def ok(e: exp.Expr) -> bool:
        if isinstance(e, exp.And | exp.Or):
            return ok(e.this) and ok(e.expression)
        if isinstance(e, exp.Not | exp.Paren):
            return ok(e.this)
        if isinstance(e, exp.Is):
            return column_kind(e.this) != "" and isinstance(e.expression, exp.Null)
        if isinstance(e, exp.EQ | exp.NEQ):
            a, b = e.this, e.expression
            k = column_kind(a) or column_kind(b)
            lit = literal_kind(b) if column_kind(a) else literal_kind(a)
            return k != "" and k == lit
        if isinstance(e, exp.GT | exp.GTE | exp.LT | exp.LTE):
            a, b = e.this, e.expression
            k = column_kind(a) or column_kind(b)
            lit = literal_kind(b) if column_kind(a) else literal_kind(a)
            return k in ("integer", "date") and k == lit
        if isinstance(e, exp.Between):
            k = column_kind(e.this)
            return k in ("integer", "date") and literal_kind(e.args["low"]) == k == literal_kind(
                e.args["high"]
            )
        if isinstance(e, exp.In):
            k = column_kind(e.this)
            return (
                k in ("integer", "string")
                and not e.args.get("query")
                and all(literal_kind(x) == k for x in e.expressions)
            )
        return False

    return ok(pred)


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


def column_types(schemas: dict[str, pa.Schema]) -> TypeOf:
    """A column's Arrow type, from the schemas of the tables by alias (an
    unqualified name: the one table that has it)."""

    def type_of(col: exp.Column) -> pa.DataType | None:
        name = col.name.lower()
        candidates = [schemas[col.table.lower()]] if col.table.lower() in schemas else []
        if not col.table:
            candidates = list(schemas.values())
        found = {f.type for s in candidates for f in s if f.name.lower() == name}
        return found.pop() if len(found) == 1 else None  # one type, whichever table

    return type_of


def _pushable(
    table: exp.Table, alias: str, capabilities: Capabilities, schema: pa.Schema
) -> list[exp.Expr]:
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
    type_of = column_types({alias.lower(): schema})
    out = []
    for pred in flatten(where.this, exp.And):
        if reads_only(pred, (alias,)) and capabilities.lacking(pred, type_of) is None:
            out.append(pred.copy())
    return out
