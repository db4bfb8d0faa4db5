"""``python -m fedsql.lang``: write the fragment language reference (Markdown).

``docs/fragment-language.md`` is this output; a test keeps the two equal, so the
document is the allow-list the code enforces, never a description of it.
"""

from __future__ import annotations

import sys

from sqlglot import exp

from fedsql.lang import bounds, spec
from fedsql.lang.check import MAX_IDENTIFIER

_INTRO = """\
# The fragment language, version {version}

This is the SQL a fedsql connector accepts in a fragment, and the SQL the
coordinator accepts from analysts (who may also name tables
`agency.schema.table`). It is an **allow-list**: a fragment is parsed (DuckDB's
dialect), every node of its syntax tree must be of a kind listed here and carry
only the clauses listed for it; every function must be listed; every table name
must bind, by scope, to an exposed table, a CTE visible where it stands, or a
key set shipped with the request. Anything else is refused, and the refusal
names the construct (`PIVOT/UNPIVOT on a table is not in the fragment
language`). What then runs at the agency is generated from the checked tree and
checked again.

Generated from `src/fedsql/lang/spec.py` by `python -m fedsql.lang`; do not
edit by hand. Coordinator and connector exchange the version
(`Catalog.fragment_language`, `ExecuteRequest.fragment_language`).

## Limits, checked before any parser runs

| limit | value |
| --- | --- |
| size of a fragment or query | {max_bytes} bytes |
| tokens | {max_tokens} |
| nesting of brackets, `CASE ... END` and subqueries | {max_nesting} levels |
| prefix operators in a row (`NOT NOT ...`, `- - ...`) | {max_prefix} |
| depth of the parsed tree (each `AND`/`OR`/`+` of a chain is one level) | {max_depth} |
| length of a name | {max_ident} characters |

## What is left out, and why

- Syntax that hangs on a table reference — PIVOT/UNPIVOT, TABLESAMPLE and
  USING SAMPLE, time travel (`AT`, `VERSION`), joins in parentheses, LATERAL,
  `WITH ORDINALITY` — and table functions (`read_csv`, `range`, `unnest`, ...):
  they would run before the agency's masks and row filters, on raw rows.
- Functions that read files, settings, the environment, the catalog or the
  session (`current_setting`, `getenv`, `duckdb_settings`, `current_user`,
  `version`, ...).
- Functions that make large data out of small input (`range`,
  `generate_series`, `repeat`, `printf`/`format` widths), lambdas and list
  comprehensions, recursive CTEs: one fragment could take the node's memory.
- Parameter placeholders (the service binds parameters before planning),
  `SELECT ... INTO`, and every statement other than a query.
- Names beginning `__fedsql_` for CTEs: fedsql's own relations use them.

## Relations and clauses

Each kind, with the arguments (sqlglot's names) it may carry; an argument not
listed must be absent.

| kind | allowed arguments |
| --- | --- |
"""


def markdown() -> str:
    out = [
        _INTRO.format(
            version=spec.VERSION,
            max_bytes=bounds.MAX_SQL_BYTES,
            max_tokens=bounds.MAX_TOKENS,
            max_nesting=bounds.MAX_NESTING,
            max_prefix=bounds.MAX_PREFIX_RUN,
            max_depth=bounds.MAX_DEPTH,
            max_ident=MAX_IDENTIFIER,
        )
    ]
    for kind, args in sorted(spec.CLAUSES.items(), key=lambda kv: kv[0].__name__):
        shown = ", ".join(f"`{a}`" for a in sorted(args)) or "—"
        out.append(f"| `{kind.__name__}` | {shown} |\n")
    out.append("\nValues allowed for word arguments:\n\n| kind.argument | values |\n")
    out.append("| --- | --- |\n")
    for (kind, arg), values in sorted(spec.VALUES.items(), key=lambda kv: kv[0][0].__name__):
        out.append(f"| `{kind.__name__}.{arg}` | {', '.join(sorted(values))} |\n")
    out.append(
        "\nAlso: a table name stands only in FROM or JOIN; a subquery holds a query; "
        "`LIMIT` and `OFFSET` take a whole-number literal; casts go to these types "
        "only: " + ", ".join(sorted(t.name for t in spec.TYPES)) + ".\n"  # type: ignore[attr-defined]
    )
    out.append(
        "\n## Functions\n\nEach DuckDB spelling that sqlglot parses to one of these "
        "function kinds is accepted (e.g. `substr` and `substring` are `Substring`).\n"
    )
    for family, kinds in spec.FUNCTIONS.items():
        names = ", ".join(f"`{k.__name__}`" for k in sorted(kinds, key=lambda k: k.__name__))
        out.append(f"\n**{family}**: {names}\n")
    out.append("\nArguments with rules:\n\n")
    for (kind, arg), rule in spec.ARG_RULES.items():
        if isinstance(rule, spec.SmallInt):
            what = f"a whole-number literal of at most {rule.most}"
        else:
            what = "a string literal"
        out.append(f"- `{kind.__name__}.{arg}`: {what}\n")
    out.append(
        "\nDuckDB functions sqlglot does not model, by name, with the number of "
        "arguments they take:\n\n| function | arguments |\n| --- | --- |\n"
    )
    for name, (lo, hi) in sorted(spec.ANONYMOUS.items()):
        n = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
        out.append(f"| `{name}` | {n} |\n")
    return "".join(out)


def _check_kinds() -> None:
    for kind in spec.CLAUSES:
        assert issubclass(kind, exp.Expr), kind


if __name__ == "__main__":
    _check_kinds()
    sys.stdout.write(markdown())
