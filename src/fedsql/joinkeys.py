"""Join keys written into SQL: the key types that have a literal form, and that form.

Used by the coordinator (a few keys inline as an ``IN`` list, or a key range)
and by PostgreSQL/SQLite connectors (a key set written into the backend's query).

>>> import datetime as dt, pyarrow as pa
>>> inlinable_keys(pa.int32()), inlinable_keys(pa.float64())
(True, False)
>>> key_literal(dt.date(1995, 3, 15)).sql(), key_literal("R").sql()
("CAST('1995-03-15' AS DATE)", "'R'")
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from sqlglot import exp


def inlinable_keys(t: pa.DataType) -> bool:
    """Key types with an exact SQL literal here (the others travel to non-DuckDB
    backends as a range)."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_date(t)
    )


def key_literal(v: object) -> exp.Expr:
    """One key as a SQL literal (dates as ``CAST('...' AS DATE)``)."""
    if isinstance(v, dt.date):
        return exp.cast(exp.Literal.string(v.isoformat()), "DATE")
    return exp.convert(v)
