"""Flight SQL's metadata commands: what the service is, and what a user may query.

Catalogs are the agencies; schemas and tables are what each agency exposes to
the signed-in analyst (their own catalog). Every filter a client sends is held
to :data:`~fedsql.service.protocol.MAX_PATTERN` characters and matched in linear
time (:class:`~fedsql.service.protocol.Like`): one ``'%'*24 + 'Z'`` pattern once
froze the whole service (issue 17).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from fedsql import __version__
from fedsql.catalog import Catalog
from fedsql.keywords import SQL_KEYWORDS
from fedsql.service import protocol as proto
from fedsql.service.status import INVALID_ARGUMENT, UNIMPLEMENTED, Refused
from fedsql.sqltypes import with_flight_sql_metadata
from fedsql.v1 import flight_sql_pb2 as sql_pb

TABLE_TYPE = "TABLE"
READ_ONLY = "the federation is read-only: only SELECT queries run here"

# CommandGetSqlInfo answers (SqlInfo ids from format/FlightSql.proto).
KEYWORDS = sorted(SQL_KEYWORDS)


def sql_info() -> dict[int, Any]:
    return {
        0: "fedsql",  # FLIGHT_SQL_SERVER_NAME
        1: __version__,  # FLIGHT_SQL_SERVER_VERSION
        2: pa.__version__,  # FLIGHT_SQL_SERVER_ARROW_VERSION
        3: True,  # FLIGHT_SQL_SERVER_READ_ONLY
        4: True,  # FLIGHT_SQL_SERVER_SQL
        5: False,  # FLIGHT_SQL_SERVER_SUBSTRAIT
        8: ("bitmask", 0),  # FLIGHT_SQL_SERVER_TRANSACTION: none
        9: False,  # FLIGHT_SQL_SERVER_CANCEL: by id (fedsql.cancel), not CancelQuery
        100: ("bitmask", 0),  # FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT: none
        101: ("bitmask", 0),  # FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT
        500: False,  # SQL_DDL_CATALOG
        501: False,  # SQL_DDL_SCHEMA
        502: False,  # SQL_DDL_TABLE
        503: ("bitmask", 1),  # SQL_IDENTIFIER_CASE: case-insensitive
        504: '"',  # SQL_IDENTIFIER_QUOTE_CHAR
        505: ("bitmask", 1),  # SQL_QUOTED_IDENTIFIER_CASE: case-insensitive (DuckDB)
        506: True,  # SQL_ALL_TABLES_ARE_SELECTABLE
        507: ("bitmask", 3),  # SQL_NULL_ORDERING: nulls sorted at end (DuckDB default)
        508: KEYWORDS,  # SQL_KEYWORDS
        513: "\\",  # SQL_SEARCH_STRING_ESCAPE
        514: "",  # SQL_EXTRA_NAME_CHARACTERS
        515: True,  # SQL_SUPPORTS_COLUMN_ALIASING
        516: True,  # SQL_NULL_PLUS_NULL_IS_NULL
        520: True,  # SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY
        525: ("bitmask", 0b011),  # SQL_SUPPORTED_GRAMMAR: minimum + core
        526: ("bitmask", 0b001),  # SQL_ANSI92_SUPPORTED_LEVEL: entry
        528: ("bitmask", 2),  # SQL_OUTER_JOINS_SUPPORT_LEVEL: full
        529: "schema",  # SQL_SCHEMA_TERM
        531: "agency",  # SQL_CATALOG_TERM
        532: True,  # SQL_CATALOG_AT_START
    }


def metadata(catalog: Catalog, cmd: Any) -> pa.Table:
    """The result of a metadata command for a user whose catalog is ``catalog``."""
    if isinstance(cmd, sql_pb.CommandGetSqlInfo):
        return proto.sql_info_table(sql_info(), list(cmd.info))
    if isinstance(cmd, sql_pb.CommandGetCatalogs):
        agencies = sorted(catalog.agencies)
        return pa.table({"catalog_name": agencies}, schema=proto.CATALOGS)
    if isinstance(cmd, sql_pb.CommandGetDbSchemas):
        pattern = _pattern(cmd, "db_schema_filter_pattern")
        _exact(cmd, "catalog")
        pairs = sorted(
            {
                (t.agency, t.schema_key)
                for t in catalog.tables
                if (not cmd.HasField("catalog") or cmd.catalog == t.agency)
                and (pattern is None or pattern.matches(t.schema_key))
            }
        )
        return pa.table(
            {"catalog_name": [a for a, _ in pairs], "db_schema_name": [s for _, s in pairs]},
            schema=proto.DB_SCHEMAS,
        )
    if isinstance(cmd, sql_pb.CommandGetTables):
        return tables(catalog, cmd)
    if isinstance(cmd, sql_pb.CommandGetXdbcTypeInfo):
        return proto.xdbc_type_info(cmd.data_type if cmd.HasField("data_type") else None)
    if isinstance(cmd, sql_pb.CommandGetTableTypes):
        return pa.table({"table_type": [TABLE_TYPE]}, schema=proto.TABLE_TYPES)
    if isinstance(cmd, sql_pb.CommandGetPrimaryKeys):
        _exact(cmd, "catalog", "db_schema", "table")
        return proto.PRIMARY_KEYS.empty_table()  # agencies do not publish keys
    if isinstance(cmd, (sql_pb.CommandGetExportedKeys, sql_pb.CommandGetImportedKeys)):
        _exact(cmd, "catalog", "db_schema", "table")
        return proto.FOREIGN_KEYS.empty_table()
    if isinstance(cmd, (sql_pb.CommandStatementUpdate, sql_pb.CommandPreparedStatementUpdate)):
        raise Refused(INVALID_ARGUMENT, READ_ONLY)
    raise Refused(UNIMPLEMENTED, f"{type(cmd).__name__} is not supported by fedsql")


def tables(catalog: Catalog, cmd: Any) -> pa.Table:
    """CommandGetTables: the user's tables, filtered, in (catalog, schema, table) order."""
    schema_like = _pattern(cmd, "db_schema_filter_pattern")
    table_like = _pattern(cmd, "table_name_filter_pattern")
    _exact(cmd, "catalog")
    for kind in cmd.table_types:
        _cap(kind, "table_types")
    if cmd.table_types and TABLE_TYPE not in cmd.table_types:
        rows = []
    else:
        rows = sorted(
            (
                t
                for t in catalog.tables
                if (not cmd.HasField("catalog") or cmd.catalog == t.agency)
                and (schema_like is None or schema_like.matches(t.schema_key))
                and (table_like is None or table_like.matches(t.name))
            ),
            key=lambda t: (t.agency, t.schema_key, t.name),
        )
    cols: dict[str, list[Any]] = {
        "catalog_name": [t.agency for t in rows],
        "db_schema_name": [t.schema_key for t in rows],
        "table_name": [t.name for t in rows],
        "table_type": [TABLE_TYPE] * len(rows),
    }
    schema = proto.TABLES
    if cmd.include_schema:
        schema = proto.TABLES_WITH_SCHEMA
        cols["table_schema"] = [  # with Flight SQL's column metadata (xdbc_type_name)
            with_flight_sql_metadata(t.arrow_schema, t.agency, t.schema_key, t.name)
            .serialize()
            .to_pybytes()
            for t in rows
        ]
    return pa.table(cols, schema=schema)


def _pattern(cmd: Any, name: str) -> proto.Like | None:
    """A command's optional filter pattern field (capped in length, linear to match)."""
    return proto.like(getattr(cmd, name) if cmd.HasField(name) else None)


def _exact(cmd: Any, *names: str) -> None:
    """Exact-name filter fields, held to the same length cap as patterns."""
    for name in names:
        _cap(getattr(cmd, name), name)  # unset: ""


def _cap(value: str, name: str) -> None:
    if len(value) > proto.MAX_PATTERN:
        raise Refused(
            INVALID_ARGUMENT,
            f"a {name} filter may have at most {proto.MAX_PATTERN} characters "
            f"(this one has {len(value)})",
        )
