"""`fedsql serve`: the coordinator as an Arrow Flight SQL service.

Analysts connect with any Flight SQL client (ADBC, the JDBC driver in DBeaver
or Tableau, `fedsql shell --url`); the service holds the trust relationship
with the agencies. Each signed-in analyst gets their own embedded
:class:`~fedsql.Federation`, so their roles drive masks and grants exactly as
in the embedded API, and every fragment carries their name to the agencies'
audit logs.

A statement runs when the client asks for its FlightInfo (GetFlightInfo);
the result waits under a one-time ticket for DoGet. Flight SQL catalogs are
the agencies; schemas and tables are what each agency exposes to this analyst.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from fedsql import __version__
from fedsql.client import Federation
from fedsql.config import FederationConfig
from fedsql.errors import (
    CatalogError,
    ConfigError,
    ConnectorError,
    FedSQLError,
    FragmentRefused,
    PlanError,
    PolicyError,
    QueryCancelled,
    QueryTimeout,
)
from fedsql.keywords import SQL_KEYWORDS
from fedsql.service import protocol as proto
from fedsql.service.auth import SignIn
from fedsql.service.params import bind, parameter_schema, parse_with_placeholders
from fedsql.service.queries import QueryBoard
from fedsql.trust import read_secret
from fedsql.v1 import flight_sql_pb2 as sql_pb

log = logging.getLogger(__name__)

RESULT_TTL = 600.0  # seconds an unread result waits for its DoGet
PREPARED_TTL = 3600.0  # seconds an unused prepared statement lives
TABLE_TYPE = "TABLE"

# Custom actions (DoAction) beside the Flight SQL ones.
LIST_QUERIES = "fedsql.list_queries"
CANCEL = "fedsql.cancel"
EXPLAIN = "fedsql.explain"
NO_TRANSACTIONS = "transactions are not supported (the federation is read-only)"

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


@dataclass(slots=True)
class _Result:
    user: str
    table: pa.Table
    expires: float


@dataclass(slots=True)
class _Prepared:
    user: str
    sql: str
    n_params: int
    params: pa.Table | None
    expires: float


class _Auth(flight.ServerMiddleware):  # type: ignore[misc]
    def __init__(self, user: str, token: str | None = None) -> None:
        self.user = user
        self.token = token

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


class _AuthFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Every call: ``Authorization: Basic`` (sign in, answered with a bearer token)
    or ``Authorization: Bearer`` (a token from an earlier sign-in)."""

    def __init__(self, signin: SignIn) -> None:
        self.signin = signin

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> _Auth:
        values = next((v for k, v in headers.items() if k.lower() == "authorization"), [])
        if not values:
            raise flight.FlightUnauthenticatedError(
                "sign in with a user name and password (the users are [user.NAME] entries "
                "with a password_hash in the service's federation config)"
            )
        scheme, _, cred = values[0].partition(" ")
        if scheme.lower() == "basic":
            ok = self.signin.basic(cred.strip())
            if ok is None:
                raise flight.FlightUnauthenticatedError("wrong user name or password")
            return _Auth(*ok)
        if scheme.lower() == "bearer":
            user = self.signin.bearer(cred.strip())
            if user is None:
                raise flight.FlightUnauthenticatedError(
                    "the session token is unknown or expired; sign in again"
                )
            return _Auth(user)
        raise flight.FlightUnauthenticatedError(f"unsupported authorization scheme {scheme!r}")


class _Handshake(flight.ServerAuthHandler):  # type: ignore[misc]
    """Handshake succeeds; the middleware above has already checked the credentials."""

    def authenticate(self, outgoing: Any, incoming: Any) -> None:
        pass

    def is_valid(self, token: bytes) -> str:
        return ""


def _refused(message: str) -> Exception:
    """A request the service turns down. Not pa.ArrowInvalid: pyarrow would send the
    server's Python traceback along to the client as the status detail."""
    return flight.FlightServerError(message)


def _flight_error(e: FedSQLError) -> Exception:
    """A FedSQLError as the Flight status a client shows (one place)."""
    msg = str(e)
    if isinstance(e, QueryCancelled):
        return flight.FlightCancelledError(msg)
    if isinstance(e, QueryTimeout):
        return flight.FlightTimedOutError(msg)
    if isinstance(e, PolicyError):
        return flight.FlightUnauthorizedError(msg)
    if isinstance(e, (PlanError, CatalogError, FragmentRefused, ConfigError)):
        return _refused(msg)
    if isinstance(e, ConnectorError):
        return flight.FlightUnavailableError(msg)
    return flight.FlightServerError(msg)


