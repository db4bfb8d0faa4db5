"""Flight SQL on the wire: the one module that touches ``flight_sql_pb2``.

Commands travel as ``google.protobuf.Any`` (in FlightDescriptor.cmd, Ticket and
Flight SQL Action bodies); results are Arrow tables with the exact schemas the
Flight SQL specification gives for each command (format/FlightSql.proto), so
that ADBC, JDBC and ODBC drivers read them.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from fedsql.v1 import flight_sql_pb2 as sql_pb

PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."

# Custom actions (DoAction) beside the Flight SQL ones.
LIST_QUERIES = "fedsql.list_queries"
CANCEL = "fedsql.cancel"
EXPLAIN = "fedsql.explain"

COMMANDS: dict[str, type[Message]] = {
    cls.DESCRIPTOR.name: cls
    for cls in (
        sql_pb.CommandGetSqlInfo,
        sql_pb.CommandGetXdbcTypeInfo,
        sql_pb.CommandGetCatalogs,
        sql_pb.CommandGetDbSchemas,
        sql_pb.CommandGetTables,
        sql_pb.CommandGetTableTypes,
        sql_pb.CommandGetPrimaryKeys,
        sql_pb.CommandGetExportedKeys,
        sql_pb.CommandGetImportedKeys,
        sql_pb.CommandStatementQuery,
        sql_pb.CommandPreparedStatementQuery,
        sql_pb.CommandStatementUpdate,
        sql_pb.CommandPreparedStatementUpdate,
        sql_pb.TicketStatementQuery,
        sql_pb.ActionCreatePreparedStatementRequest,
        sql_pb.ActionClosePreparedStatementRequest,
    )
}


class ProtocolError(ValueError):
    """A message that is not a Flight SQL command this service knows."""


def pack(msg: Message) -> bytes:
    a = any_pb2.Any()
    a.Pack(msg, type_url_prefix="type.googleapis.com/")
    return a.SerializeToString()


def unpack(data: bytes) -> Message:
    """An Any-packed Flight SQL message → the message (ProtocolError if unknown)."""
    try:
        a = any_pb2.Any.FromString(data)
    except DecodeError:
        raise ProtocolError(
            "the command is not a protobuf Any (is this a Flight SQL client?)"
        ) from None
    if not a.type_url.startswith(PREFIX):
        raise ProtocolError(f"unknown command type {a.type_url or '(none)'}")
    cls = COMMANDS.get(a.type_url[len(PREFIX) :])
    if cls is None:
        raise ProtocolError(f"Flight SQL command {a.type_url[len(PREFIX) :]} is not supported")
    msg = cls()
    a.Unpack(msg)
    return msg


def ticket(handle: bytes) -> bytes:
    return pack(sql_pb.TicketStatementQuery(statement_handle=handle))


def prepared_result(handle: bytes, dataset: pa.Schema | None, params: pa.Schema | None) -> bytes:
    return pack(
        sql_pb.ActionCreatePreparedStatementResult(
            prepared_statement_handle=handle,
            dataset_schema=dataset.serialize().to_pybytes() if dataset is not None else b"",
            parameter_schema=params.serialize().to_pybytes() if params is not None else b"",
        )
    )


# --- result schemas (format/FlightSql.proto, one per command) --------------------

CATALOGS = pa.schema([pa.field("catalog_name", pa.utf8(), False)])
DB_SCHEMAS = pa.schema(
    [pa.field("catalog_name", pa.utf8()), pa.field("db_schema_name", pa.utf8(), False)]
)
TABLES = pa.schema(
    [
        pa.field("catalog_name", pa.utf8()),
        pa.field("db_schema_name", pa.utf8()),
        pa.field("table_name", pa.utf8(), False),
        pa.field("table_type", pa.utf8(), False),
    ]
)
TABLES_WITH_SCHEMA = TABLES.append(pa.field("table_schema", pa.binary(), False))
TABLE_TYPES = pa.schema([pa.field("table_type", pa.utf8(), False)])
PRIMARY_KEYS = pa.schema(
    [
        pa.field("catalog_name", pa.utf8()),
        pa.field("db_schema_name", pa.utf8()),
        pa.field("table_name", pa.utf8(), False),
        pa.field("column_name", pa.utf8(), False),
        pa.field("key_name", pa.utf8()),
        pa.field("key_sequence", pa.int32(), False),
    ]
)
FOREIGN_KEYS = pa.schema(
    [
        pa.field("pk_catalog_name", pa.utf8()),
        pa.field("pk_db_schema_name", pa.utf8()),
        pa.field("pk_table_name", pa.utf8(), False),
        pa.field("pk_column_name", pa.utf8(), False),
        pa.field("fk_catalog_name", pa.utf8()),
        pa.field("fk_db_schema_name", pa.utf8()),
        pa.field("fk_table_name", pa.utf8(), False),
        pa.field("fk_column_name", pa.utf8(), False),
        pa.field("key_sequence", pa.int32(), False),
        pa.field("fk_key_name", pa.utf8()),
        pa.field("pk_key_name", pa.utf8()),
        pa.field("update_rule", pa.uint8(), False),
        pa.field("delete_rule", pa.uint8(), False),
    ]
)

# CommandGetSqlInfo: value is a dense union; the type codes are the child order.
_SQL_INFO_VALUE = pa.dense_union(
    [
        pa.field("string_value", pa.utf8()),
        pa.field("bool_value", pa.bool_()),
        pa.field("bigint_value", pa.int64()),
        pa.field("int32_bitmask", pa.int32()),
        pa.field("string_list", pa.list_(pa.field("item", pa.utf8()))),
        pa.field(
            "int32_to_int32_list_map",
            pa.map_(pa.int32(), pa.list_(pa.field("item", pa.int32()))),
        ),
    ],
    type_codes=[0, 1, 2, 3, 4, 5],
)
SQL_INFO = pa.schema(
    [pa.field("info_name", pa.uint32(), False), pa.field("value", _SQL_INFO_VALUE, False)]
)


def sql_info_table(info: dict[int, Any], wanted: list[int]) -> pa.Table:
    """The CommandGetSqlInfo result: one row per known id (all, or those ``wanted``).

    Values: str → string_value, bool → bool_value, ("bitmask", n) → int32_bitmask,
    int → bigint_value, list[str] → string_list.
    """
    ids = [i for i in (wanted or sorted(info)) if i in info]
    children: list[list[Any]] = [[] for _ in range(6)]
    codes: list[int] = []
    offsets: list[int] = []
    for i in ids:
        v = info[i]
        if isinstance(v, bool):
            code = 1
        elif isinstance(v, str):
            code = 0
        elif isinstance(v, tuple):
            code, v = 3, v[1]
        elif isinstance(v, int):
            code = 2
        else:
            code = 4
        codes.append(code)
        offsets.append(len(children[code]))
        children[code].append(v)
    arrays = [pa.array(vals, type=_SQL_INFO_VALUE.field(k).type) for k, vals in enumerate(children)]
    value = pa.UnionArray.from_dense(
        pa.array(codes, pa.int8()),
        pa.array(offsets, pa.int32()),
        arrays,
        [_SQL_INFO_VALUE.field(k).name for k in range(6)],
        list(range(6)),
    )
    return pa.Table.from_arrays([pa.array(ids, pa.uint32()), value], schema=SQL_INFO)


MAX_PATTERN = 256  # characters of a catalog, schema or table filter (names are shorter)

_ANY = None  # ``_``: one character


class Like:
    r"""A Flight SQL filter pattern: ``%`` any run, ``_`` one character, ``\`` escapes
    (SqlInfo SQL_SEARCH_STRING_ESCAPE), matched case-insensitively against the whole name.

    No regular expression: ``%%%...%Z`` as a regex backtracks exponentially on a
    name without a ``Z`` (issue 17). The pattern is cut at each ``%`` into pieces
    of literal characters and ``_``; the first piece must start the name, the
    last must end it, and each piece between is found leftmost after the one
    before, which is enough (a piece found further right leaves less room for the
    rest). Time: at most len(name) x len(pattern) character comparisons.

    >>> Like("line%").matches("LineItem"), Like("l_ne").matches("lne")
    (True, False)
    >>> Like("%" * 24 + "Z").matches("a" * 40), Like("50\\%%").matches("50%off")
    (False, True)
    """

    __slots__ = ("pieces",)

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN:
            raise ProtocolError(
                f"a filter pattern may have at most {MAX_PATTERN} characters "
                f"(this one has {len(pattern)})"
            )
        pieces: list[list[str | None]] = [[]]
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if c == "\\" and i + 1 < len(pattern):
                pieces[-1].append(pattern[i + 1].lower())
                i += 2
                continue
            if c == "%":
                pieces.append([])
            else:
                pieces[-1].append(_ANY if c == "_" else c.lower())
            i += 1
        self.pieces = pieces

    def matches(self, name: str) -> bool:
        s = [c.lower() for c in name]
        first, last = self.pieces[0], self.pieces[-1]
        if len(self.pieces) == 1:
            return len(s) == len(first) and _at(first, s, 0)
        if len(first) + len(last) > len(s):
            return False
        if not _at(first, s, 0) or not _at(last, s, len(s) - len(last)):
            return False
        pos, end = len(first), len(s) - len(last)
        for piece in self.pieces[1:-1]:
            while pos + len(piece) <= end and not _at(piece, s, pos):
                pos += 1
            if pos + len(piece) > end:
                return False
            pos += len(piece)
        return True


def _at(piece: list[str | None], s: list[str], pos: int) -> bool:
    return all(p is _ANY or p == s[pos + k] for k, p in enumerate(piece))


def like(pattern: str | None) -> Like | None:
    """The filter of an optional pattern field (None: no filter)."""
    return None if pattern is None else Like(pattern)


# CommandGetXdbcTypeInfo (JDBC getTypeInfo, ODBC SQLGetTypeInfo): the types results carry.
XDBC_TYPE_INFO = pa.schema(
    [
        pa.field("type_name", pa.utf8(), False),
        pa.field("data_type", pa.int32(), False),
        pa.field("column_size", pa.int32()),
        pa.field("literal_prefix", pa.utf8()),
        pa.field("literal_suffix", pa.utf8()),
        pa.field("create_params", pa.list_(pa.field("item", pa.utf8(), False))),
        pa.field("nullable", pa.int32(), False),
        pa.field("case_sensitive", pa.bool_(), False),
        pa.field("searchable", pa.int32(), False),
        pa.field("unsigned_attribute", pa.bool_()),
        pa.field("fixed_prec_scale", pa.bool_(), False),
        pa.field("auto_increment", pa.bool_()),
        pa.field("local_type_name", pa.utf8()),
        pa.field("minimum_scale", pa.int32()),
        pa.field("maximum_scale", pa.int32()),
        pa.field("sql_data_type", pa.int32(), False),
        pa.field("datetime_subcode", pa.int32()),
        pa.field("num_prec_radix", pa.int32()),
        pa.field("interval_precision", pa.int32()),
    ]
)
# (name, XdbcDataType code, column size, literal prefix/suffix, numeric radix, scale)
_XDBC_TYPES = [
    ("BIGINT", -5, 19, None, 10, 0),
    ("DECIMAL", 3, 38, None, 10, 38),
    ("INTEGER", 4, 10, None, 10, 0),
    ("DOUBLE", 8, 53, None, 2, None),
    ("VARCHAR", 12, None, "'", None, None),
    ("BOOLEAN", 16, 1, None, None, None),
    ("DATE", 91, 10, "DATE '", None, None),
    ("TIMESTAMP", 93, 26, "TIMESTAMP '", None, None),
]


def xdbc_type_info(data_type: int | None) -> pa.Table:
    rows = [t for t in _XDBC_TYPES if data_type is None or t[1] == data_type]
    rows.sort(key=lambda t: (t[1], t[0]))
    n = len(rows)
    cols: dict[str, list[Any]] = {
        "type_name": [t[0] for t in rows],
        "data_type": [t[1] for t in rows],
        "column_size": [t[2] for t in rows],
        "literal_prefix": [t[3] for t in rows],
        "literal_suffix": ["'" if t[3] else None for t in rows],
        "create_params": [["precision", "scale"] if t[0] == "DECIMAL" else None for t in rows],
        "nullable": [1] * n,  # NULLABILITY_NULLABLE
        "case_sensitive": [t[0] == "VARCHAR" for t in rows],
        "searchable": [3] * n,  # SEARCHABLE_FULL
        "unsigned_attribute": [False if t[4] else None for t in rows],
        "fixed_prec_scale": [t[0] == "DECIMAL" for t in rows],
        "auto_increment": [False if t[4] else None for t in rows],
        "local_type_name": [t[0] for t in rows],
        "minimum_scale": [0 if t[5] is not None else None for t in rows],
        "maximum_scale": [t[5] for t in rows],
        "sql_data_type": [t[1] for t in rows],
        "datetime_subcode": [None] * n,
        "num_prec_radix": [t[4] for t in rows],
        "interval_precision": [None] * n,
    }
    return pa.table(cols, schema=XDBC_TYPE_INFO)
