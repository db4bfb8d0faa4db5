"""Syntax errors in SQL terms, with the line, the column and a caret.

sqlglot reports a parse error in its own terms (``Required keyword: 'this'
missing for <class '...Where'>``); this says what is wrong in the query's.

>>> import sqlglot
>>> try:
...     sqlglot.parse_one("SELECT a FROM t WHERE", read="duckdb")
... except sqlglot.errors.ParseError as e:
...     print(explain(e, "SELECT a FROM t WHERE"))
syntax error at line 1, column 17: WHERE needs something after it
  SELECT a FROM t WHERE
                  ^
"""

from __future__ import annotations

import re

from sqlglot.errors import ParseError

_MISSING = re.compile(r"Required keyword: '(\w+)' missing for <class '[\w.]*\.(\w+)'>")
_OPERATORS = {
    "EQ": "=", "NEQ": "<>", "GT": ">", "GTE": ">=", "LT": "<", "LTE": "<=", "Add": "+",
    "Sub": "-", "Mul": "*", "Div": "/", "And": "AND", "Or": "OR", "Like": "LIKE",
    "In": "IN", "Is": "IS", "Between": "BETWEEN",
}  # fmt: skip


def explain(e: ParseError, sql: str) -> str:
    """``e`` as a message an analyst can act on."""
    if not e.errors:
        return f"syntax error: {str(e).splitlines()[0] if str(e) else 'not valid SQL'}"
    err = e.errors[0]
    line, col = int(err.get("line") or 1), int(err.get("col") or 1)
    highlight = str(err.get("highlight") or "")
    description = str(err.get("description") or "")
    m = _MISSING.match(description)
    if m:
        kind = m.group(2)
        what = _OPERATORS.get(kind, kind.upper())
        problem = f"{what} needs something after it"
    elif description.startswith("Expecting "):
        problem = f"expected {description.removeprefix('Expecting ')} before {highlight!r}"
    elif "Unexpected token" in description or "Invalid expression" in description:
        problem = f"unexpected {highlight!r}" if highlight else "unexpected end of the query"
    else:
        problem = description.split(". Line")[0]
    start = col - len(highlight) + 1 if highlight else col
    return f"syntax error at line {line}, column {max(start, 1)}: {problem}\n" + _caret(
        sql, line, max(start, 1)
    )


def _caret(sql: str, line: int, col: int) -> str:
    lines = sql.splitlines() or [""]
    text = lines[min(line, len(lines)) - 1]
    if len(text) > 120:  # a long line: a window around the place
        lo = max(0, col - 60)
        text, col = text[lo : lo + 120], col - lo
    return f"  {text}\n  {' ' * (col - 1)}^"


__all__ = ["explain"]
