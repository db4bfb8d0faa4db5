"""Each mask rule as a SQL expression over the raw column, plus the type checks.

Every rule keeps NULL as NULL. ``hash`` calls ``fedsql_hash``, a function the
node registers in its own DuckDB with the federation's secret key; fragments
may never call it themselves (the guard refuses unknown functions), so the key
cannot be used for dictionary attacks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import sqlglot
from sqlglot import exp

from fedsql.errors import ConfigError
from fedsql.policy.model import Mask

HASH_FUNCTION = "fedsql_hash"
HASH_KEY_ENV = "FEDSQL_HASH_KEY"
MIN_KEY_BYTES = 16


def is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _is_temporal(t: pa.DataType) -> bool:
    return pa.types.is_date(t) or pa.types.is_timestamp(t)


def check_type(mask: Mask, t: pa.DataType) -> str | None:
    """Why ``mask`` does not fit a column of Arrow type ``t`` (None when it fits)."""
    if mask.rule in ("partial", "email") and not is_string(t):
        return f"rule '{mask.rule}' needs a text column, '{mask.column}' is {t}"
    if mask.rule == "year" and not _is_temporal(t):
        return f"rule 'year' needs a date or timestamp column, '{mask.column}' is {t}"
    if mask.rule == "bucket" and not _is_numeric(t):
        return f"rule 'bucket' needs a numeric column, '{mask.column}' is {t}"
    return None


def masked_type(mask: Mask, t: pa.DataType) -> pa.DataType:
    """The Arrow type a masked column has (``hash`` makes text)."""
    return pa.string() if mask.rule == "hash" else t


def duckdb_type(t: pa.DataType) -> str:
    """DuckDB's name for an Arrow type (the types a mask needs to keep)."""
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision}, {t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    names = {
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.uint8(): "UTINYINT",
        pa.uint16(): "USMALLINT",
        pa.uint32(): "UINTEGER",
        pa.uint64(): "UBIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.date32(): "DATE",
        pa.date64(): "DATE",
    }
    try:
        return names[t]
    except KeyError:
        raise ConfigError(f"no DuckDB type for Arrow type {t}") from None


def _typed_null(col: exp.Expr) -> exp.Expr:
    # CASE WHEN FALSE THEN col END: a NULL of exactly the column's type.
    return exp.Case(ifs=[exp.If(this=exp.false(), true=col.copy())])


def mask_sql(mask: Mask, col: exp.Expr, t: pa.DataType) -> exp.Expr:
    """The SQL (DuckDB dialect) that masks column expression ``col`` of type ``t``."""
    c = col.sql(dialect="duckdb")
    if mask.rule == "null":
        return _typed_null(col)
    if mask.rule == "redact":
        if is_string(t):
            sql = f"CASE WHEN {c} IS NULL THEN NULL ELSE '***' END"
        else:
            return _typed_null(col)
    elif mask.rule == "hash":
        sql = f"{HASH_FUNCTION}(CAST({c} AS VARCHAR))"
    elif mask.rule == "partial":
        kf, kl = mask.keep_first, mask.keep_last
        keep = kf + kl
        sql = (
            f"CASE WHEN {c} IS NULL THEN NULL "
            f"WHEN length({c}) <= {keep} THEN repeat('*', length({c})) "
            f"ELSE left({c}, {kf}) || repeat('*', length({c}) - {keep}) || right({c}, {kl}) END"
        )
    elif mask.rule == "email":
        sql = (
            f"CASE WHEN {c} IS NULL THEN NULL "
            f"WHEN strpos({c}, '@') > 1 "
            f"THEN left({c}, 1) || '***' || substr({c}, strpos({c}, '@')) "
            f"ELSE '***' END"
        )
    elif mask.rule == "year":
        sql = f"CAST(date_trunc('year', {c}) AS {duckdb_type(t)})"
    elif mask.rule == "bucket":
        w = repr(mask.width) if pa.types.is_floating(t) else _number(mask.width)
        sql = f"CAST(floor({c} / {w}) * {w} AS {duckdb_type(t)})"
    else:  # pragma: no cover - validated at load time
        raise ConfigError(f"unknown mask rule '{mask.rule}'")
    return sqlglot.parse_one(sql, read="duckdb")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


# -- the hash key and function ---------------------------------------------------


def load_hash_key(key_file: Path | None, where: str) -> bytes | None:
    """The federation's secret: from ``hash_key_file``, else $FEDSQL_HASH_KEY, else None."""
    if key_file is not None:
        try:
            key = key_file.read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read hash_key_file: {e.strerror}") from None
    else:
        env = os.environ.get(HASH_KEY_ENV)
        if env is None:
            return None
        key = env.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{where}: the hash key must be at least {MIN_KEY_BYTES} bytes")
    return key


def hmac_hasher(key: bytes) -> Callable[[pa.Array], pa.Array]:
    """A vectorised keyed HMAC-SHA256 (hex) over an Arrow string array; NULL stays NULL."""
    block = 64  # SHA-256 block size (RFC 2104)
    k = hashlib.sha256(key).digest() if len(key) > block else key
    k = k.ljust(block, b"\0")
    inner0 = hashlib.sha256(bytes(b ^ 0x36 for b in k))
    outer0 = hashlib.sha256(bytes(b ^ 0x5C for b in k))

    def one(v: str) -> str:
        inner = inner0.copy()
        inner.update(v.encode("utf-8"))
        outer = outer0.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def hasher(arr: pa.Array) -> pa.Array:
        return pa.array([None if v is None else one(v) for v in arr.to_pylist()], pa.string())

    return hasher


def register_hash(con, key: bytes | None) -> None:  # type: ignore[no-untyped-def]
    """Register ``fedsql_hash`` on a DuckDB connection (before its config is locked)."""
    if key is None:
        return
    con.create_function(
        HASH_FUNCTION,
        hmac_hasher(key),
        ["VARCHAR"],
        "VARCHAR",
        type="arrow",
        null_handling="special",
        side_effects=False,
    )
