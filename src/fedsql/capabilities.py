r"""What a backend runs exactly as DuckDB would, in fedsql's own words.

A connector declares its backend's capabilities as a set of *features* named
here (``Catalog.capabilities`` on the wire); the planner pushes a construct to
an agency only if the agency declares every feature it needs, and asks
features, never a dialect's name. Which syntax each feature covers is this
module's business on both sides, so no parser's class names travel on the wire
and an agency need not upgrade in step with the coordinator's SQL parser.

>>> import sqlglot
>>> sqlite = Capabilities(ALL_FEATURES - {"plain_like", "pattern_matching"})
>>> sqlite.lacking(sqlglot.parse_one("SELECT a FROM t WHERE b LIKE 'x%'"))
'plain_like'
>>> pg = Capabilities(ALL_FEATURES - {"pattern_matching", "text_ordering"})
>>> pg.lacking(sqlglot.parse_one("SELECT a FROM t WHERE b LIKE 'x%'"))
>>> pg.lacking(sqlglot.parse_one("SELECT a FROM t WHERE b LIKE 'x\\_%'"))
'pattern_matching'
>>> pg.lacking(sqlglot.parse_one("SELECT a FROM t WHERE d >= DATE '1995-01-01' AND n < 3"))
>>> pg.lacking(sqlglot.parse_one("SELECT a FROM t WHERE name < 'm'"))
'text_ordering'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

VERSION = "1"

# A subquery reading its outer query's columns (not a node kind).
CORRELATED_SUBQUERY = "CorrelatedSubquery"


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    doc: str
    kinds: tuple[str, ...] = ()  # the syntax it covers (sqlglot kinds: never on the wire)
    applies: Callable[[exp.Expr], bool] | None = None  # ... only where this says so
    text_only: bool = False  # covers a comparison or an ORDER BY only when it is on text


def _plain_pattern(node: exp.Expr) -> bool:
    """A LIKE whose pattern is a string literal without a backslash: the same match
    in DuckDB and PostgreSQL (which escapes with backslash by default)."""
    pattern = node.expression
    return isinstance(pattern, exp.Literal) and pattern.is_string and "\\" not in pattern.name


def _negative_start(node: exp.Expr) -> bool:
    """SUBSTRING whose start is not a positive literal: PostgreSQL counts a start
    below 1 another way than DuckDB (``substr(x, -4)`` is the whole string there)."""
    start = node.args.get("start")
    return not (
        isinstance(start, exp.Literal)
        and not start.is_string
        and start.name.isdigit()
        and int(start.name) >= 1
    )


# EXTRACT parts named and counted alike by DuckDB and SQL's other engines.
_PORTABLE_PARTS = frozenset({"YEAR", "QUARTER", "MONTH", "WEEK", "DAY", "HOUR", "MINUTE"})


def _other_part(node: exp.Expr) -> bool:
    """EXTRACT of a part beyond :data:`_PORTABLE_PARTS`: sqlglot writes DuckDB's
    ``doy``/``dow`` as DAYOFYEAR/DAYOFWEEK, names PostgreSQL does not know
    (issue 14's fuzzer: ``unit "dayofyear" not recognized for type date``)."""
    unit = node.this
    return not (isinstance(unit, exp.Var) and unit.name.upper() in _PORTABLE_PARTS)


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature(
            "decimal_arithmetic",
            "arithmetic, SUM, AVG and rounding on exact decimals as DuckDB computes them",
            ("Add", "Sub", "Mul", "Div", "Mod", "IntDiv", "Pow", "Sum", "Avg", "Floor", "Ceil",
             "Round"),
        ),
        Feature(
            "dates",
            "date and time arithmetic, truncation, extraction, parsing and formatting",
            ("Extract", "Interval", "DateAdd", "DateSub", "DateDiff", "DateTrunc",
             "TimestampTrunc", "Year", "Month", "Day", "Quarter", "Week", "DayOfWeek",
             "DayOfYear", "StrToDate", "TsOrDsAdd", "TsOrDsToDate", "WeekOfYear",
             "DayOfWeekIso", "DayOfMonth", "Hour", "Minute", "Second", "Dayname", "Monthname",
             "LastDay", "DateFromParts", "TimestampFromParts", "StrToTime", "TimeToStr",
             "TimeToUnix", "UnixToTime", "DateBin", "ToDays"),
        ),
        Feature(
            "date_parts",
            "EXTRACT of parts beyond year, quarter, month, week, day, hour and minute (day "
            "of week or year, ISO parts, epoch, seconds...) named and counted as DuckDB does",
            ("Extract",),
            applies=_other_part,
        ),
        Feature("casts", "CAST and TRY_CAST with DuckDB's conversions", ("Cast", "TryCast")),
        Feature(
            "plain_like",
            "LIKE with a literal pattern free of backslashes, case-sensitive (SQLite's "
            "ignores case)",
            ("Like",),
            applies=_plain_pattern,
        ),
        Feature(
            "pattern_matching",
            "ILIKE, SIMILAR TO, LIKE with escapes or computed patterns, and regular "
            "expressions, with DuckDB's escapes, case and syntax (RE2)",
            ("Like", "ILike", "RegexpLike", "SimilarTo", "RegexpFullMatch", "RegexpExtract",
             "RegexpReplace", "Escape"),
            applies=lambda node: not (isinstance(node, exp.Like) and _plain_pattern(node)),
        ),
        Feature(
            "string_functions",
            "left, right, position, padding, splitting, reverse... as DuckDB counts characters",
            ("Left", "Right", "Repeat", "StrPosition", "Initcap", "ConcatWs", "Reverse",
             "StartsWith", "SplitPart", "Ascii", "Chr", "Pad", "BitLength"),
        ),
        Feature(
            "string_functions_extra",
            "contains, ends_with, edit distances, code points, hashes and encodings with "
            "DuckDB's result types (hex text, not bytes)",
            ("Contains", "EndsWith", "Levenshtein", "JarowinklerSimilarity", "Unicode", "MD5",
             "SHA", "SHA2", "ToBase64", "Hex"),
        ),
        Feature(
            "negative_substring",
            "SUBSTRING with a start below 1 or computed, counted from the end as DuckDB does",
            ("Substring",),
            applies=_negative_start,
        ),
        Feature(
            "unicode_case",
            "lower() and upper() of letters beyond ASCII",
            ("Lower", "Upper"),
        ),
        Feature("list_aggregates", "list() and string_agg()", ("ArrayAgg", "GroupConcat")),
        Feature(
            "statistics",
            "variance, standard deviation, median, quantiles, mode, correlation, "
            "approximate counts",
            ("Stddev", "StddevPop", "StddevSamp", "Variance", "VariancePop", "Median",
             "Quantile", "PercentileCont", "PercentileDisc", "ApproxQuantile", "ApproxDistinct",
             "Corr", "CovarPop", "CovarSamp", "Kurtosis", "Skewness", "Mode"),
        ),
        Feature(
            "extended_aggregates",
            "arg_max/arg_min, first/last, any_value, count_if, bool_and/bool_or, bit_and...",
            ("ArgMax", "ArgMin", "First", "Last", "AnyValue", "CountIf", "LogicalAnd",
             "LogicalOr", "BitwiseAndAgg", "BitwiseOrAgg", "BitwiseXorAgg"),
        ),
        Feature(
            "math_functions",
            "roots, logarithms, trigonometry, sign, greatest/least with DuckDB's NULLs",
            ("Acos", "Asin", "Atan", "Atan2", "Cos", "Sin", "Tan", "Cot", "Cbrt", "Trunc",
             "Sign", "Sqrt", "Exp", "Ln", "Log", "Pi", "Degrees", "Radians", "Factorial",
             "IsNan", "IsInf", "Greatest", "Least"),
        ),
        Feature(
            "duckdb_functions",
            "functions only DuckDB has (typeof, lists, hash, date_part..., every function "
            "the parser does not model)",
            ("Typeof", "ArrayContains", "ArraySize", "Anonymous", "Array", "Bracket", "Struct",
             "Dot", "Columns"),
        ),
        Feature(
            "text_ordering",
            "comparing and sorting text by bytes (a C collation), as DuckDB does",
            ("GT", "GTE", "LT", "LTE", "Between", "Ordered"),
            text_only=True,
        ),
        Feature(
            "qualify",
            "QUALIFY, a filter on window functions applied before the query's ORDER BY and "
            "LIMIT (sqlglot writes it for other dialects as a subquery that sorts and "
            "limits first)",
            ("Qualify",),
        ),
        Feature(
            "correlated_subqueries",
            "subqueries that read their outer query's columns",
            (CORRELATED_SUBQUERY,),
        ),
        Feature(
            "exact_expressions",
            "any expression of the fragment language computed exactly as DuckDB does, so "
            "the coordinator may ask for computed values instead of columns",
        ),
        Feature(
            "arrow_key_sets",
            "joining key sets shipped as Arrow tables (else they are written into its SQL)",
        ),
    )
}  # fmt: skip
ALL_FEATURES = frozenset(FEATURES)

