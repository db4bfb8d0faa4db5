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

import difflib
import re

from sqlglot.errors import ParseError

_MISSING = re.compile(r"Required keyword: '(\w+)' missing for <class '[\w.]*\.(\w+)'>")
_OPERATORS = {
    "EQ": "=", "NEQ": "<>", "GT": ">", "GTE": ">=", "LT": "<", "LTE": "<=", "Add": "+",
    "Sub": "-", "Mul": "*", "Div": "/", "And": "AND", "Or": "OR", "Like": "LIKE",
    "In": "IN", "Is": "IS", "Between": "BETWEEN",
}  # fmt: skip


_STARTS = ("SELECT", "WITH", "VALUES", "FROM", "TABLE", "SHOW", "DESCRIBE", "EXPLAIN")
_FIRST_WORD = re.compile(r"\s*([A-Za-z_]\w*)")


def explain(e: ParseError, sql: str) -> str:
    """``e`` as a message an analyst can act on.

    >>> print(explain(ParseError("x"), "SELEC 1"))
    syntax error at line 1, column 1: 'SELEC' starts no query (did you mean SELECT?)
      SELEC 1
      ^
    """
    first = _first_word(sql)
    if first is not None:
        return first
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


def _first_word(sql: str) -> str | None:
    """The message for a query whose first word starts no statement, else None."""
    m = _FIRST_WORD.match(sql)
    if m is None or m.group(1).upper() in _STARTS:
        return None
    word = m.group(1)
    close = difflib.get_close_matches(word.upper(), _STARTS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else " (a query starts with SELECT or WITH)"
    line = sql.count("\n", 0, m.start(1)) + 1
    col = m.start(1) - (sql.rfind("\n", 0, m.start(1)) + 1) + 1
    return f"syntax error at line {line}, column {col}: {word!r} starts no query{hint}\n" + _caret(
        sql, line, col
    )


def _caret(sql: str, line: int, col: int) -> str:
    lines = sql.splitlines() or [""]
    text = lines[min(line, len(lines)) - 1]
    if len(text) > 120:  # a long line: a window around the place
        lo = max(0, col - 60)
        text, col = text[lo : lo + 120], col - lo
    return f"  {text}\n  {' ' * (col - 1)}^"


__all__ = ["explain"]
