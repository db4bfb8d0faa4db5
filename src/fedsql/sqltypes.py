"""Arrow types as SQL names them: the one mapping every listing uses.

``fedsql catalog``, ``DESCRIBE``, ``information_schema.columns``, the shell's
``.describe`` and Flight SQL's column metadata (``xdbc_type_name`` in ADBC's
GetObjects) all show a column's type with :func:`sql_type`, in DuckDB's
spelling (the dialect analysts write fedsql's SQL in; DuckDB docs, "Data
Types"), so the name shown is the name a ``CAST`` accepts.

>>> sql_type(pa.string()), sql_type(pa.date32()), sql_type(pa.decimal128(10, 2))
('VARCHAR', 'DATE', 'DECIMAL(10,2)')
>>> sql_type(pa.list_(pa.int64())), sql_type(pa.timestamp("us", "UTC"))
('BIGINT[]', 'TIMESTAMP WITH TIME ZONE')
>>> sql_type(pa.struct([("a", pa.int32()), ("b", pa.string())]))
'STRUCT(a INTEGER, b VARCHAR)'
"""

from __future__ import annotations

import pyarrow as pa

_SIMPLE: dict[pa.DataType, str] = {
    pa.null(): "NULL",
    pa.bool_(): "BOOLEAN",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.uint8(): "UTINYINT",
    pa.uint16(): "USMALLINT",
    pa.uint32(): "UINTEGER",
    pa.uint64(): "UBIGINT",
    pa.float16(): "FLOAT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.large_string(): "VARCHAR",
    pa.string_view(): "VARCHAR",
    pa.binary(): "BLOB",
    pa.large_binary(): "BLOB",
    pa.binary_view(): "BLOB",
    pa.date32(): "DATE",
    pa.date64(): "DATE",
    pa.month_day_nano_interval(): "INTERVAL",
}
_TIMESTAMP_UNIT = {
    "s": "TIMESTAMP_S",
    "ms": "TIMESTAMP_MS",
    "us": "TIMESTAMP",
    "ns": "TIMESTAMP_NS",
}


def sql_type(t: pa.DataType) -> str:
    """The SQL name of an Arrow type (DuckDB's spelling); an Arrow type SQL has no
    name for is shown as Arrow names it, upper-cased."""
    simple = _SIMPLE.get(t)
    if simple is not None:
        return simple
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP WITH TIME ZONE" if t.tz else _TIMESTAMP_UNIT[t.unit]
    if pa.types.is_time(t):
        return "TIME"
    if pa.types.is_duration(t):
        return "INTERVAL"
    if pa.types.is_fixed_size_binary(t):
        return "BLOB"
    if pa.types.is_dictionary(t):
        return sql_type(t.value_type)
    if pa.types.is_fixed_size_list(t):
        return f"{sql_type(t.value_type)}[{t.list_size}]"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return f"{sql_type(t.value_type)}[]"
    if pa.types.is_map(t):
        return f"MAP({sql_type(t.key_type)}, {sql_type(t.item_type)})"
    if pa.types.is_struct(t):
        fields = ", ".join(f"{_name(f.name)} {sql_type(f.type)}" for f in t)
        return f"STRUCT({fields})"
    return str(t).upper()


def _name(name: str) -> str:
    plain = name.isidentifier() and name.isascii()
    return name if plain else '"' + name.replace('"', '""') + '"'


# XdbcDataType of format/FlightSql.proto (the ODBC/JDBC type codes).
XDBC_UNKNOWN = 0
_XDBC: dict[str, int] = {
    "DECIMAL": 3,
    "INTEGER": 4,
    "SMALLINT": 5,
    "FLOAT": 6,
    "DOUBLE": 8,
    "INTERVAL": 10,
    "VARCHAR": 12,
    "BOOLEAN": 16,  # JDBC's BOOLEAN, as the service's type info lists it
    "DATE": 91,
    "TIME": 92,
    "TIMESTAMP": 93,
    "BLOB": -3,  # VARBINARY
    "BIGINT": -5,
    "TINYINT": -6,
}


def xdbc_data_type(t: pa.DataType) -> int:
    """The XDBC (ODBC/JDBC) type code of an Arrow type; 0 (unknown) for nested types.

    >>> xdbc_data_type(pa.int64()), xdbc_data_type(pa.decimal128(12, 2))
    (-5, 3)
    """
    name = sql_type(t).split("(")[0]
    if name.startswith("TIMESTAMP"):
        name = "TIMESTAMP"
    return _XDBC.get(name, XDBC_UNKNOWN)


def precision_scale(t: pa.DataType) -> tuple[int | None, int | None]:
    """(precision, scale) as information_schema shows them: decimal digits for
    decimals and integers, binary digits for floating point; (None, None) else.

    >>> precision_scale(pa.decimal128(10, 2)), precision_scale(pa.int32())
    ((10, 2), (32, 0))
    """
    if pa.types.is_decimal(t):
        return t.precision, t.scale
    if pa.types.is_integer(t):
        return t.bit_width, 0
    if pa.types.is_floating(t):
        return {16: 11, 32: 24, 64: 53}[t.bit_width], None
    return None, None


# Column metadata of Flight SQL (format/FlightSql.proto, "ColumnMetadata"): on the
# fields of CommandGetTables' table_schema and of result schemas. ADBC's Flight
# SQL driver reads TYPE_NAME into GetObjects' xdbc_type_name.
FLIGHT_SQL_PREFIX = "ARROW:FLIGHT:SQL:"


def flight_sql_metadata(
    field: pa.Field, catalog: str = "", schema: str = "", table: str = ""
) -> dict[bytes, bytes]:
    """A field's Flight SQL column metadata (booleans "1"/"0", as the spec has them).

    >>> md = flight_sql_metadata(pa.field("x", pa.decimal128(10, 2)), "trade", "main", "t")
    >>> md[b"ARROW:FLIGHT:SQL:TYPE_NAME"], md[b"ARROW:FLIGHT:SQL:PRECISION"]
    (b'DECIMAL(10,2)', b'10')
    """
    values = {
        "CATALOG_NAME": catalog,
        "DB_SCHEMA_NAME": schema,
        "TABLE_NAME": table,
        "TYPE_NAME": sql_type(field.type),
        "IS_AUTO_INCREMENT": "0",
        "IS_CASE_SENSITIVE": "1" if pa.types.is_string(field.type) else "0",
        "IS_READ_ONLY": "1",  # fedsql only reads
        "IS_SEARCHABLE": "1",
    }
    precision, scale = precision_scale(field.type)
    if precision is not None:
        values["PRECISION"] = str(precision)
    if scale is not None:
        values["SCALE"] = str(scale)
    return {f"{FLIGHT_SQL_PREFIX}{k}".encode(): v.encode() for k, v in values.items() if v}


def with_flight_sql_metadata(
    schema: pa.Schema, catalog: str = "", db_schema: str = "", table: str = ""
) -> pa.Schema:
    """``schema`` with every field's Flight SQL column metadata added."""
    return pa.schema(
        [
            f.with_metadata(
                {**(f.metadata or {}), **flight_sql_metadata(f, catalog, db_schema, table)}
            )
            for f in schema
        ],
        metadata=schema.metadata,
    )


__all__ = [
    "flight_sql_metadata",
    "precision_scale",
    "sql_type",
    "with_flight_sql_metadata",
    "xdbc_data_type",
]
