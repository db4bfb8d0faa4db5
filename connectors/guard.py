"""The fragment check: one read-only SELECT over exposed tables, nothing else.

A connector never trusts the coordinator. Every fragment is parsed with
sqlglot, checked here against an allow-list of shapes, and then *regenerated*
from the checked tree, so what runs on the backend is exactly what was checked
(no parser differential between sqlglot and the backend).

>>> from fedsql.connectors.guard import check_fragment
>>> check_fragment("SELECT a FROM t WHERE a > 1", {("", "t")}).sql()
'SELECT a FROM t WHERE a > 1'
>>> check_fragment("SELECT * FROM read_csv('/etc/passwd')", {("", "t")})
Traceback (most recent call last):
...
fedsql.errors.RefusedFragment: table function READ_CSV is not allowed; name an exposed table
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from fedsql.errors import RefusedFragment

MAX_SQL_BYTES = 1 << 20
MAX_NODES = 200_000

# Statement and clause kinds that are never allowed anywhere in a fragment.
_FORBIDDEN_NODES: tuple[type[exp.Expr], ...] = tuple(
    getattr(exp, n)
    for n in (
        "Command",
        "Pragma",
        "Set",
        "Insert",
        "Update",
        "Delete",
        "Merge",
        "Create",
        "Drop",
        "Alter",
        "Copy",
        "Attach",
        "Detach",
        "Install",
        "Use",
        "Into",
        "Transaction",
        "Commit",
        "Rollback",
        "LoadData",
        "Describe",
        "Summarize",
        "Export",
        "Kill",
        "TruncateTable",
        "Grant",
        "Revoke",
        "Analyze",
        "Refresh",
        "Cache",
        "Uncache",
    )
    if hasattr(exp, n)
)

# current_* functions tell who and where the backend is (its database user, role,
# database, schemas, session, version): nothing an analyst needs, and a start for
# an attacker. Only the clock ones are allowed.
_CLOCK_FUNCTIONS = frozenset(
    {
        "current_date",
        "current_time",
        "current_timestamp",
        "current_datetime",
        "current_timestamp_ltz",
        "current_timezone",
    }
)
_SESSION_FUNCTIONS = frozenset({"session_user", "user", "version", "current_version"})


def _session_function(name: str) -> bool:
    if name.startswith("current_"):
        return name not in _CLOCK_FUNCTIONS
    return name in _SESSION_FUNCTIONS


# Functions that read files, URLs, settings, the environment or the catalog.
_FORBIDDEN_PREFIXES = (
    "read_",
    "parquet_",
    "duckdb_",
    "pragma_",
    "sqlite_",
    "postgres_",
    "mysql_",
    "iceberg_",
    "delta_",
    "glob",
    "sniff_",
    "http",
    "s3",
    "load",
    "install",
    "which_secret",
    "icu_",
    "pg_",
    "has_",
    "current_setting",
    "getenv",
    "getvariable",
    "query",
    "nextval",
    "currval",
    "setseed",
    "system",
    "checkpoint",
    "force_checkpoint",
    "test_",
    "enable_",
    "disable_",
    "arrow_scan",
    "seq_scan",
    "table_info",
    "show",
    "summary",
    "json_execute",
    "import_database",
    "export_database",
    "copy",
    "repeat_row",
    "range",  # range/generate_series: table functions, and as list functions an
    "generate_series",  # unbounded allocation (range(1e12)) that could take the node down
    "unnest_file",
)

# Functions sqlglot does not model (parsed as Anonymous) that are known safe.
_SAFE_ANONYMOUS = frozenset(
    [
        "abs",
        "acos",
        "asin",
        "atan",
        "atan2",
        "bit_count",
        "bit_length",
        "cbrt",
        "ceil",
        "ceiling",
        "chr",
        "cos",
        "cot",
        "degrees",
        "even",
        "exp",
        "factorial",
        "floor",
        "gamma",
        "greatest",
        "least",
        "lgamma",
        "ln",
        "log",
        "log10",
        "log2",
        "nextafter",
        "pi",
        "pow",
        "power",
        "radians",
        "random",
        "round",
        "sign",
        "signbit",
        "sin",
        "sqrt",
        "tan",
        "trunc",
        "xor",
        "ascii",
        "bar",
        "base64",
        "concat",
        "concat_ws",
        "contains",
        "ends_with",
        "format",
        "instr",
        "lcase",
        "left",
        "length",
        "levenshtein",
        "like_escape",
        "lower",
        "lpad",
        "ltrim",
        "md5",
        "md5_number",
        "nfc_normalize",
        "ord",
        "position",
        "prefix",
        "printf",
        "repeat",
        "replace",
        "reverse",
        "right",
        "rpad",
        "rtrim",
        "sha1",
        "sha256",
        "split_part",
        "starts_with",
        "strip_accents",
        "string_split",
        "strlen",
        "strpos",
        "substr",
        "substring",
        "suffix",
        "to_base64",
        "translate",
        "trim",
        "ucase",
        "unicode",
        "upper",
        "age",
        "date_add",
        "date_diff",
        "date_part",
        "date_sub",
        "date_trunc",
        "datediff",
        "datepart",
        "datesub",
        "datetrunc",
        "day",
        "dayname",
        "dayofmonth",
        "dayofweek",
        "dayofyear",
        "epoch",
        "epoch_ms",
        "era",
        "hour",
        "isodow",
        "isoyear",
        "last_day",
        "make_date",
        "make_time",
        "make_timestamp",
        "microsecond",
        "millisecond",
        "minute",
        "month",
        "monthname",
        "quarter",
        "second",
        "strftime",
        "strptime",
        "time_bucket",
        "to_days",
        "to_hours",
        "to_minutes",
        "to_months",
        "to_seconds",
        "to_timestamp",
        "to_years",
        "week",
        "weekday",
        "weekofyear",
        "year",
        "yearweek",
        "any_value",
        "arg_max",
        "arg_min",
        "avg",
        "bit_and",
        "bit_or",
        "bit_xor",
        "bool_and",
        "bool_or",
        "count",
        "count_star",
        "first",
        "last",
        "list",
        "max",
        "min",
        "product",
        "sum",
        "string_agg",
        "median",
        "mode",
        "quantile",
        "quantile_cont",
        "quantile_disc",
        "stddev",
        "stddev_pop",
        "stddev_samp",
        "var_pop",
        "var_samp",
        "variance",
        "corr",
        "covar_pop",
        "covar_samp",
        "entropy",
        "kurtosis",
        "skewness",
        "approx_count_distinct",
        "fsum",
        "coalesce",
        "ifnull",
        "nullif",
        "hash",
        "isnan",
        "isinf",
        "isfinite",
        "typeof",
        "list_value",
        "struct_pack",
        "row_number",
        "rank",
        "dense_rank",
        "percent_rank",
        "cume_dist",
        "ntile",
        "lag",
        "lead",
        "first_value",
        "last_value",
        "nth_value",
    ]
)

_SCHEMA_ALIASES = ("", "main")
# Set on each checked Table node that reads an exposed table: its exposed name.
EXPOSED_META = "fedsql_exposed"


def _refuse(msg: str) -> RefusedFragment:
    return RefusedFragment(msg)


def _func_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def check_fragment(  # noqa: C901
    sql: str,
    exposed: set[tuple[str, str]],
    default_schemas: tuple[str, ...] = _SCHEMA_ALIASES,
    key_sets: frozenset[str] = frozenset(),
) -> exp.Query:
    """Parse and check one fragment; return the checked tree.

    ``exposed`` holds (schema, table) pairs in lower case, schema "" for the
    backend's default schema. Raises :class:`RefusedFragment` saying why.
    """
    if len(sql.encode("utf-8", "replace")) > MAX_SQL_BYTES:
        raise _refuse(f"fragment is larger than {MAX_SQL_BYTES} bytes")
    try:
        statements = sqlglot.parse(sql, read="duckdb")
    except (ParseError, TokenError) as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise _refuse(f"fragment is not valid SQL: {first}") from None
    except RecursionError:
        raise _refuse("fragment is nested too deeply") from None
    present = [s for s in statements if s is not None]
    if len(present) != 1:
        raise _refuse(f"a fragment must be exactly one statement, got {len(present)}")
    tree = present[0]
    if not isinstance(tree, exp.Query) or isinstance(tree, exp.Subquery):
        kind = tree.key.upper()
        raise _refuse(f"only a read-only SELECT is allowed, got {kind}")

    cte_names: set[str] = set()
    exposed_names = {name for _, name in exposed}
    for cte in tree.find_all(exp.CTE):
        name = cte.alias_or_name.lower()
        if name in exposed_names:
            # A CTE named like a table would shadow it in some places and not in
            # others (its own body); refuse rather than guess which one is meant.
            raise _refuse(f"a CTE may not be named like the exposed table {name}")
        cte_names.add(name)

    for count, node in enumerate(tree.walk()):
        if count >= MAX_NODES:
            raise _refuse("fragment is too large")
        if isinstance(node, _FORBIDDEN_NODES):
            raise _refuse(f"{node.key.upper()} is not allowed in a fragment")
        if isinstance(node, exp.Table):
            if not node.db and node.name in key_sets and isinstance(node.this, exp.Identifier):
                continue  # join keys shipped with this very request
            _check_table(node, exposed, cte_names, default_schemas)
        elif isinstance(node, exp.Func):
            name = _func_name(node)
            if isinstance(node, exp.Anonymous) and name not in _SAFE_ANONYMOUS:
                raise _refuse(f"function {name} is not allowed")
            if name.startswith(_FORBIDDEN_PREFIXES) or _session_function(name):
                raise _refuse(f"function {name} is not allowed")
    return tree


def _check_table(
    node: exp.Table, exposed: set[tuple[str, str]], ctes: set[str], default_schemas: tuple[str, ...]
) -> None:
    this = node.this
    if not isinstance(this, exp.Identifier):
        what = this.sql_name() if isinstance(this, exp.Func) else type(this).__name__
        raise _refuse(f"table function {what} is not allowed; name an exposed table")
    if node.args.get("catalog") is not None:
        raise _refuse(f"catalog-qualified table {node.sql()} is not allowed")
    name = this.name.lower()
    schema = node.db.lower() if node.db else ""
    if not schema and name in ctes:
        return
    if (schema, name) in exposed:
        node.meta[EXPOSED_META] = f"{schema}.{name}" if schema else name
        return
    if (schema in default_schemas or not schema) and ("", name) in exposed:
        node.set("db", None)  # the backend's default schema, named its own way
        node.meta[EXPOSED_META] = name
        return
    shown = f"{schema}.{name}" if schema else name
    raise RefusedFragment(f"table {shown} is not exposed by this connector")
