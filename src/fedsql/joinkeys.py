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
import math

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


def scalar_literal(v: pa.Scalar) -> exp.Expr | None:
    """A value as an exact SQL literal of its own type, or None (NULL, and types
    without one here: nested, binary, non-finite floats, zoned timestamps).

    >>> import decimal
    >>> scalar_literal(pa.scalar(decimal.Decimal("12.30"), pa.decimal128(15, 2))).sql()
    "CAST('12.30' AS DECIMAL(15, 2))"
    >>> scalar_literal(pa.scalar(0.1)).sql(), scalar_literal(pa.scalar(None, pa.int64()))
    ("CAST('0.1' AS DOUBLE)", None)
    """
    t = v.type
    if not v.is_valid:
        return None
    py = v.as_py()
    if pa.types.is_boolean(t):
        return exp.true() if py else exp.false()
    if pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return exp.convert(py)
    if pa.types.is_date(t):
        return key_literal(py)
    if pa.types.is_decimal(t) and t.precision <= 38:
        return exp.cast(exp.Literal.string(str(py)), f"DECIMAL({t.precision}, {t.scale})")
    if pa.types.is_float64(t) and math.isfinite(py):
        return exp.cast(exp.Literal.string(repr(py)), "DOUBLE")
    if pa.types.is_timestamp(t) and t.tz is None and t.unit in ("s", "ms", "us"):
        return exp.cast(exp.Literal.string(py.isoformat(sep=" ")), "TIMESTAMP")
    return None


def key_literal(v: object) -> exp.Expr:
    """One key as a SQL literal (dates as ``CAST('...' AS DATE)``)."""
    if isinstance(v, dt.date):
        return exp.cast(exp.Literal.string(v.isoformat()), "DATE")
    return exp.convert(v)