# Functions of the fragment language every backend computes as DuckDB does (no
# feature needed). Every other function of the language belongs to a feature: a
# test keeps the two lists and the language in step.
CORE_FUNCTIONS = frozenset(
    {
        "Abs", "Coalesce", "Concat", "Count", "CumeDist", "CurrentDate", "CurrentTime",
        "CurrentTimestamp", "DenseRank", "FirstValue", "Grouping", "GroupingId", "Lag",
        "LastValue", "Lead", "Length", "Max", "Min", "NthValue", "Ntile", "Nullif",
        "PercentRank", "Rand", "Rank", "Replace", "RowNumber", "Trim",
    }
)  # fmt: skip

TypeOf = Callable[[exp.Column], pa.DataType | None]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The features a backend declares (all of them: it is DuckDB)."""

    features: frozenset[str] = ALL_FEATURES
    version: str = VERSION

    def has(self, feature: str) -> bool:
        return feature in self.features

    def lacking(self, tree: exp.Expr, type_of: TypeOf | None = None) -> str | None:
        """The first feature ``tree`` needs that this backend lacks (None: none).

        ``type_of``: a column's Arrow type, if known; a comparison or ORDER BY is
        on text unless one side is known not to be.
        """
        missing = [FEATURES[f] for f in sorted(ALL_FEATURES - self.features)]
        kinds: dict[str, list[Feature]] = {}
        for f in missing:
            for k in f.kinds:
                kinds.setdefault(k, []).append(f)
        if not kinds:
            return None
        for node in tree.walk():
            for f in kinds.get(type(node).__name__, ()):
                if f.text_only:
                    if _on_text(node, type_of):
                        return f.name
                elif f.applies is None or f.applies(node):
                    return f.name
        return None

    def lacking_kinds(self) -> frozenset[str]:
        """The syntax (sqlglot kinds) of the features it lacks, text-only ones left out."""
        return frozenset(
            k
            for f in FEATURES.values()
            if f.name not in self.features and not f.text_only and f.applies is None
            for k in f.kinds
        )


def _on_text(node: exp.Expr, type_of: TypeOf | None) -> bool:
    if isinstance(node, exp.Ordered):
        operands: Iterable[exp.Expr] = [_projection(node, node.this)]
    elif isinstance(node, exp.Between):
        operands = [node.this, node.args["low"], node.args["high"]]
    else:
        operands = [node.this, node.expression]
    return not any(_not_text(o, type_of) for o in operands)


def _projection(node: exp.Expr, e: exp.Expr) -> exp.Expr:
    """What an ORDER BY item stands for when it names one of the SELECT's outputs."""
    select = node.find_ancestor(exp.Select)
    if select is None or not isinstance(e, exp.Column) or e.table:
        return e
    for p in select.expressions:
        if isinstance(p, exp.Alias) and p.alias.lower() == e.name.lower():
            return p.this
    return e


