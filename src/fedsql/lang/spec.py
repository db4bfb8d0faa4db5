"""The fragment language, as data: every node kind, clause and function it accepts.

One closed list, read by the checker (``check.py``), the binder (``bind.py``)
and the documentation (``docs/fragment-language.md``, generated from this
module by ``python -m fedsql.lang``). Anything not listed here is refused with
the construct named: the list says what *is* allowed, never what is not.

The language is DuckDB's SQL, cut down to read-only relational queries over
named tables: SELECT with joins, subqueries, CTEs, set operations, grouping,
windows and ordering, and expressions built from literals, columns, operators
and the functions below. Left out on purpose:

- syntax that hangs on a table reference (PIVOT/UNPIVOT, samples, time travel,
  parenthesized joins, LATERAL, table functions): it would run before the
  agency's masks and row filters;
- functions that read files, settings, the catalog or the session, that
  produce data out of nothing (``range``, ``repeat``, ``generator``), lambdas,
  ``printf``/``format`` widths, recursive CTEs: they disclose, or let one
  fragment take the node's memory.

``VERSION`` names this list; coordinator and connector exchange it (the
Catalog's ``fragment_language`` and ExecuteRequest's ``fragment_language``).
A change that accepts less, or accepts something with another meaning, is a new
version.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp
from sqlglot.expressions import DataType

VERSION = "1"

ALL = frozenset({"*"})  # every declared argument of a function's sqlglot class


def _kinds(*names: str) -> tuple[type[exp.Expr], ...]:
    """sqlglot classes by name; a name sqlglot lacks fails at import (an upgrade
    that renames one is caught by every test, not by a refused query)."""
    return tuple(getattr(exp, n) for n in names)


# -- relations and clauses: each kind and the arguments it may carry -------------------

_QUERY_MODIFIERS = frozenset({"with_", "order", "limit", "offset"})

CLAUSES: dict[type[exp.Expr], frozenset[str]] = {
    exp.Select: frozenset(
        {"expressions", "distinct", "from_", "joins", "where", "group", "having", "qualify"}
    )
    | _QUERY_MODIFIERS,
    exp.Union: frozenset({"this", "expression", "distinct", "by_name"}) | _QUERY_MODIFIERS,
    exp.Intersect: frozenset({"this", "expression", "distinct", "by_name"}) | _QUERY_MODIFIERS,
    exp.Except: frozenset({"this", "expression", "distinct", "by_name"}) | _QUERY_MODIFIERS,
    exp.Subquery: frozenset({"this", "alias", "order", "limit", "offset"}),
    exp.With: frozenset({"expressions"}),
    exp.CTE: frozenset({"this", "alias", "materialized"}),
    exp.From: frozenset({"this"}),
    exp.Join: frozenset({"this", "on", "using", "kind", "side"}),
    exp.Table: frozenset({"this", "db", "alias"}),
    exp.TableAlias: frozenset({"this", "columns"}),
    exp.Values: frozenset({"expressions", "alias"}),
    exp.Where: frozenset({"this"}),
    exp.Having: frozenset({"this"}),
    exp.Qualify: frozenset({"this"}),
    exp.Group: frozenset({"expressions", "all", "rollup", "cube", "grouping_sets"}),
    exp.Rollup: frozenset({"expressions"}),
    exp.Cube: frozenset({"expressions"}),
    exp.GroupingSets: frozenset({"expressions"}),
    exp.Order: frozenset({"this", "expressions"}),
    exp.Ordered: frozenset({"this", "desc", "nulls_first"}),
    exp.Limit: frozenset({"expression"}),
    exp.Offset: frozenset({"expression"}),
    exp.Distinct: frozenset({"expressions", "on"}),
    exp.Window: frozenset({"this", "partition_by", "order", "spec", "over"}),
    exp.WindowSpec: frozenset({"kind", "start", "start_side", "end", "end_side"}),
    # -- names, literals, types
    exp.Identifier: frozenset({"this", "quoted"}),
    exp.Column: frozenset({"this", "table"}),
    exp.Star: frozenset({"except_", "replace"}),
    exp.Alias: frozenset({"this", "alias"}),
    exp.Literal: frozenset({"this", "is_string"}),
    exp.Null: frozenset(),
    exp.Boolean: frozenset({"this"}),
    exp.Var: frozenset({"this"}),
    exp.Interval: frozenset({"this", "unit"}),
    exp.DataType: frozenset({"this", "expressions", "nested"}),
    exp.DataTypeParam: frozenset({"this"}),
    exp.Tuple: frozenset({"expressions"}),
    exp.Paren: frozenset({"this"}),
    exp.Struct: frozenset({"expressions"}),
    exp.PropertyEQ: frozenset({"this", "expression"}),
    exp.Array: frozenset({"expressions"}),
    exp.Bracket: frozenset({"this", "expressions", "offset"}),
    exp.Slice: frozenset({"this", "expression"}),
    exp.Dot: frozenset({"this", "expression"}),
    exp.Columns: frozenset({"this"}),
    # -- operators
    **{
        k: frozenset({"this", "expression"})
        for k in _kinds(
            "And",
            "Or",
            "Xor",
            "EQ",
            "NEQ",
            "GT",
            "GTE",
            "LT",
            "LTE",
            "NullSafeEQ",
            "NullSafeNEQ",
            "Is",
            "Add",
            "Sub",
            "Mul",
            "Div",
            "IntDiv",
            "Mod",
            "BitwiseAnd",
            "BitwiseOr",
            "BitwiseXor",
            "BitwiseLeftShift",
            "BitwiseRightShift",
            "Escape",
            "Filter",
            "WithinGroup",
        )
    },  # fmt: skip
    exp.DPipe: frozenset({"this", "expression", "safe"}),
    exp.Like: frozenset({"this", "expression", "negate"}),
    exp.ILike: frozenset({"this", "expression", "negate"}),
    exp.Not: frozenset({"this"}),
    exp.Neg: frozenset({"this"}),
    exp.BitwiseNot: frozenset({"this"}),
    exp.In: frozenset({"this", "expressions", "query"}),
    exp.Between: frozenset({"this", "low", "high"}),
    exp.Exists: frozenset({"this"}),
    exp.Case: frozenset({"this", "ifs", "default"}),
    exp.If: frozenset({"this", "true", "false"}),
    exp.Cast: frozenset({"this", "to"}),
    exp.TryCast: frozenset({"this", "to", "safe"}),
    exp.IgnoreNulls: frozenset({"this"}),
    exp.RespectNulls: frozenset({"this"}),
}

# String or flag arguments restricted to these values (upper case).
VALUES: dict[tuple[type[exp.Expr], str], frozenset[str]] = {
    (exp.Join, "kind"): frozenset({"INNER", "CROSS", "OUTER", "SEMI", "ANTI"}),
    (exp.Join, "side"): frozenset({"LEFT", "RIGHT", "FULL"}),
    (exp.WindowSpec, "kind"): frozenset({"ROWS", "RANGE", "GROUPS"}),
    (exp.WindowSpec, "start_side"): frozenset({"PRECEDING", "FOLLOWING"}),
    (exp.WindowSpec, "end_side"): frozenset({"PRECEDING", "FOLLOWING"}),
    (exp.WindowSpec, "start"): frozenset({"UNBOUNDED", "CURRENT ROW"}),
    (exp.WindowSpec, "end"): frozenset({"UNBOUNDED", "CURRENT ROW"}),
    (exp.Window, "over"): frozenset({"OVER"}),
}

# What a refused argument is called in SQL, for messages.
CLAUSE_NAMES: dict[tuple[type[exp.Expr], str], str] = {
    (exp.Table, "pivots"): "PIVOT/UNPIVOT on a table",
    (exp.Subquery, "pivots"): "PIVOT/UNPIVOT on a subquery",
    (exp.Select, "pivots"): "PIVOT/UNPIVOT",
    (exp.Table, "sample"): "TABLESAMPLE",
    (exp.Select, "sample"): "USING SAMPLE",
    (exp.Subquery, "sample"): "TABLESAMPLE on a subquery",
    (exp.Table, "joins"): "a join in parentheses",
    (exp.Table, "laterals"): "LATERAL",
    (exp.Select, "laterals"): "LATERAL",
    (exp.Table, "when"): "time travel (AT ...)",
    (exp.Table, "version"): "time travel (VERSION ...)",
    (exp.Table, "system_time"): "time travel (FOR SYSTEM_TIME)",
    (exp.Table, "catalog"): "a catalog-qualified table name",
    (exp.Table, "hints"): "table hints",
    (exp.Table, "ordinality"): "WITH ORDINALITY",
    (exp.Join, "method"): "this join kind",
    (exp.Join, "match_condition"): "ASOF JOIN",
    (exp.With, "recursive"): "WITH RECURSIVE",
    (exp.Select, "into"): "SELECT ... INTO",
    (exp.Select, "kind"): "SELECT AS STRUCT/VALUE",
    (exp.Select, "windows"): "named windows (WINDOW ...)",
    (exp.Select, "locks"): "row locks (FOR UPDATE ...)",
    (exp.Select, "settings"): "query settings",
    (exp.Select, "hint"): "query hints",
    (exp.Column, "db"): "a three-part column name",
    (exp.Column, "catalog"): "a four-part column name",
    (exp.Star, "rename"): "* RENAME",
    (exp.Star, "ilike"): "* ILIKE",
    (exp.Cast, "format"): "CAST ... FORMAT",
    (exp.Limit, "limit_options"): "LIMIT ... PERCENT / WITH TIES",
    (exp.Columns, "unpack"): "*COLUMNS(...)",
    (exp.In, "unnest"): "IN UNNEST",
}

# Cast targets: scalar types only (no nested, JSON, enum or user-defined types).
TYPES: frozenset[object] = frozenset(
    getattr(DataType.Type, n)
    for n in (
        "BOOLEAN", "TINYINT", "SMALLINT", "INT", "BIGINT", "INT128", "UTINYINT", "USMALLINT",
        "UINT", "UBIGINT", "UINT128", "FLOAT", "DOUBLE", "DECIMAL", "VARCHAR", "CHAR", "TEXT",
        "DATE", "TIME", "TIMESTAMP", "TIMESTAMPNTZ", "TIMESTAMPTZ", "INTERVAL", "UUID",
        "VARBINARY", "BLOB",
    )
    if hasattr(DataType.Type, n)
)  # fmt: skip


# -- functions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmallInt:
    """The argument must be an integer literal in [0, ``most``]: it sizes the output."""

    most: int


@dataclass(frozen=True, slots=True)
class StringLiteral:
    """The argument must be a string literal (a pattern, a unit name)."""


ArgRule = SmallInt | StringLiteral

# sqlglot function classes (each DuckDB spelling that parses to it is accepted), by
# family, for the documentation. A class's arguments are all allowed, unless it
# has rules in ARG_RULES.
FUNCTIONS: dict[str, tuple[type[exp.Expr], ...]] = {
    "aggregate": _kinds(
        "Count", "Sum", "Avg", "Min", "Max", "ArrayAgg", "GroupConcat", "Median", "Mode",
        "Quantile", "PercentileCont", "PercentileDisc", "ApproxQuantile", "ApproxDistinct",
        "Stddev", "StddevPop", "StddevSamp", "Variance", "VariancePop", "Corr", "CovarPop",
        "CovarSamp", "Kurtosis", "Skewness", "ArgMax", "ArgMin", "First", "Last", "AnyValue",
        "CountIf", "LogicalAnd", "LogicalOr", "BitwiseAndAgg", "BitwiseOrAgg", "BitwiseXorAgg",
        "Grouping",
    ),
    "window": _kinds(
        "RowNumber", "Rank", "DenseRank", "PercentRank", "CumeDist", "Ntile", "Lag", "Lead",
        "FirstValue", "LastValue", "NthValue",
    ),
    "numeric": _kinds(
        "Abs", "Acos", "Asin", "Atan", "Atan2", "Cos", "Sin", "Tan", "Cot", "Cbrt", "Ceil",
        "Floor", "Round", "Trunc", "Sign", "Sqrt", "Exp", "Ln", "Log", "Pow", "Pi", "Degrees",
        "Radians", "Factorial", "Rand", "IsNan", "IsInf", "Greatest", "Least",
    ),
    "string": _kinds(
        "Length", "BitLength", "Lower", "Upper", "Initcap", "Trim", "Substring", "Left",
        "Right", "Concat", "ConcatWs", "StrPosition", "Replace", "Reverse", "Contains",
        "StartsWith", "EndsWith", "SplitPart", "RegexpLike", "RegexpFullMatch",
        "RegexpExtract", "RegexpReplace", "Levenshtein", "JarowinklerSimilarity", "Ascii",
        "Chr", "Unicode", "MD5", "SHA", "SHA2", "ToBase64", "Hex", "Pad", "SimilarTo",
    ),
    "date and time": _kinds(
        "Extract", "TimestampTrunc", "DateTrunc", "DateAdd", "DateSub", "DateDiff", "Year",
        "Month", "Day", "Quarter", "Week", "WeekOfYear", "DayOfWeek", "DayOfWeekIso",
        "DayOfMonth", "DayOfYear", "Hour", "Minute", "Second", "Dayname", "Monthname",
        "LastDay", "DateFromParts", "TimestampFromParts", "StrToTime", "StrToDate", "TimeToStr",
        "TimeToUnix", "UnixToTime", "CurrentDate", "CurrentTimestamp", "CurrentTime", "DateBin",
        "ToDays",
    ),
    "conditional and other": _kinds(
        "Coalesce", "Nullif", "Typeof", "ArrayContains", "ArraySize", "GroupingId",
    ),
}  # fmt: skip

ARG_RULES: dict[tuple[type[exp.Expr], str], ArgRule] = {
    # lpad/rpad return exactly `count` characters, whatever the input's length.
    (exp.Pad, "expression"): SmallInt(1024),
    (exp.Columns, "this"): StringLiteral(),
}

# DuckDB functions sqlglot does not model (it parses them as anonymous calls):
# name -> (fewest, most) arguments; None: no upper bound.
ANONYMOUS: dict[str, tuple[int, int | None]] = {
    "hash": (1, None),
    "md5_number": (1, 1),
    "date_part": (2, 2),
    "datepart": (2, 2),
    "date_sub": (3, 3),
    "datesub": (3, 3),
    "age": (1, 2),
    "century": (1, 1),
    "decade": (1, 1),
    "millennium": (1, 1),
    "era": (1, 1),
    "isoyear": (1, 1),
    "yearweek": (1, 1),
    "weekday": (1, 1),
    "microsecond": (1, 1),
    "millisecond": (1, 1),
    "to_years": (1, 1),
    "to_months": (1, 1),
    "to_hours": (1, 1),
    "to_minutes": (1, 1),
    "to_seconds": (1, 1),
    "now": (0, 0),
    "get_current_timestamp": (0, 0),
    "strlen": (1, 1),
    "octet_length": (1, 1),
    "ord": (1, 1),
    "prefix": (2, 2),
    "suffix": (2, 2),
    "strip_accents": (1, 1),
    "nfc_normalize": (1, 1),
    "like_escape": (3, 3),
    "ilike_escape": (3, 3),
    "damerau_levenshtein": (2, 2),
    "hamming": (2, 2),
    "base64": (1, 1),
    "even": (1, 1),
    "gamma": (1, 1),
    "lgamma": (1, 1),
    "gcd": (2, 2),
    "lcm": (2, 2),
    "isfinite": (1, 1),
    "nextafter": (2, 2),
    "signbit": (1, 1),
    "bit_count": (1, 1),
    "iff": (3, 3),
    "count_star": (0, 0),
    "fsum": (1, 1),
    "sumkahan": (1, 1),
    "product": (1, 1),
    "mean": (1, 1),
    "entropy": (1, 1),
}


def function_kinds() -> frozenset[type[exp.Expr]]:
    return frozenset(k for kinds in FUNCTIONS.values() for k in kinds)


__all__ = [
    "ALL",
    "ANONYMOUS",
    "ARG_RULES",
    "CLAUSES",
    "CLAUSE_NAMES",
    "FUNCTIONS",
    "TYPES",
    "VALUES",
    "VERSION",
    "SmallInt",
    "StringLiteral",
    "function_kinds",
]
