"""Types across the boundary: a database's declared types as Arrow, and results cast
to the schema one DuckDB would give."""

from __future__ import annotations

import pyarrow as pa


def arrow_type_of_declared(decl: str) -> pa.DataType:
    """Arrow type for a SQL type as a database declares it (SQLite, PostgreSQL names).

    >>> arrow_type_of_declared("DECIMAL(15,2)")
    Decimal128Type(decimal128(15, 2))
    >>> arrow_type_of_declared("character varying(25)")
    DataType(string)
    """
    d = decl.strip().lower()
    base = d.split("(")[0].strip()
    args = d[len(base) :].strip("() ").split(",") if "(" in d else []
    if base in ("decimal", "numeric"):
        if len(args) == 2 and all(a.strip().isdigit() for a in args):
            return pa.decimal128(int(args[0]), int(args[1]))
        if len(args) == 1 and args[0].strip().isdigit():
            return pa.decimal128(int(args[0]), 0)
        return pa.float64()
    table = {  # SQL's INTEGER is 32 bits (PostgreSQL int4); BIGINT is 64
        "bigint": pa.int64(),
        "int8": pa.int64(),
        "integer": pa.int32(),
        "int": pa.int32(),
        "int4": pa.int32(),
        "smallint": pa.int16(),
        "int2": pa.int16(),
        "tinyint": pa.int8(),
        "real": pa.float32(),
        "float4": pa.float32(),
        "double": pa.float64(),
        "double precision": pa.float64(),
        "float": pa.float64(),
        "float8": pa.float64(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        "timestamp_s": pa.timestamp("us"),  # DuckDB's names (fedsql.sqltypes), as SQLite
        "timestamp_ms": pa.timestamp("us"),  # declares them for sample data
        "timestamp_ns": pa.timestamp("us"),
        "datetime": pa.timestamp("us"),
        "timestamp without time zone": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "timestamp with time zone": pa.timestamp("us", tz="UTC"),
        "boolean": pa.bool_(),
        "bool": pa.bool_(),
        "blob": pa.binary(),
        "bytea": pa.binary(),
        "time": pa.time64("us"),
    }
    if base in table:
        return table[base]
    if any(k in base for k in ("char", "text", "clob", "string", "uuid", "json")):
        return pa.string()
    if "int" in base:
        return pa.int64()
    return pa.string()


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Cast a backend's batch to the schema one DuckDB would produce for the fragment.

    Backends type results their own way (PostgreSQL NUMERIC arrives as text,
    SQLite has no DATE or DECIMAL); this makes a federated result equal the
    central one, column names included.
    """
    cols = []
    for arr, field in zip(batch.columns, schema, strict=True):
        if isinstance(arr.type, pa.ExtensionType):
            arr = arr.storage
        if arr.type != field.type:
            if pa.types.is_null(arr.type) or arr.null_count == len(arr):
                # NULLs the backend typed its own way (a NULL literal; SQLite types an
                # all-NULL column, as the empty side of an outer join, as an integer,
                # which does not cast to DECIMAL(15, 2): issue 14's fuzzer)
                arr = pa.nulls(len(arr), field.type)
            elif pa.types.is_decimal(field.type) and pa.types.is_floating(arr.type):
                # Round to the scale first: a binary double is rarely an exact decimal.
                import pyarrow.compute as pc

                arr = pc.round(arr, field.type.scale).cast(field.type)
            elif pa.types.is_decimal(field.type) and pa.types.is_integer(arr.type):
                # SQLite keeps a whole-number DECIMAL value as an INTEGER, so a batch of
                # them (TPC-H's l_quantity) arrives as int64. Arrow casts an integer
                # type to a decimal only if every value of the type would fit (19
                # digits plus the scale); through the widest decimal, the narrowing
                # cast checks the values themselves.
                scale = field.type.scale
                wide = pa.decimal128(38, scale) if scale <= 18 else pa.decimal256(76, scale)
                arr = arr.cast(wide).cast(field.type)
            else:
                arr = arr.cast(field.type)
        cols.append(arr)
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def plain_strings(t: pa.Table) -> pa.Table:
    """string_view (as tpchgen writes) -> string, which every driver takes."""
    return t.cast(
        pa.schema(
            [
                pa.field(
                    f.name, pa.string() if pa.types.is_string_view(f.type) else f.type, f.nullable
                )
                for f in t.schema
            ]
        )
    )
