"""A generator of hostile SQL in DuckDB's syntax, for the canary leak fuzzer.

Pure: no I/O, every choice drawn from the ``random.Random`` passed in, so a
seed replays the same queries (no set iteration, no hashing of str).

The grammar composes, recursively and with bounded depth, the SELECT forms
DuckDB parses (its grammar, ``third_party/libpg_query/grammar/statements/
select.y``, and the "Friendly SQL" pages of duckdb.org/docs/sql/dialect):
FROM-first queries, PIVOT/UNPIVOT, samples, time travel, every join kind,
LATERAL, table functions, files and internal names as tables, nested and
recursive CTEs whose names shadow or escape their scope, lambdas and list
comprehensions, COLUMNS(...) and star modifiers, QUALIFY and window frames,
struct/map/list access, casts and functions whose errors may quote a value,
set operations, subqueries of every kind, functions that read settings, the
environment or the catalog, and odd comments, quoting and whitespace. A share
of the queries is benign (plain selects, joins, aggregates and filters over
the masked tables), so that masks and filters are exercised on answers too.

>>> import random
>>> sql = generate(random.Random(1), demo_schema(), ("CANARY-guess",))
>>> sql == generate(random.Random(1), demo_schema(), ("CANARY-guess",))
True
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

# Construct families; every one is tagged where the grammar emits it.
FAMILIES = (
    "benign",
    "from_first",
    "pivot",
    "unpivot",
    "pivot_guess",
    "sample",
    "at_version",
    "paren_join",
    "positional_join",
    "asof_join",
    "lateral",
    "join",
    "table_function",
    "path_table",
    "internal_name",
    "hidden_table",
    "cte",
    "cte_nested",
    "cte_recursive",
    "cte_shadow",
    "cte_escape",
    "oracle",
    "lambda",
    "comprehension",
    "columns",
    "star_modifier",
    "qualify",
    "window",
    "access",
    "cast",
    "error",
    "setop",
    "subquery_scalar",
    "subquery_in",
    "subquery_exists",
    "subquery_correlated",
    "derived",
    "values",
    "string_fn",
    "aggregate",
    "settings",
    "comments",
    "quoting",
    "deep",
)

DEFAULT_PATHS = (
    "host.csv",
    "host.json",
    "host.jsonl",
    "host.parquet",
    "../host.parquet",
    "/etc/passwd",
    "/etc/hostname",
    "/proc/self/environ",
    "/tmp/canary.csv",
    "people.csv",
    "salaries.csv",
    "salaries.parquet",
    "data/people.parquet",
    "./secret.json",
    "../secret.jsonl",
    "../../canary.parquet",
    "~/.pgpass",
    "file:///etc/passwd",
    "*.csv",
    "**/*.parquet",
)
DEFAULT_INTERNAL = (
    "__fedsql_scan0",
    "__fedsql_keys0",
    "__fedsql_keys1",
    "__fedsql_f0",
    "duckdb_settings",
    "duckdb_databases",
    "duckdb_tables",
    "sqlite_master",
    "sqlite_schema",
    "pg_settings",
    "pg_roles",
    "pg_shadow",
    "information_schema.tables",
    "information_schema.columns",
    "pg_catalog.pg_class",
    "pg_catalog.pg_tables",
    "main.people",
    "memory.main.people",
    "system.main.x",
    "temp.main.x",
    "public.people",
)
_SETTINGS = (
    "home_directory",
    "temp_directory",
    "secret_directory",
    "extension_directory",
    "enable_external_access",
    "lock_configuration",
    "allowed_directories",
    "allowed_paths",
    "file_search_path",
    "search_path",
    "memory_limit",
    "threads",
    "custom_user_agent",
)
_ENV_VARS = ("HOME", "PATH", "USER", "PWD", "FEDSQL_HASH_KEY", "PGPASSWORD", "PGHOST")
_WS = ("\t", "\n", "  ", "\r\n", " /**/ ", " /* */ ", " -- c\n", "\f", " /* ; */ ")

# Types as the generator sees them: int, num, text, date, other.
_TEXT, _INT, _NUM, _DATE = "text", "int", "num", "date"


# Templates: {x} a (preferably masked) column, {y} another, {g} a guess, {n} a number.
_ARITH = (
    "+", "-", "*", "/", "%", "//",
)  # fmt: skip
_STRING_FN = (
    "substr({x}, 1, 3)", "substring({x}, 2)", "reverse({x})", "lower({x})", "upper({x})",
    "md5({x})", "sha256({x})", "hash({x})", "concat({x}, '')", "({x} || '')",
    "printf('%s', {x})", "format('{}', {x})", "repeat({x}, 2)", "left({x}, 4)", "right({x}, 4)",
    "length({x})", "ascii({x})", "instr({x}, 'a')", "contains({x}, 'a')",
    "starts_with({x}, {g})", "regexp_extract({x}, '.*')", "regexp_replace({x}, '(.)', '\\1 ')",
    "split_part({x}, '-', 1)", "string_split({x}, '')", "to_base64(encode({x}))",
    "replace({x}, 'a', 'b')", "translate({x}, 'abc', 'xyz')", "lpad({x}, 40, '*')", "trim({x})",
    "concat_ws('|', {x}, {x})", "strlen({x})", "hex({x})", "levenshtein({x}, {g})",
    "jaccard({x}, {g})", "({x} = {g})", "unicode({x})", "({x})[1:3]",
    "array_to_string([{x}], ',')", "json_object('v', {x})", "to_json({x})", "md5_number({x})",
    "bit_length({x})", "({x} ^@ {g})",
)  # fmt: skip
_AGGREGATE = (
    "string_agg({x}, ',')", "string_agg({x}::VARCHAR, ',' ORDER BY {y})", "list({x})",
    "array_agg({x})", "min({x})", "max({x})", "first({x})", "arg_max({x}, {y})",
    "histogram({x})", "mode({x})", "count(DISTINCT {x})", "group_concat({x})",
    "list_distinct(list({x}))", "any_value({x})", "max({x}) FILTER (WHERE {y} IS NOT NULL)",
    "bit_xor(hash({x}))",
)  # fmt: skip
_CAST = (
    "CAST({x} AS INTEGER)", "{x}::DATE", "TRY_CAST({x} AS BIGINT)",
    "CAST({x} AS DECIMAL(2, 1))", "{x}::TINYINT", "CAST({x} AS BLOB)", "CAST({x} AS UUID)",
    "{x}::INTERVAL", "{x}::JSON", "CAST({x} AS TIMESTAMP)", "{x}::BOOLEAN",
    "CAST({x} AS INTEGER[])", "CAST({x} AS STRUCT(a INTEGER))", "{x}::ENUM('a', 'b')",
    "{x}::BIT", "{x}::HUGEINT", "CAST({x} AS MAP(VARCHAR, INTEGER))", "{x}::VARCHAR::DOUBLE",
    "CAST({x} AS TIME)", "{x}::UTINYINT",
)  # fmt: skip
_ERROR = (
    "error({x})", "error(concat('v=', {x}))",
    "CASE WHEN {x} IS NOT NULL THEN error({x}::VARCHAR) END", "(1 // 0)", "({n} // 0)",
    "({n}::INTEGER % 0)", "({n} * 9223372036854775807)", "({n}::BIGINT + 9223372036854775807)",
    "CAST({n} AS TINYINT)", "json_extract({x}::VARCHAR, '$.a')",
    "strptime({x}::VARCHAR, '%Y-%m-%d')", "regexp_matches('a', {x}::VARCHAR)",
    "date_part({x}::VARCHAR, DATE '2000-01-01')", "strftime(DATE '2000-01-01', {x}::VARCHAR)",
    "printf({x}::VARCHAR)", "format({x}::VARCHAR)",
    "from_json({x}::VARCHAR, '{\"a\": \"INTEGER\"}')", "make_date(2000, 13, {n}::INTEGER)",
    "list_element([1], {x}::INTEGER)", "power(10, 400)::BIGINT", "unhex({x}::VARCHAR)::VARCHAR",
    "decode({x}::VARCHAR::BLOB)", "{x}::VARCHAR::TIMESTAMP",
    "CAST({x}::VARCHAR AS INTEGER) + 1", "enum_range({x}::VARCHAR::ENUM('a'))",
    "array_extract({x}::VARCHAR, 1000)", "to_timestamp({x}::VARCHAR::DOUBLE)",
    "nextval({x}::VARCHAR)", "getvariable({x}::VARCHAR)", "current_setting({x}::VARCHAR)",
)  # fmt: skip
_LAMBDA = (
    "list_transform([{x}], v -> v)", "list_transform([{x}::VARCHAR], v -> reverse(v))",
    "list_filter([{x}::VARCHAR, {g}], v -> v = {g})",
    "list_reduce([{x}::VARCHAR, 'a'], (a, b) -> a || b)", "list_apply([{x}], lambda v: v)",
    "list_transform([1, 2], v -> {x})", "apply([{x}::VARCHAR], v -> error(v))",
    "list_transform([{x}::VARCHAR], v -> (SELECT v))",
    "array_filter([{x}::VARCHAR], lambda v: v LIKE '%')",
    "list_sort(list_transform([{x}], v -> v::VARCHAR))",
)  # fmt: skip
_ACCESS = (
    "{'a': {x}}.a", "struct_pack(a := {x}).a", "struct_extract({'k': {x}}, 'k')",
    "MAP {'k': {x}}['k']", "map_extract(MAP {{x}: 1}, {x})", "map_keys(MAP {{x}: 1})",
    "element_at(MAP {'k': {x}}, 'k')", "[{x}][1]", "[{x}, {g}][1:1]", "list_extract([{x}], 1)",
    "{'a': [{x}]}.a[1]", "row({x}, 1)", "unnest([{x}])", "unnest({'a': {x}})", "({'a': {x}}).a",
    "[{x}][-1]",
)  # fmt: skip
_WINDOW = (
    "row_number()", "first_value({x})", "last_value({x})", "lag({x}, 1)", "lead({x})",
    "nth_value({x}, 2)", "string_agg({x}::VARCHAR, ',')", "list({x})", "count(*)", "max({x})",
)  # fmt: skip
_SETOP = (
    "UNION", "UNION ALL", "UNION BY NAME", "UNION ALL BY NAME", "INTERSECT", "EXCEPT",
    "INTERSECT ALL", "EXCEPT ALL",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str = _TEXT  # int | num | text | date | other: the type the caller sees
    mask: str = ""  # mask rule applied for the caller ("" = none)


@dataclass(frozen=True, slots=True)
class Table:
    name: str  # as the target names it: "people" (connector) or "duck.people" (analyst)
    columns: tuple[Column, ...]
    row_filtered: bool = False

    @property
    def base(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class Schema:
    """What the target exposes, and what an attacker might try beyond it."""

    tables: tuple[Table, ...]
    hidden: tuple[str, ...] = ("salaries", "secrets")  # unexposed table names
    paths: tuple[str, ...] = DEFAULT_PATHS  # host files
    internal: tuple[str, ...] = DEFAULT_INTERNAL  # internal names worth a guess
    qualifiers: tuple[str, ...] = ()  # agency names, for an analyst's target


@dataclass(frozen=True, slots=True)
class Case:
    sql: str
    families: frozenset[str]
    benign: bool


def demo_schema(agencies: tuple[str, ...] = ()) -> Schema:
    """people/visits as the canary federation has them (per agency when given)."""
    people = (
        Column("id", _INT),
        Column("name", _TEXT, "partial"),
        Column("national_id", _TEXT, "hash"),
        Column("email", _TEXT, "email"),
        Column("region", _TEXT),
        Column("salary", _NUM, "bucket"),
        Column("birth_date", _DATE, "year"),
    )
    visits = (
        Column("id", _INT),
        Column("person_id", _INT),
        Column("visit_date", _DATE),
        Column("note", _TEXT),
    )
    prefixes = tuple(f"{a}." for a in agencies) or ("",)
    tables = tuple(
        t
        for p in prefixes
        for t in (Table(f"{p}people", people, True), Table(f"{p}visits", visits))
    )
    return Schema(tables, qualifiers=agencies)


def lit_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


@dataclass(slots=True)
class _Rel:
    alias: str
    columns: tuple[Column, ...]


@dataclass(slots=True)
class _Gen:
    r: random.Random
    s: Schema
    guesses: tuple[str, ...]
    tags: set[str] = field(default_factory=set)
    n: int = 0
    ctes: list[str] = field(default_factory=list)  # CTE names visible here
    escapes: list[str] = field(default_factory=list)  # names defined in an inner scope
    tame: bool = False  # only common constructs: hostile in what they compute, not in syntax

    # -- helpers ---------------------------------------------------------------
    def p(self, prob: float) -> bool:
        return self.r.random() < prob

    def pick(self, seq):  # type: ignore[no-untyped-def]
        return seq[self.r.randrange(len(seq))]

    def alias(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def tag(self, *names: str) -> None:
        self.tags.update(names)

    def guess(self) -> str:
        return self.pick(self.guesses)

    def table(self) -> Table:
        return self.pick(self.s.tables)

    def col(self, scope: list[_Rel], masked: float = 0.6, like: str = "") -> tuple[str, Column]:
        """A column reference from scope (masked ones preferred; of type ``like`` if any)."""
        if not scope:
            return self.pick(("1", "'a'", lit_str(self.guess()))), Column("x")
        rel = self.pick(scope)
        cols = rel.columns
        if like and self.p(0.8):
            cols = tuple(c for c in cols if c.type == like) or cols
        hot = [c for c in cols if c.mask]
        c = self.pick(hot) if hot and self.p(masked) else self.pick(cols)
        name = c.name if c.name.isidentifier() else ident(c.name)
        if rel.alias and (len(scope) > 1 or self.p(0.8)):
            return f"{rel.alias}.{name}", c
        return name, c

    def typed(self, scope: list[_Rel], kinds: tuple[str, ...]) -> str:
        for _ in range(4):
            sql, c = self.col(scope)
            if c.type in kinds:
                return sql
        return "1" if _TEXT not in kinds else "'a'"

    def lit(self, type_: str = "") -> str:
        """A literal, of the type given most of the time."""
        if type_ in (_INT, _NUM) and self.p(0.8):
            return str(self.r.randrange(-3, 100))
        if type_ == _DATE and self.p(0.8):
            return "DATE '2000-01-01'"
        if type_ == _TEXT and self.p(0.8):
            return self.pick(("'a'", lit_str(self.guess()), lit_str(self.guess()[:3] + "%")))
        k = self.r.randrange(7)
        return (
            str(self.r.randrange(-3, 100)),
            "'a'",
            lit_str(self.guess()),
            "NULL",
            "DATE '2000-01-01'",
            "1.5",
            lit_str(self.guess()[:3] + "%"),
        )[k]

    def table_name(self, t: Table) -> str:
        """An exposed table, spelled one of the ways DuckDB reads it."""
        parts = t.name.split(".")
        k = self.r.randrange(10)
        if k == 0:
            self.tag("quoting")
            return ".".join(ident(p) for p in parts)
        if k == 1:
            self.tag("quoting")
            return t.name.upper()
        if k == 2:
            self.tag("quoting")
            return ".".join([*parts[:-1], "main", parts[-1]])
        return t.name

    def qualify_guess(self, name: str) -> str:
        if self.s.qualifiers and self.p(0.5):
            return f"{self.pick(self.s.qualifiers)}.{name}"
        return name

    # -- expressions -----------------------------------------------------------
    def expr(self, scope: list[_Rel], depth: int) -> str:
        if depth >= 3:
            return self.col(scope)[0] if self.p(0.7) else self.lit()
        k = self.r.randrange(20)
        d = depth + 1
        if self.tame and k in (8, 10):  # lambdas, settings
            k = 4
        if k <= 2:
            return self.col(scope)[0]
        if k == 3:
            return self.lit()
        if k in (4, 5):
            return self.string_fn(scope, d)
        if k == 6:
            return self.cast(scope, d)
        if k == 7:
            return self.error(scope, d)
        if k == 8:
            return self.lambda_(scope, d)
        if k == 9:
            return self.access(scope, d)
        if k == 10:
            return self.settings()
        if k == 11:
            self.tag("subquery_scalar")
            return f"({self.select(d, limit=True)})"
        if k == 12:
            return self.correlated(scope, d)
        if k == 13:
            return self.window(scope, d)
        if k == 14:
            return self.aggregate(scope, d)
        if k == 15:
            return (
                f"CASE WHEN {self.pred(scope, d)} THEN {self.expr(scope, d)} ELSE {self.lit()} END"
            )
        if k == 16:
            if self.p(0.5):
                return f"concat({self.expr(scope, d)}, {self.expr(scope, d)})"
            op = self.pick(_ARITH)
            a, b = self.typed(scope, (_INT, _NUM)), self.typed(scope, (_INT, _NUM))
            return f"({a} {op} {b})"
        if k == 17:
            return f"coalesce({self.expr(scope, d)}, {self.lit()})"
        if k == 18:
            return f"({self.pred(scope, d)})"
        return self.expr(scope, d)

    def pred(self, scope: list[_Rel], depth: int) -> str:
        d = depth + 1
        k = self.r.randrange(14 if depth < 3 else 5)
        x, c = self.col(scope)
        v = x if c.type == _TEXT else f"{x}::VARCHAR"
        if k == 0:
            return f"{v} = {lit_str(self.guess())}"
        if k == 1:
            return f"{v} LIKE {lit_str(self.guess()[:4] + '%')}"
        if k == 2:
            return f"{x} IS NOT NULL"
        if k == 3:
            op = self.pick(("<", ">", "<>", ">=", "IS DISTINCT FROM"))
            return f"{x} {op} {self.lit(c.type)}"
        if k == 4:
            return f"starts_with({x}::VARCHAR, {lit_str(self.guess()[:2])})"
        if k == 5:
            self.tag("subquery_in")
            return f"{x} IN ({self.select(d, ncols=1)})"
        if k == 6:
            self.tag("subquery_exists")
            return f"{'NOT ' if self.p(0.3) else ''}EXISTS ({self.select(d)})"
        if k == 7:
            return f"({self.pred(scope, d)} {self.pick(('AND', 'OR'))} {self.pred(scope, d)})"
        if k == 8:
            return f"{self.expr(scope, d)}::VARCHAR = {self.expr(scope, d)}::VARCHAR"
        if k == 9:
            return self.correlated(scope, d, exists=True)
        if k == 10:
            self.tag("subquery_in")
            return f"{x} = ANY ({self.select(d, ncols=1)})"
        if k == 12:
            # raises on some row: on a hidden one, if the row filter is not applied first
            return f"({self.error(scope, d)})::VARCHAR IS NOT NULL"
        if k == 13:
            self.tag("error", "cast")
            return f"CAST(concat({x}, 'x') AS INTEGER) = 1"
        return f"regexp_matches({x}::VARCHAR, {lit_str('^' + self.guess()[:3])})"

    def string_fn(self, scope: list[_Rel], depth: int) -> str:
        self.tag("string_fn")
        x = self.col(scope, masked=0.9)[0]
        if self.p(0.3):
            x = f"{x}::VARCHAR"
        g = lit_str(self.guess())
        t = self.pick(_STRING_FN)
        return t.replace("{x}", x).replace("{g}", g)

    def aggregate(self, scope: list[_Rel], depth: int) -> str:
        self.tag("aggregate", "string_fn")
        x = self.col(scope, masked=0.9)[0]
        y = self.col(scope)[0]
        t = self.pick(_AGGREGATE)
        return t.replace("{x}", x).replace("{y}", y)

    def cast(self, scope: list[_Rel], depth: int) -> str:
        self.tag("cast")
        x = self.col(scope, masked=0.9)[0]
        t = self.pick(_CAST)
        return t.replace("{x}", x)

    def error(self, scope: list[_Rel], depth: int) -> str:
        """Expressions whose failure message may quote the value they fail on."""
        self.tag("error")
        x = self.col(scope, masked=0.7)[0]  # unmasked too: hidden rows hold markers everywhere
        n = self.typed(scope, (_INT, _NUM))
        t = self.pick(_ERROR)
        return t.replace("{x}", x).replace("{n}", n)

    def lambda_(self, scope: list[_Rel], depth: int) -> str:
        x = self.col(scope, masked=0.9)[0]
        g = lit_str(self.guess())
        if self.p(0.35):
            self.tag("comprehension")
            t = self.pick(
                (
                    "[v || '' FOR v IN [{x}::VARCHAR]]",
                    "[v FOR v IN [{x}::VARCHAR, {g}] IF v = {g}]",
                    "[upper(v) FOR v IN string_split({x}::VARCHAR, '')]",
                    "[{x} FOR v IN range(2)]",
                    "[error(v) FOR v IN [{x}::VARCHAR]]",
                )
            )
        else:
            self.tag("lambda")
            t = self.pick(_LAMBDA)
        if self.p(0.7):
            t = re.sub(r"\(?(\w+(?:, \w+)?)\)? -> ", lambda m: f"lambda {m.group(1)}: ", t)
        return t.replace("{x}", x).replace("{g}", g)

    def access(self, scope: list[_Rel], depth: int) -> str:
        self.tag("access")
        x = self.col(scope, masked=0.9)[0]
        g = lit_str(self.guess())
        t = self.pick(_ACCESS)
        return t.replace("{x}", x).replace("{g}", g)

    def settings(self) -> str:
        self.tag("settings")
        p = lit_str(self.pick(self.s.paths))
        h = self.pick(self.s.hidden)
        t = self.pick(
            (
                f"current_setting({lit_str(self.pick(_SETTINGS))})",
                f"getenv({lit_str(self.pick(_ENV_VARS))})",
                "getvariable('x')",
                "current_database()",
                "current_schema()",
                "current_user",
                "version()",
                "(SELECT string_agg(name || '=' || value, ',') FROM duckdb_settings())",
                "(SELECT string_agg(path, ',') FROM duckdb_databases())",
                "(SELECT string_agg(sql, ';') FROM duckdb_tables())",
                "(SELECT string_agg(table_name, ',') FROM information_schema.tables)",
                "(SELECT string_agg(file, ',') FROM pragma_database_list())",
                "(SELECT sql FROM sqlite_master LIMIT 1)",
                "(SELECT setting FROM pg_settings LIMIT 1)",
                "(SELECT rolname FROM pg_roles LIMIT 1)",
                "(SELECT string_agg(name, ',') FROM duckdb_secrets())",
                "(SELECT count(*) FROM duckdb_extensions())",
                f"(SELECT content FROM read_text({p}))",
                "(SELECT count(*) FROM glob('*'))",
                f"(SELECT count(*) FROM pragma_table_info({lit_str(h)}))",
                "(SELECT string_agg(column_name, ',') FROM duckdb_columns())",
                "which_secret('s3://x/y', 's3')",
                "(SELECT string_agg(name, ',') FROM duckdb_variables())",
                "(SELECT count(*) FROM duckdb_temporary_files())",
                "pg_backend_pid()",
                "txid_current()",
            )
        )
        return t

    def correlated(self, scope: list[_Rel], depth: int, exists: bool = False) -> str:
        self.tag("subquery_correlated")
        t = self.table()
        a = self.alias()
        inner = _Rel(a, t.columns)
        outer = self.col(scope)[0]
        ic = self.col([inner], masked=0.8)[0]
        cond = f"{ic} = {outer}"
        if exists:
            self.tag("subquery_exists")
            return f"EXISTS (SELECT 1 FROM {self.table_name(t)} AS {a} WHERE {cond})"
        agg = self.pick(("max", "min", "first", "string_agg", "count"))
        arg = f"{ic}, ','" if agg == "string_agg" else ic
        return f"(SELECT {agg}({arg}) FROM {self.table_name(t)} AS {a} WHERE {cond})"

    def window(self, scope: list[_Rel], depth: int) -> str:
        self.tag("window")
        x = self.col(scope, masked=0.9)[0]
        y = self.col(scope)[0]
        frame = self.pick(
            (
                "",
                " ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING",
                " ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING EXCLUDE CURRENT ROW",
                " RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
                " GROUPS BETWEEN 1 PRECEDING AND CURRENT ROW EXCLUDE TIES",
            )
        )
        fn = self.pick(_WINDOW).replace("{x}", x)
        part = f"PARTITION BY {self.col(scope)[0]} " if self.p(0.5) else ""
        return f"{fn} OVER ({part}ORDER BY {y}{frame})"

    # -- FROM ------------------------------------------------------------------
    def base(self) -> tuple[str, _Rel]:
        t = self.table()
        a = self.alias()
        sql = f"{self.table_name(t)} AS {a}"
        if self.tame:
            pass
        elif self.p(0.1):
            self.tag("sample")
            sql += self.pick(
                (
                    " TABLESAMPLE 50%",
                    " TABLESAMPLE reservoir(3 ROWS) REPEATABLE (7)",
                    " TABLESAMPLE SYSTEM (90)",
                    " TABLESAMPLE 2 ROWS",
                )
            )
        elif self.p(0.02):
            self.tag("at_version")
            sql += self.pick((" AT (VERSION => 1)", " AT (TIMESTAMP => now())"))
        return sql, _Rel(a, t.columns)

    def from_item(self, depth: int) -> tuple[str, list[_Rel]]:
        if depth >= 3:
            sql, rel = self.base()
            return sql, [rel]
        k = self.r.randrange(26)
        d = depth + 1
        if self.tame and k in (7, 8, 9, 10, 11, 13, 14, 21):
            k = 0
        a = self.alias()
        unknown = (Column("x"), Column("column0"), Column("name"), Column("value"))
        if k <= 6:
            sql, rel = self.base()
            return sql, [rel]
        if k == 7:
            self.tag("hidden_table")
            h = self.qualify_guess(self.pick(self.s.hidden))
            return f"{h} AS {a}", [_Rel(a, unknown)]
        if k == 8:
            self.tag("internal_name")
            name = self.pick(self.s.internal)
            if self.p(0.3):
                self.tag("quoting")
                name = ident(name)
            elif self.p(0.3):
                name = f"{name}()"
            return f"{self.qualify_guess(name)} AS {a}", [_Rel(a, unknown)]
        if k == 9:
            self.tag("path_table")
            path = self.pick(self.s.paths)
            name = lit_str(path) if self.p(0.6) else ident(path)
            return f"{self.qualify_guess(name)} AS {a}", [_Rel(a, unknown)]
        if k in (10, 11):
            return self.table_function(a), [_Rel(a, unknown)]
        if k == 12:
            self.tag("derived")
            sql, cols = self.select_cols(d)
            return f"({sql}) AS {a}", [_Rel(a, cols)]
        if k == 13:
            return self.pivot(d)
        if k == 14:
            self.tag("paren_join")
            sql, scope = self.joins(d, at_least=1, paren=True)
            return f"({sql})", scope
        if k == 15:
            return self.oracle_values(a)
        if k == 16 and self.ctes:
            self.tag("cte")
            name = self.pick(self.ctes)
            t = self.table()
            return f"{name} AS {a}", [_Rel(a, t.columns)]
        if k == 17 and self.escapes:
            self.tag("cte_escape")
            name = self.pick(self.escapes)
            return f"{name} AS {a}", [_Rel(a, unknown)]
        if k == 18:
            self.tag("derived", "cte_nested")
            inner = self.alias()
            t = self.table()
            x = self.col([_Rel("", t.columns)], masked=0.9)[0]
            self.escapes.append(inner)
            return (
                f"(WITH {inner} AS (SELECT {x} FROM {self.table_name(t)}) SELECT * FROM {inner})"
                f" AS {a}",
                [_Rel(a, t.columns)],
            )
        if k == 19:
            self.tag("from_first", "derived")
            t = self.table()
            return f"(FROM {self.table_name(t)}) AS {a}", [_Rel(a, t.columns)]
        if k == 20:
            self.tag("setop", "derived")
            return f"({self.setop(d)}) AS {a}", [_Rel(a, self.table().columns)]
        if k == 21:
            return self.deep_from(a)
        sql, rel = self.base()
        return sql, [rel]

    def table_function(self, a: str) -> str:
        self.tag("table_function")
        p = lit_str(self.pick(self.s.paths))
        p2 = lit_str(self.pick(self.s.paths))
        h = self.pick(self.s.hidden)
        t = self.table()
        inner = self.pick(
            (
                f"SELECT * FROM {h}",
                f"SELECT * FROM {t.name}",
                f"SELECT {self.pick([c.name for c in t.columns if c.mask] or ['1'])} FROM {t.name}",
                "SELECT * FROM duckdb_settings()",
                f"SELECT * FROM read_csv({p})",
            )
        )
        fn = self.pick(
            (
                f"read_csv({p})",
                f"read_csv_auto({p}, header = false)",
                f"read_csv([{p}, {p2}], union_by_name = true)",
                f"read_csv({p}, columns = {{'a': 'VARCHAR'}}, sep = '\\x01')",
                f"read_parquet({p})",
                f"read_json({p})",
                f"read_json_auto({p})",
                f"read_ndjson({p})",
                f"read_text({p})",
                f"read_blob({p})",
                f"sniff_csv({p})",
                f"parquet_metadata({p})",
                f"parquet_schema({p})",
                f"glob({lit_str(self.pick(('*', '/*', '../*', '**/*', '/etc/*')))})",
                "range(3)",
                "range(1, 4, 1)",
                "generate_series(1, 3)",
                f"unnest([{lit_str(self.guess())}, 'a'])",
                f"query({lit_str(inner)})",
                f"query_table({lit_str(h)})",
                f"query_table({lit_str(t.name)})",
                f"query_table([{lit_str(t.name)}, {lit_str(h)}], true)",
                "duckdb_settings()",
                "duckdb_databases()",
                "duckdb_tables()",
                "duckdb_columns()",
                "duckdb_secrets()",
                "pragma_database_list()",
                f"pragma_table_info({lit_str(h)})",
                f"pragma_storage_info({lit_str(t.name)})",
                f"sqlite_scan({p}, {lit_str(h)})",
                f"postgres_scan('', 'public', {lit_str(h)})",
                "json_each('{\"a\": 1}')",
                "duckdb_functions()",
                "test_all_types()",
            )
        )
        return f"{fn} AS {a}"

    def pivot(self, depth: int) -> tuple[str, list[_Rel]]:
        t = self.table()
        a = self.alias()
        cols = t.columns
        on = self.pick(cols).name
        x = self.pick([c.name for c in cols if c.mask] or [c.name for c in cols])
        agg = self.pick(("count(*)", f"max({x})", f"string_agg({x}, ',')", f"first({x})"))
        g = ident(self.guess())
        unknown = [_Rel(a, (Column("x"), Column("value"), Column("name")))]
        in_list = ""
        if self.p(0.5):
            self.tag("pivot_guess")
            items = [f"{self.lit()} AS {g}", self.lit()]
            if self.p(0.4):
                items[0] = f"{x} AS {g}"
            in_list = f" IN ({', '.join(items)})"
        k = self.r.randrange(4)
        if k == 0:
            self.tag("pivot", "derived")
            grp = f" GROUP BY {self.pick(cols).name}" if self.p(0.5) else ""
            return f"(PIVOT {self.table_name(t)} ON {on}{in_list} USING {agg}{grp}) AS {a}", unknown
        if k == 1:
            self.tag("pivot")
            if not in_list:
                in_list = f" IN ({self.lit()})"
            body = f"{agg} FOR {on}{in_list}"
            return f"{self.table_name(t)} PIVOT ({body}) AS {a}", unknown
        first = self.pick(cols)  # UNPIVOT wants one type: two columns of the first one's
        c1 = first.name
        c2 = self.pick([c.name for c in cols if c.type == first.type and c.name != c1] or [c1])
        self.tag("unpivot")
        if k == 2:
            on_cols = self.pick((f"{c1}, {c2}", "COLUMNS(*)", f"* EXCLUDE ({c1})"))
            return (
                f"(UNPIVOT {self.table_name(t)} ON {on_cols} INTO NAME k VALUE v) AS {a}",
                unknown,
            )
        self.tag("pivot_guess")
        first = f"{c1} AS {g}" if self.p(0.7) else c1
        return f"{self.table_name(t)} UNPIVOT (v FOR k IN ({first}, {c2})) AS {a}", unknown

    def oracle_values(self, a: str) -> tuple[str, list[_Rel]]:
        """A derived table named like an exposed one, holding guesses in masked columns:
        if a policy view wraps it by name, the mask is an oracle for the guesses."""
        self.tag("oracle", "values")
        t = self.table()
        cols = t.columns
        names = ", ".join(c.name for c in cols)
        row = ", ".join(lit_str(self.guess()) if c.mask or c.type == _TEXT else "1" for c in cols)
        if self.p(0.5):
            sql = f"(VALUES ({row})) AS {t.base}({names})"
        else:
            body = ", ".join(
                f"{lit_str(self.guess()) if c.mask or c.type == _TEXT else '1'} AS {c.name}"
                for c in cols
            )
            sql = f"(SELECT {body}) AS {t.base}"
        return sql, [_Rel(t.base, cols)]

    def deep_from(self, a: str) -> tuple[str, list[_Rel]]:
        self.tag("deep", "derived")
        t = self.table()
        depth = self.r.randrange(8, 60)
        sql = self.table_name(t)
        for i in range(depth):
            sql = f"(SELECT * FROM {sql} AS d{i})"
        return f"{sql} AS {a}", [_Rel(a, t.columns)]

    def joins(self, depth: int, at_least: int = 0, paren: bool = False) -> tuple[str, list[_Rel]]:
        sql, scope = self.from_item(depth)
        for _ in range(self.r.randrange(at_least, 3)):
            self.tag("join")
            k = self.r.randrange(12)
            if self.tame and k in (0, 1, 2, 5, 6, 7):
                k = 11
            if paren and k in (0, 3):  # no comma inside a parenthesised join
                k = 4 if k == 3 else 11
            if k == 0:
                self.tag("lateral")
                b = self.alias()
                x = self.col(scope, masked=0.9)[0]
                form = self.pick(
                    (
                        f", LATERAL (SELECT {x} AS v) AS {b}",
                        f" CROSS JOIN LATERAL (SELECT {self.expr(scope, depth + 1)} AS v) AS {b}",
                        f", LATERAL unnest([{x}]) AS {b}(v)",
                        f" JOIN LATERAL (SELECT {x} AS v) AS {b} ON true",
                    )
                )
                sql += form
                scope = [*scope, _Rel(b, (Column("v"),))]
                continue
            rsql, rscope = self.from_item(depth + 1)
            on = self.join_cond(scope, rscope)
            if k == 1:
                self.tag("positional_join")
                sql += f" POSITIONAL JOIN {rsql}"
            elif k == 2:
                self.tag("asof_join")
                lo, clo = self.col(scope)
                hi = self.col(rscope, like=clo.type)[0]
                sql += f" ASOF {'LEFT ' if self.p(0.3) else ''}JOIN {rsql} ON {on} AND {lo} >= {hi}"
            elif k == 3:
                sql += f", {rsql}"
            elif k == 4:
                sql += f" CROSS JOIN {rsql}"
            elif k == 5:
                sql += f" NATURAL JOIN {rsql}"
            elif k == 6:
                sql += f" {self.pick(('SEMI', 'ANTI'))} JOIN {rsql} ON {on}"
            elif k == 7:
                sql += f" JOIN {rsql} USING ({self.pick(('id', 'region'))})"
            else:
                kind = self.pick(("", "LEFT ", "RIGHT ", "FULL OUTER ", "INNER "))
                sql += f" {kind}JOIN {rsql} ON {on}"
            scope = [*scope, *rscope]
        return sql, scope

    def join_cond(self, left: list[_Rel], right: list[_Rel]) -> str:
        a, ca = self.col(left, masked=0.3)
        b, cb = self.col(right, masked=0.3, like=ca.type)
        return f"{a} = {b}"

    # -- SELECT ----------------------------------------------------------------
    def projection(self, scope: list[_Rel], depth: int) -> str:
        k = self.r.randrange(14)
        if self.tame and k in (2, 3):
            k = 13
        if k == 0:
            return "*"
        if k == 1 and scope:
            return f"{self.pick(scope).alias}.*"
        if k == 2:
            self.tag("star_modifier")
            c = self.col(scope)[1].name
            return self.pick(
                (
                    f"* EXCLUDE ({c})",
                    f"* REPLACE ({self.expr(scope, depth)} AS {c})",
                    f"* RENAME ({c} AS {ident(self.guess())})",
                    "* LIKE '%a%'",
                    f"* REPLACE ({self.string_fn(scope, depth)} AS {c})",
                )
            )
        if k == 3:
            self.tag("columns")
            c = self.col(scope)[1].name
            return self.pick(
                (
                    "COLUMNS('.*')",
                    "COLUMNS('nat.*|sal.*|.*mail')",
                    "COLUMNS(c -> c LIKE '%id%')",
                    "COLUMNS(lambda c: c ILIKE 'n%')",
                    "COLUMNS(*)::VARCHAR",
                    "max(COLUMNS(*))",
                    f"COLUMNS([{lit_str(c)}])",
                    f"COLUMNS(* EXCLUDE ({c}))",
                    "upper(COLUMNS(*)::VARCHAR)",
                    "COLUMNS('(.*)') AS \"\\1_x\"",
                    "list(COLUMNS(*))",
                    "reverse(COLUMNS(*)::VARCHAR)",
                )
            )
        e = self.expr(scope, depth)
        if self.p(0.3):
            name = ident(self.guess()) if self.p(0.3) else f"c{self.r.randrange(9)}"
            return f"{e} AS {name}"
        return e

    def select_cols(self, depth: int) -> tuple[str, tuple[Column, ...]]:
        """A SELECT whose output columns are known: a table's columns, transformed."""
        t = self.table()
        a = self.alias()
        scope = [_Rel(a, t.columns)]
        cols = [c for c in t.columns if self.p(0.6)] or [t.columns[0]]
        items = []
        for c in cols:
            e = f"{a}.{c.name}"
            if c.mask and self.p(0.4):
                e = self.pick(
                    (self.string_fn(scope, depth), self.cast(scope, depth), f"{e}::VARCHAR")
                )
            items.append(f"{e} AS {c.name}")
        where = f" WHERE {self.pred(scope, depth)}" if self.p(0.4) else ""
        return f"SELECT {', '.join(items)} FROM {self.table_name(t)} AS {a}{where}", tuple(cols)

    def select(self, depth: int, ncols: int = 0, limit: bool = False, bare: bool = False) -> str:
        """One SELECT core (or FROM-first query)."""
        if depth >= 4:
            t = self.table()
            c = self.pick(t.columns).name
            return f"SELECT {c} FROM {self.table_name(t)}" + (" LIMIT 1" if limit else "")
        from_sql, scope = self.joins(depth)
        n = ncols or self.r.randrange(1, 4)
        proj = ", ".join(
            self.projection(scope, depth) if not ncols else self.expr(scope, depth)
            for _ in range(n)
        )
        tail = ""
        if self.p(0.4):
            tail += f" WHERE {self.pred(scope, depth)}"
        if self.p(0.15):
            grp = "ALL" if self.p(0.7) else self.col(scope)[0]
            tail += f" GROUP BY {grp}"
            if self.p(0.3):
                tail += f" HAVING {self.aggregate(scope, depth)} IS NOT NULL"
        if self.p(0.1):
            self.tag("qualify", "window")
            tail += f" QUALIFY {self.window(scope, depth)} = 1"
        if not self.tame and self.p(0.05):
            self.tag("sample")
            tail += self.pick((" USING SAMPLE 5 ROWS", " USING SAMPLE 50% (bernoulli, 4)"))
        if not bare and self.p(0.15):
            tail += f" ORDER BY {self.pick(('ALL', '1', self.col(scope)[0]))}"
        if limit:
            tail += " LIMIT 1"
        elif not bare and self.p(0.15):
            tail += f" LIMIT {self.r.randrange(1, 20)}"
        distinct = "DISTINCT " if self.p(0.08) else ""
        if self.p(0.15):
            self.tag("from_first")
            if not ncols and self.p(0.3):
                return f"FROM {from_sql}{tail}"
            return f"FROM {from_sql} SELECT {distinct}{proj}{tail}"
        return f"SELECT {distinct}{proj} FROM {from_sql}{tail}"

    def setop(self, depth: int) -> str:
        self.tag("setop")
        op = self.pick(_SETOP)
        if self.p(0.3):  # parenthesised operands may carry ORDER BY / LIMIT
            left, right = self.select(depth + 1), self.select(depth + 1)
            return f"({left}) {op} ({right})"
        left, right = self.select(depth + 1, bare=True), self.select(depth + 1, bare=True)
        return f"{left} {op} {right}"

    def with_clause(self, depth: int) -> str:
        """CTEs: plain, nested, recursive, materialized, shadowing and escaping."""
        self.tag("cte")
        ctes: list[str] = []
        recursive = False
        used: set[str] = set()
        for _ in range(self.r.randrange(1, 3)):
            k = self.r.randrange(8)
            if self.tame and k == 0:
                k = 7
            name = f"w{self.alias()[1:]}"
            if k == 0:
                self.tag("cte_recursive")
                recursive = True
                t = self.table()
                x = self.pick([c.name for c in t.columns if c.mask] or [t.columns[0].name])
                body = self.pick(
                    (
                        "SELECT 1 UNION ALL SELECT n + 1 FROM {r} WHERE n < 3",
                        f"SELECT {x}, 1 FROM {self.table_name(t)}"
                        " UNION ALL SELECT v, n + 1 FROM {r} WHERE n < 2",
                        f"SELECT {x}::VARCHAR, 1 FROM {self.table_name(t)}"
                        " UNION SELECT reverse(v), n + 1 FROM {r} WHERE n < 2",
                    )
                )
                cols = "(n)" if body.startswith("SELECT 1 ") else "(v, n)"
                key = " USING KEY (n)" if cols == "(n)" and self.p(0.2) else ""
                ctes.append(f"{name}{cols}{key} AS ({body.replace('{r}', name)})")
            elif k == 1:
                # a CTE named like an exposed table, holding guesses in masked columns
                self.tag("cte_shadow", "oracle")
                t = self.table()
                body = ", ".join(
                    f"{lit_str(self.guess()) if c.mask or c.type == _TEXT else '1'} AS {c.name}"
                    for c in t.columns
                )
                name = t.base if self.p(0.7) else ident(t.name)
                if name.strip('"').lower() in used:
                    continue
                used.add(name.strip('"').lower())
                ctes.append(f"{name} AS (SELECT {body})")
                self.ctes.append(name)
            elif k == 2:
                # shadowing a table with itself, or a hidden/internal name
                self.tag("cte_shadow")
                t = self.table()
                name = self.pick(
                    (t.base, self.pick(self.s.hidden), ident(self.pick(self.s.internal)))
                )
                if name.strip('"').lower() in used:
                    continue
                used.add(name.strip('"').lower())
                ctes.append(f"{name} AS (SELECT * FROM {self.table_name(t)})")
                self.ctes.append(name)
            elif k == 3:
                # defined inside a nested WITH: must not be visible outside it
                self.tag("cte_nested", "cte_escape")
                inner = self.pick(
                    (
                        ident(self.pick(self.s.hidden)),
                        ident(self.pick(self.s.internal)),
                        ident(self.table().base),
                        f"i{self.r.randrange(3)}",
                    )
                )
                t = self.table()
                x = self.pick([c.name for c in t.columns if c.mask] or [t.columns[0].name])
                body = self.pick(
                    (
                        "SELECT 1",
                        f"SELECT {x} FROM {self.table_name(t)}",
                        f"SELECT {lit_str(self.guess())} AS {x}",
                    )
                )
                ctes.append(f"z{self.alias()[1:]} AS (WITH {inner} AS ({body}) SELECT 1)")
                self.escapes.append(inner)
            elif k == 4:
                self.tag("cte_nested")
                inner, _ = self.select_cols(depth + 1)
                ctes.append(
                    f"{name} AS (WITH x{self.r.randrange(3)} AS ({inner}) {self.select(depth + 1)})"
                )
                self.ctes.append(name)
            else:
                mat = self.pick(("", "", "MATERIALIZED ", "NOT MATERIALIZED "))
                ctes.append(f"{name} AS {mat}({self.select(depth + 1)})")
                self.ctes.append(name)
        if not ctes:
            ctes.append(f"w{self.alias()[1:]} AS (SELECT 1 AS x)")
        return f"WITH {'RECURSIVE ' if recursive else ''}{', '.join(ctes)} "

    def query(self, depth: int = 0) -> str:
        prefix = self.with_clause(depth) if self.p(0.3) else ""
        if self.escapes and prefix and self.p(0.7):
            self.tag("cte_escape")
            name = self.pick(self.escapes)
            body = f"SELECT * FROM {name}"
        elif self.p(0.12):
            body = self.setop(depth)
        elif not self.tame and self.p(0.04):
            body = self.deep_expr()
        else:
            body = self.select(depth)
        return prefix + body

    def focused(self) -> str:
        """One hostile construct over one table, so that it reaches execution."""
        k = self.r.randrange(4)
        if k <= 1:
            sql, rel = self.base()
            items = ", ".join(self.projection([rel], 2) for _ in range(self.r.randrange(1, 3)))
            where = f" WHERE {self.pred([rel], 2)}" if self.p(0.3) else ""
            return f"SELECT {items} FROM {sql}{where}"
        if k == 2:
            from_sql, scope = self.from_item(2)
            proj = "*" if self.p(0.5) else self.projection(scope, 3)  # unknown columns: *
            return f"SELECT {proj} FROM {from_sql}"
        prefix = self.with_clause(3)
        names = self.escapes or self.ctes
        if names and self.p(0.8):
            if self.escapes:
                self.tag("cte_escape")
            return f"{prefix}SELECT * FROM {self.pick(names)}"
        return prefix + self.select(3)

    def deep_expr(self) -> str:
        self.tag("deep")
        t = self.table()
        x = self.pick([c.name for c in t.columns if c.mask] or [t.columns[0].name])
        n = self.r.randrange(10, 80)
        k = self.r.randrange(4)
        if k == 0:
            e = "(" * n + x + ")" * n
        elif k == 1:
            e = x
            for _ in range(n // 4):
                e = f"list_transform([{e}], v -> v)[1]"
        elif k == 2:
            e = "NOT " * n + f"({x} IS NULL)"
        else:
            e = x
            for _ in range(n // 4):
                e = f"(SELECT {e})"
        return f"SELECT {e} FROM {self.table_name(t)}"

    # -- benign ------------------------------------------------------------------
    def benign(self) -> str:
        """Plain queries that a correct guard answers (masked values, filtered rows)."""
        self.tag("benign")
        t = self.table()
        k = self.r.randrange(5)
        cols = t.columns
        if k == 0:
            pick = [c.name for c in cols if self.p(0.5)] or [cols[0].name]
            where = f" WHERE {self.benign_pred(t, '')}" if self.p(0.5) else ""
            return f"SELECT {', '.join(pick)} FROM {t.name}{where} ORDER BY 1 LIMIT 20"
        if k == 1:
            g = self.pick([c.name for c in cols if c.type == _TEXT and c.mask != "hash"] or ["id"])
            aggs = ["count(*) AS n"]
            nums = [c.name for c in cols if c.type in (_INT, _NUM)]
            if nums:
                aggs.append(f"{self.pick(('sum', 'avg', 'min', 'max'))}({self.pick(nums)}) AS s")
            return f"SELECT {g}, {', '.join(aggs)} FROM {t.name} GROUP BY {g} ORDER BY {g}"
        if k == 2:
            return f"SELECT count(*) FROM {t.name} WHERE {self.benign_pred(t, '')}"
        other = self.table()
        key = _join_key(t, other)
        if key is None:
            return f"SELECT * FROM {t.name} ORDER BY 1 LIMIT 5"
        lk, rk = key
        a = [f"a.{c.name}" for c in t.columns if self.p(0.4)] or [f"a.{lk}"]
        b = [f"b.{c.name} AS b_{c.name}" for c in other.columns if self.p(0.3)]
        kind = self.pick(("JOIN", "LEFT JOIN"))
        on = f"a.{lk} = b.{rk}"
        sql = f"SELECT {', '.join(a + b)} FROM {t.name} AS a {kind} {other.name} AS b ON {on}"
        if k == 4:
            sql = (
                f"SELECT a.{lk}, count(*) AS n FROM {t.name} AS a JOIN {other.name} AS b"
                f" ON a.{lk} = b.{rk} GROUP BY a.{lk} ORDER BY a.{lk} LIMIT 20"
            )
        return sql

    def benign_pred(self, t: Table, q: str) -> str:
        c = self.pick(t.columns)
        name = f"{q}{c.name}"
        if c.mask == "hash" or c.type not in (_INT, _NUM, _DATE, _TEXT):
            return f"{name} IS NOT NULL"
        if c.type in (_INT, _NUM):
            return f"{name} {self.pick(('>', '<', '>=', '<>'))} {self.r.randrange(0, 100)}"
        if c.type == _DATE:
            return f"{name} >= DATE '1970-01-01'"
        return self.pick(
            (f"{name} LIKE '%a%'", f"{name} <> 'x'", f"lower({name}) = 'north'", f"{name} IS NULL")
        )


def _join_key(a: Table, b: Table) -> tuple[str, str] | None:
    """Columns to join two tables on: the same name and type, or id = <a>_id."""
    for ca in a.columns:
        for cb in b.columns:
            if ca.mask or cb.mask or ca.type != cb.type or ca.type not in (_INT, _TEXT):
                continue
            if ca.name == "id" and cb.name.endswith("_id"):
                return ca.name, cb.name
            if cb.name == "id" and ca.name.endswith("_id"):
                return ca.name, cb.name
    for ca in a.columns:
        for cb in b.columns:
            if ca.name == cb.name and ca.type == cb.type and not ca.mask and not cb.mask:
                return ca.name, cb.name
    return None


def _decorate(g: _Gen, sql: str) -> str:
    """Comments and odd whitespace between tokens (never inside quotes)."""
    g.tag("comments")
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            out.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        if ch == " " and g.p(0.25):
            out.append(g.pick(_WS))
        else:
            out.append(ch)
    text = "".join(out)
    if g.p(0.3):
        text = f"/* {g.guess()} */ {text}"
    if g.p(0.3):
        text += g.pick((" -- trailing", ";", " ;  ", "\n"))
    return text


BENIGN_SHARE = 0.25  # plain queries a correct guard answers
TAME_SHARE = 0.3  # of the hostile ones: common syntax only (reaches the engines more often)
FOCUSED_SHARE = 0.4  # of the hostile ones: a single construct over one table


def generate_case(rng: random.Random, schema: Schema, guesses: tuple[str, ...]) -> Case:
    """One query and what it is made of (its construct families, whether it is benign)."""
    g = _Gen(rng, schema, tuple(guesses) or ("CANARY-guess",))
    if g.p(BENIGN_SHARE):
        return Case(g.benign(), frozenset(g.tags), True)
    g.tame = g.p(TAME_SHARE)
    sql = g.focused() if g.p(FOCUSED_SHARE) else g.query()
    if g.p(0.12):
        sql = _decorate(g, sql)
    return Case(sql, frozenset(g.tags), False)


def generate(rng: random.Random, schema: Schema, guesses: tuple[str, ...]) -> str:
    """One query, hostile or benign."""
    return generate_case(rng, schema, guesses).sql


def cases(seed: int, n: int, schema: Schema, guesses: tuple[str, ...] = ()) -> list[Case]:
    rng = random.Random(seed)
    return [generate_case(rng, schema, guesses) for _ in range(n)]


def queries(seed: int, n: int, schema: Schema, guesses: tuple[str, ...] = ()) -> list[str]:
    return [c.sql for c in cases(seed, n, schema, guesses)]