class FlightSqlService(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(
        self,
        config: FederationConfig,
        location: str,
        tls_certificates: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.signin = SignIn(config)
        super().__init__(
            location,
            auth_handler=_Handshake(),
            tls_certificates=tls_certificates or [],
            middleware={"auth": _AuthFactory(self.signin)},
        )
        self.config = config
        self.board = QueryBoard(config.service.history)
        self._feds: dict[str, Federation] = {}
        self._results: dict[bytes, _Result] = {}
        self._prepared: dict[bytes, _Prepared] = {}
        self._lock = threading.Lock()

    # -- helpers ------------------------------------------------------------
    @staticmethod
    def _user(context: flight.ServerCallContext) -> str:
        mw = context.get_middleware("auth")
        if mw is None:  # cannot happen: the middleware refuses unauthenticated calls
            raise flight.FlightUnauthenticatedError("not signed in")
        return str(mw.user)

    def _federation(self, user: str) -> Federation:
        with self._lock:
            fed = self._feds.get(user)
            if fed is None:
                fed = self._feds[user] = Federation(self.config, user=user)
            return fed

    def _store(self, user: str, table: pa.Table) -> bytes:
        handle = secrets.token_bytes(16)
        now = time.monotonic()
        with self._lock:
            for h in [h for h, r in self._results.items() if r.expires < now]:
                del self._results[h]
            self._results[handle] = _Result(user, table, now + RESULT_TTL)
        return handle

    def _info(self, descriptor: flight.FlightDescriptor, user: str, table: pa.Table) -> Any:
        handle = self._store(user, table)
        endpoint = flight.FlightEndpoint(proto.ticket(handle), [])
        return flight.FlightInfo(table.schema, descriptor, [endpoint], table.num_rows, table.nbytes)

    def _run(self, user: str, sqls: list[str], shown: str) -> pa.Table:
        """Run the statement(s) as ``user``, listed on the query board while running."""
        fed = self._federation(user)
        entry = self.board.start(user, shown)
        log.info("query %s: user %s", entry.id, user)
        try:
            tables = [fed.sql(s, watch=entry.watch, query_id=entry.id) for s in sqls]
        except FedSQLError as e:
            cancelled = isinstance(e, QueryCancelled)
            self.board.end(entry, "cancelled" if cancelled else "failed", None, str(e))
            if cancelled:
                raise flight.FlightCancelledError(f"query {entry.id} was cancelled") from None
            raise _flight_error(e) from None
        except Exception as e:
            self.board.end(entry, "failed", None, "internal error")
            log.exception("query %s failed", entry.id)
            raise flight.FlightInternalError(
                f"internal error in query {entry.id}; see the service log"
            ) from e
        table = (
            tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
        )
        self.board.end(entry, "done", table.num_rows, None)
        return table

    def _prepared_for(self, handle: bytes, user: str) -> _Prepared:
        with self._lock:
            p = self._prepared.get(handle)
        if p is None or p.user != user:
            raise _refused("unknown or closed prepared statement; prepare it again")
        p.expires = time.monotonic() + PREPARED_TTL
        return p

    # -- metadata -----------------------------------------------------------
    def _tables(self, user: str, cmd: Any) -> pa.Table:
        catalog = self._federation(user).catalog
        schema_re = proto.like(
            cmd.db_schema_filter_pattern if cmd.HasField("db_schema_filter_pattern") else None
        )
        table_re = proto.like(
            cmd.table_name_filter_pattern if cmd.HasField("table_name_filter_pattern") else None
        )
        if cmd.table_types and TABLE_TYPE not in cmd.table_types:
            rows = []
        else:
            rows = sorted(
                (
                    t
                    for t in catalog.tables
                    if (not cmd.HasField("catalog") or cmd.catalog == t.agency)
                    and (schema_re is None or schema_re.fullmatch(t.schema_key))
                    and (table_re is None or table_re.fullmatch(t.name))
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
            cols["table_schema"] = [t.arrow_schema.serialize().to_pybytes() for t in rows]
        return pa.table(cols, schema=schema)

    def _metadata(self, user: str, cmd: Any) -> pa.Table:
        if isinstance(cmd, sql_pb.CommandGetSqlInfo):
            return proto.sql_info_table(sql_info(), list(cmd.info))
        if isinstance(cmd, sql_pb.CommandGetCatalogs):
            agencies = sorted(self._federation(user).catalog.agencies)
            return pa.table({"catalog_name": agencies}, schema=proto.CATALOGS)
        if isinstance(cmd, sql_pb.CommandGetDbSchemas):
            pattern = proto.like(
                cmd.db_schema_filter_pattern if cmd.HasField("db_schema_filter_pattern") else None
            )
            pairs = sorted(
                {
                    (t.agency, t.schema_key)
                    for t in self._federation(user).catalog.tables
                    if (not cmd.HasField("catalog") or cmd.catalog == t.agency)
                    and (pattern is None or pattern.fullmatch(t.schema_key))
                }
            )
            return pa.table(
                {"catalog_name": [a for a, _ in pairs], "db_schema_name": [s for _, s in pairs]},
                schema=proto.DB_SCHEMAS,
            )
        if isinstance(cmd, sql_pb.CommandGetTables):
            return self._tables(user, cmd)
        if isinstance(cmd, sql_pb.CommandGetXdbcTypeInfo):
            return proto.xdbc_type_info(cmd.data_type if cmd.HasField("data_type") else None)
        if isinstance(cmd, sql_pb.CommandGetTableTypes):
            return pa.table({"table_type": [TABLE_TYPE]}, schema=proto.TABLE_TYPES)
        if isinstance(cmd, sql_pb.CommandGetPrimaryKeys):
            return proto.PRIMARY_KEYS.empty_table()  # agencies do not publish keys
        if isinstance(cmd, (sql_pb.CommandGetExportedKeys, sql_pb.CommandGetImportedKeys)):
            return proto.FOREIGN_KEYS.empty_table()
        if isinstance(cmd, (sql_pb.CommandStatementUpdate, sql_pb.CommandPreparedStatementUpdate)):
            raise _refused("the federation is read-only: only SELECT queries run here")
        raise _refused(f"{type(cmd).__name__} is not supported by fedsql")

    # -- Flight RPCs --------------------------------------------------------
    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> Any:
        user = self._user(context)
        cmd = self._command(descriptor)
        if isinstance(cmd, sql_pb.CommandStatementQuery):
            if cmd.HasField("transaction_id"):
                raise _refused(NO_TRANSACTIONS)
            return self._info(descriptor, user, self._run(user, [cmd.query], cmd.query))
        if isinstance(cmd, sql_pb.CommandPreparedStatementQuery):
            p = self._prepared_for(cmd.prepared_statement_handle, user)
            if p.n_params and p.params is None:
                raise _refused(
                    f"the prepared statement has {p.n_params} parameter(s); bind them first"
                )
            params = p.params if p.params is not None else pa.table({})
            sqls = bind(p.sql, params) if p.n_params or params.num_columns else [p.sql]
            return self._info(descriptor, user, self._run(user, sqls, p.sql))
        return self._info(descriptor, user, self._guard(lambda: self._metadata(user, cmd)))

    def get_schema(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> Any:
        user = self._user(context)
        cmd = self._command(descriptor)
        if isinstance(cmd, (sql_pb.CommandStatementQuery, sql_pb.CommandPreparedStatementQuery)):
            # The schema needs the result: run it, and drop the result nobody will fetch.
            info = self.get_flight_info(context, descriptor)
            handle = proto.unpack(info.endpoints[0].ticket.ticket).statement_handle  # type: ignore[attr-defined]
            with self._lock:
                self._results.pop(handle, None)
            return flight.SchemaResult(info.schema)
        return flight.SchemaResult(self._guard(lambda: self._metadata(user, cmd)).schema)

    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> Any:
        user = self._user(context)
        try:
            msg = proto.unpack(ticket.ticket)
        except proto.ProtocolError as e:
            raise _refused(str(e)) from None
        if not isinstance(msg, sql_pb.TicketStatementQuery):
            raise _refused("this ticket is not one fedsql handed out")
        with self._lock:
            r = self._results.get(msg.statement_handle)
            if r is not None and r.user == user:
                del self._results[msg.statement_handle]
        if r is None or r.user != user:
            raise _refused("unknown, expired or already read result; run the query again")
        return flight.RecordBatchStream(r.table)

    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        user = self._user(context)
        cmd = self._command(descriptor)
        if isinstance(cmd, sql_pb.CommandPreparedStatementQuery):
            p = self._prepared_for(cmd.prepared_statement_handle, user)
            p.params = reader.read_all()
            return
        if isinstance(cmd, (sql_pb.CommandStatementUpdate, sql_pb.CommandPreparedStatementUpdate)):
            raise _refused("the federation is read-only: only SELECT queries run here")
        raise _refused(f"DoPut with {type(cmd).__name__} is not supported")

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        return [
            ("CreatePreparedStatement", "Flight SQL: prepare a query (parameters: ?, $1)"),
            ("ClosePreparedStatement", "Flight SQL: release a prepared statement"),
            (LIST_QUERIES, "running and recent queries (yours; all for [service].admins)"),
            (CANCEL, "cancel a running query by id (body: the id)"),
            (EXPLAIN, "the plan of a query: fragments per agency, residual (body: the SQL)"),
        ]

    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> Any:
        user = self._user(context)
        kind = action.type
        body = action.body.to_pybytes() if action.body is not None else b""
        admin = user in self.config.service.admins
        if kind == LIST_QUERIES:
            rows = self.board.list(None if admin else user)
            return [json.dumps(rows).encode()]
        if kind == EXPLAIN:
            text = self._guard(lambda: self._federation(user).explain(body.decode()))
            return [text.encode()]
        if kind == CANCEL:
            qid = body.decode(errors="replace").strip()
            outcome = self.board.cancel(qid, None if admin else user)
            log.info("user %s: cancel %s: %s", user, qid, outcome)
            return [json.dumps({"id": qid, "outcome": outcome}).encode()]
        if kind == "CreatePreparedStatement":
            req = self._unpack_body(body, sql_pb.ActionCreatePreparedStatementRequest)
            if req.HasField("transaction_id"):
                raise _refused(NO_TRANSACTIONS)
            _, placeholders = self._guard(lambda: parse_with_placeholders(req.query))
            params = parameter_schema(placeholders)
            handle = secrets.token_bytes(16)
            with self._lock:
                now = time.monotonic()
                for h in [h for h, p in self._prepared.items() if p.expires < now]:
                    del self._prepared[h]
                self._prepared[handle] = _Prepared(
                    user, req.query, len(params), None, now + PREPARED_TTL
                )
            return [proto.prepared_result(handle, None, params if len(params) else None)]
        if kind == "ClosePreparedStatement":
            req = self._unpack_body(body, sql_pb.ActionClosePreparedStatementRequest)
            with self._lock:
                p = self._prepared.get(req.prepared_statement_handle)
                if p is not None and p.user == user:
                    del self._prepared[req.prepared_statement_handle]
            return []
        raise _refused(f"action {kind!r} is not supported by fedsql")

    # -- decoding -----------------------------------------------------------
    @staticmethod
    def _command(descriptor: flight.FlightDescriptor) -> Any:
        if descriptor.descriptor_type != flight.DescriptorType.CMD:
            raise _refused("fedsql takes Flight SQL commands, not paths")
        try:
            return proto.unpack(descriptor.command)
        except proto.ProtocolError as e:
            raise _refused(str(e)) from None

    @staticmethod
    def _unpack_body(body: bytes, cls: type) -> Any:
        try:
            msg = proto.unpack(body)
        except proto.ProtocolError as e:
            raise _refused(str(e)) from None
        if not isinstance(msg, cls):
            raise _refused(f"expected {cls.__name__}, got {type(msg).__name__}")
        return msg

    @staticmethod
    def _guard(fn: Any) -> Any:
        try:
            return fn()
        except FedSQLError as e:
            raise _flight_error(e) from None

    def shutdown_federations(self) -> None:
        with self._lock:
            feds = list(self._feds.values())
            self._feds.clear()
        for f in feds:
            f.close()


def tls_pair(config: FederationConfig) -> list[tuple[bytes, bytes]]:
    s = config.service
    if s.tls_cert is None or s.tls_key is None:
        return []
    return [
        (read_secret(s.tls_cert, "[service.tls].cert"), read_secret(s.tls_key, "[service.tls].key"))
    ]


def check_servable(config: FederationConfig) -> None:
    """Refuse to start without a way to sign in or without TLS (unless insecure)."""
    src = config.source or "the federation config"
    if not any(u.password_hash for u in config.users.values()):
        raise ConfigError(
            f"{src}: no user can sign in: give at least one [user.NAME] a password_hash "
            "(make one with `fedsql passwd`)"
        )
    if not config.service.insecure and config.service.tls_cert is None:
        raise ConfigError(
            f"{src}: [service] needs TLS: add [service.tls] cert and key (PEM files), or "
            "set insecure = true under [service] to serve plaintext (local development only)"
        )


def start(config: FederationConfig, listen: str | None = None) -> FlightSqlService:
    """Start the service (serving in background threads); ``.port`` is the bound port."""
    check_servable(config)
    host, _, port = (listen or config.service.listen).rpartition(":")
    tls = tls_pair(config)
    scheme = "grpc+tls" if tls else "grpc+tcp"
    return FlightSqlService(config, f"{scheme}://{host}:{port}", tls)