def _not_text(e: exp.Expr, type_of: TypeOf | None) -> bool:
    """Known to be a number, a date or a time (not text)."""
    while isinstance(e, exp.Paren):
        e = e.this
    if isinstance(e, exp.Literal):
        return not e.is_string
    if isinstance(e, exp.Cast):
        return e.to.this not in exp.DataType.TEXT_TYPES
    if isinstance(e, exp.Column) and type_of is not None:
        t = type_of(e)
        return t is not None and not (
            pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
        )
    return isinstance(e, exp.Extract | exp.Count | exp.Length | exp.Year | exp.Month | exp.Day)


def from_kinds(unsupported: Iterable[str]) -> Capabilities:
    """Capabilities from a connector older than the feature vocabulary, which sent
    the syntax it lacks by kind: a feature is lacking if any of its kinds is."""
    lacking = set(unsupported)
    return Capabilities(
        frozenset(
            f.name
            for f in FEATURES.values()
            if not lacking.intersection(f.kinds) and f.name != "exact_expressions"
        )
    )


def first_unsupported(tree: exp.Expr, unsupported: frozenset[str]) -> str | None:
    """The first expression kind in ``tree`` that is in ``unsupported``."""
    if not unsupported:
        return None
    for node in tree.walk():
        name = type(node).__name__
        if name in unsupported:
            return name
    return None


__all__ = [
    "ALL_FEATURES",
    "CORRELATED_SUBQUERY",
    "FEATURES",
    "VERSION",
    "Capabilities",
    "Feature",
    "first_unsupported",
    "from_kinds",
]
