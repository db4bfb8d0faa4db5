"""How a result looks as text: an aligned table, CSV, JSON lines, Markdown.

The CLI, the shell and the notebook share it."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pyarrow as pa

from fedsql.errors import FedSQLError


def _numeric(schema: pa.Schema) -> list[bool]:
    return [
        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        for f in schema
    ]


def _rows(table: pa.Table) -> list[tuple[object, ...]]:
    """Rows as tuples, by position (two columns may share a name: SELECT a.x, b.x)."""
    return list(zip(*(c.to_pylist() for c in table.columns), strict=True))


def format_table(table: pa.Table, max_rows: int = 50) -> str:
    """An aligned text table (at most ``max_rows`` rows shown)."""
    names = table.column_names
    rows = _rows(table.slice(0, max_rows))
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    numeric = _numeric(table.schema)

    def line(vals: list[str]) -> str:
        return " | ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(vals, widths, numeric, strict=True)
        ).rstrip()

    out = [line(names), "-+-".join("-" * w for w in widths)]
    out += [line(c) for c in cells]
    more = table.num_rows - len(rows)
    out.append(
        f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}"
        + (f", {more} not shown" if more > 0 else "")
        + ")"
    )
    return "\n".join(out)


def _cell(v: object) -> str:
    return "NULL" if v is None else str(v)


def csv_text(table: pa.Table) -> str:
    """CSV with a header line (Arrow's writer: strings quoted)."""
    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    try:
        pacsv.write_csv(table, sink)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise FedSQLError(f"cannot write this result as CSV ({e}): use JSON or Parquet") from None
    return str(sink.getvalue().to_pybytes().decode())


def _json_value(v: object) -> str:
    """One value as JSON; a decimal as the exact JSON number (json.dumps would need a
    float); NaN and infinities, which JSON has no number for, as null.

    >>> _json_value({"d": Decimal("711.56"), "z": [Decimal("0E-2"), None]})
    '{"d": 711.56, "z": [0.00, null]}'
    >>> _json_value([float("nan"), float("-inf"), 1.5])
    '[null, null, 1.5]'
    """
    if isinstance(v, Decimal):
        return f"{v:f}" if v.is_finite() else "null"
    if isinstance(v, float) and not math.isfinite(v):
        return "null"
    if isinstance(v, dict):
        items = (f"{json.dumps(str(k))}: {_json_value(x)}" for k, x in v.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_json_value(x) for x in v) + "]"
    return json.dumps(v, default=str)


def json_lines(table: pa.Table) -> str:
    """One JSON object a row (JSON Lines), decimals as numbers."""
    return "".join(_json_value(r) + "\n" for r in table.to_pylist())


def markdown_table(table: pa.Table) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""

    def esc(v: object) -> str:
        return _cell(v).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(esc(n) for n in table.column_names) + " |",
        "|" + "|".join("---:" if num else "---" for num in _numeric(table.schema)) + "|",
    ]
    lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in _rows(table)]
    return "\n".join(lines) + "\n"


# `fedsql shell`'s result modes besides "table" (.mode)
RESULT_FORMATS = {"csv": csv_text, "json": json_lines, "markdown": markdown_table}
