"""Prepared-statement parameters, bound as SQL literals in the syntax tree.

Values never pass through SQL text: each placeholder node of the parsed query is
replaced by a literal node that sqlglot renders (and quotes) itself.
Placeholders: ``?`` (positional, in text order), ``$1`` (1-based) and ``$name``
(matched to the parameter column of that name).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import sqlglot
from sqlglot import exp
from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

from fedsql import lang
from fedsql.errors import PlanError
from fedsql.service.status import INVALID_ARGUMENT, RESOURCE_EXHAUSTED, Refused

_POSITIONAL = "__fedsql_p"


def parse_with_placeholders(sql: str) -> tuple[exp.Expr, list[exp.Placeholder]]:
    """The query's tree and its placeholders, in the order they appear in the text.

    The text is bounded (size, nesting) before anything parses it.
    """
    try:
        lang.precheck(sql, "the query")
    except lang.Refused as e:
        raise PlanError(str(e)) from None
    dialect = sqlglot.Dialect.get_or_raise("duckdb")
    try:
        tokens = dialect.tokenize(sql)
    except TokenError as e:
        raise PlanError(f"cannot parse the query: {e}") from None
    # Name each `?` after its position in the text (tree order is not text order:
    # a WITH clause comes after the SELECT in sqlglot's tree).
    parts, last, n = [], 0, 0
    for t in tokens:
        if t.token_type == TokenType.PLACEHOLDER and sql[t.start : t.end + 1] == "?":
            n += 1
            parts += [sql[last : t.start], f"${_POSITIONAL}{n}"]
            last = t.end + 1
    parts.append(sql[last:])
    try:
        tree = lang.parse("".join(parts), "the query")
    except lang.Refused as e:  # a syntax error says where, with a caret
        raise PlanError(str(e)) from None
    found = list(tree.find_all(exp.Placeholder))

    def order(p: exp.Placeholder) -> tuple[int, str]:
        name = str(p.name or "")
        if name.startswith(_POSITIONAL):
            return int(name[len(_POSITIONAL) :]), ""
        if name.isdigit():
            return int(name), ""
        return 1 << 30, name

    return tree, sorted(found, key=order)


def parameter_schema(placeholders: list[exp.Placeholder]) -> pa.Schema:
    """What the client should bind: one column per distinct placeholder (type unknown)."""
    names: list[str] = []
    for p in placeholders:
        name = _name(p)
        if name not in names:
            names.append(name)
    return pa.schema([pa.field(n, pa.null()) for n in names])


def _name(p: exp.Placeholder) -> str:
    name = str(p.name or "")
    if name.startswith(_POSITIONAL):
        return f"parameter_{name[len(_POSITIONAL) :]}"
    return f"parameter_{name}" if name.isdigit() else name


def bind(sql: str, params: pa.Table) -> list[str]:
    """The query once per parameter row, each with its values as literals (DuckDB SQL)."""
    tree, placeholders = parse_with_placeholders(sql)
    if not placeholders:
        if params.num_columns:
            raise PlanError(f"the query has no parameters but {params.num_columns} were bound")
        return [tree.sql(dialect="duckdb")]
    wanted = parameter_schema(placeholders).names
    by_name = {n.lower(): i for i, n in enumerate(params.column_names)}
    out = []
    for row in params.to_pylist():
        values = list(row.values())
        tree_row = tree.copy()
        for p in list(tree_row.find_all(exp.Placeholder)):
            name = _name(p)
            pos = wanted.index(name)
            if name.lower() in by_name and not name.startswith("parameter_"):
                value = values[by_name[name.lower()]]
            elif pos < len(values):
                value = values[pos]
            else:
                raise PlanError(
                    f"the query has {len(wanted)} parameter(s) but {len(values)} were bound"
                )
            p.replace(literal(value))
        if len(values) > len(wanted):
            raise PlanError(
                f"the query has {len(wanted)} parameter(s) but {len(values)} were bound"
            )
        out.append(tree_row.sql(dialect="duckdb"))
    return out


def literal(v: Any) -> exp.Expr:
    """A Python value (as Arrow gives it) as a SQL literal node.

    >>> literal("O'Brien").sql(), literal(dt.date(1995, 3, 15)).sql(dialect="duckdb")
    ("'O''Brien'", "CAST('1995-03-15' AS DATE)")
    """
    if v is None:
        return exp.Null()
    if isinstance(v, bool):
        return exp.Boolean(this=v)
    if isinstance(v, int):
        return exp.Literal.number(v)
    if isinstance(v, float):
        if math.isfinite(v):
            return exp.Literal.number(repr(v))
        return exp.cast(exp.Literal.string(str(v)), "DOUBLE")
    if isinstance(v, decimal.Decimal):
        return exp.Literal.number(str(v))
    if isinstance(v, str):
        return exp.Literal.string(v)
    if isinstance(v, dt.datetime):
        return exp.cast(exp.Literal.string(v.isoformat(sep=" ")), "TIMESTAMP")
    if isinstance(v, dt.date):
        return exp.cast(exp.Literal.string(v.isoformat()), "DATE")
    if isinstance(v, dt.time):
        return exp.cast(exp.Literal.string(v.isoformat()), "TIME")
    raise PlanError(f"a parameter of type {type(v).__name__} cannot be bound")


# Arrow bytes of one DoPut's parameters: max_parameter_rows rows of values are far
# less, and a user's 64 prepared statements then hold at most 64 MiB of them.
MAX_PARAMETER_BYTES = 1 << 20


def read_parameters(reader: flight.MetadataRecordBatchReader, most: int) -> pa.Table:
    """The bound parameter rows, read batch by batch and refused past the caps:
    each row is one federated query (issue 17)."""
    batches: list[pa.RecordBatch] = []
    rows = nbytes = 0
    try:
        schema = reader.schema
        for chunk in reader:
            if chunk.data is None:
                continue
            batches.append(chunk.data)
            rows += chunk.data.num_rows
            nbytes += chunk.data.nbytes
            if rows > most:
                raise Refused(
                    RESOURCE_EXHAUSTED,
                    f"more than {most} parameter rows in one execution "
                    "([service] max_parameter_rows); each row runs a federated query: "
                    "send them in smaller batches",
                )
            if nbytes > MAX_PARAMETER_BYTES:
                raise Refused(
                    RESOURCE_EXHAUSTED,
                    f"the parameters are over {MAX_PARAMETER_BYTES >> 20} MiB; "
                    "send them in smaller batches",
                )
    except pa.ArrowException as e:
        if isinstance(e, flight.FlightError):
            raise
        raise Refused(INVALID_ARGUMENT, "the parameter batches cannot be read") from None
    return pa.Table.from_batches(batches, schema=schema)
