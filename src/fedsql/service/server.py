"""`fedsql serve`: the coordinator as an Arrow Flight SQL service.

Analysts connect with any Flight SQL client (ADBC, the JDBC driver in DBeaver
or Tableau, `fedsql shell --url`); the service holds the trust relationship
with the agencies. Each signed-in analyst gets their own embedded
:class:`~fedsql.Federation`, so their roles drive masks and grants exactly as
in the embedded API, and every fragment carries their name to the agencies'
audit logs.

A statement runs when the client asks for its FlightInfo (GetFlightInfo);
the result waits under a one-time ticket for DoGet, within the user's caps
(results.py). Flight SQL catalogs are the agencies; schemas and tables are what
each agency exposes to this analyst (metadata.py).

Every RPC goes through :func:`_edge`: it checks the sign-in, and whatever goes
wrong leaves as a Flight status with a stable code and fedsql's own message
(status.py), never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from fedsql import interrupt
from fedsql.client import Federation
from fedsql.config import FederationConfig
from fedsql.errors import FedSQLError, QueryCancelled
from fedsql.listen import check_free, failed
from fedsql.service import protocol as proto
from fedsql.service import purpose, status
from fedsql.service.auth import SignIn, SignInRefused, check_servable, tls_pair
from fedsql.service.metadata import READ_ONLY, metadata
from fedsql.service.middleware import AuthMiddleware, Handshake
from fedsql.service.params import (
    bind,
    parameter_schema,
    parse_with_placeholders,
    read_parameters,
)
from fedsql.service.protocol import CANCEL, EXPLAIN, LIST_QUERIES
from fedsql.service.queries import QueryBoard
from fedsql.service.results import ResultStore, too_big
from fedsql.service.status import (
    CANCELLED,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNAUTHENTICATED,
    UNIMPLEMENTED,
    Refused,
)
from fedsql.v1 import flight_sql_pb2 as sql_pb

log = logging.getLogger(__name__)

PREPARED_TTL = 3600.0  # seconds an unused prepared statement lives
MAX_PREPARED_PER_USER = 64  # open prepared statements; over it the user's oldest closes
REAP_SECONDS = 5.0  # how often expired results and statements are dropped

NO_TRANSACTIONS = "transactions are not supported (the federation is read-only)"


@dataclass(slots=True)
class _Prepared:
    user: str
    sql: str
    n_params: int
    params: pa.Table | None
    expires: float


def _edge(method: Callable[..., Any]) -> Callable[..., Any]:
    """An RPC handler as Flight calls it: the caller's sign-in checked, and every
    failure turned into a Flight status with fedsql's message (status.py)."""

    @functools.wraps(method)
    def call(self: FlightSqlService, context: flight.ServerCallContext, *args: Any) -> Any:
        user: str | None = None
        try:
            user = self._user(context)
            return method(self, user, *args)
        except Exception as e:  # noqa: BLE001 - a server edge: nothing else may leave
            raise self._failure(e, user, method.__name__) from None

    return call


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
            auth_handler=Handshake(),
            tls_certificates=tls_certificates or [],
            middleware={"auth": AuthMiddleware(self.signin)},
        )
        self.config = config
        self.board = QueryBoard(config.service.history)
        svc = config.service
        self.results = ResultStore(
            svc.max_results_per_user, svc.max_result_bytes_per_user, svc.result_ttl_seconds
        )
        self._feds: dict[str, Federation] = {}
        self._prepared: dict[bytes, _Prepared] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        threading.Thread(target=self._reap, name="fedsql-reaper", daemon=True).start()

    # -- helpers ------------------------------------------------------------
    def _user(self, context: flight.ServerCallContext) -> str:
        mw = context.get_middleware("auth")
        if mw is None:  # cannot happen: the middleware refuses unauthenticated calls
            raise Refused(UNAUTHENTICATED, "not signed in")
        try:
            user = self.signin.check(mw.session, mw.token, context.peer())
        except SignInRefused as e:
            raise Refused(e.code, str(e)) from None
        purpose.current.set(mw.purpose)  # this call's queries ask with it
        interrupt.client_gone.set(context.is_cancelled)  # a gone client stops its query
        return user

    def _failure(self, e: Exception, user: str | None, where: str) -> flight.FlightError:
        """The Flight error a failed call answers with (the one place)."""
        if isinstance(e, Refused):
            return status.to_flight(e.code, e.message)
        if isinstance(e, FedSQLError):
            return status.to_flight(*status.from_fedsql(e, self._known(user)), e.reason)
        if isinstance(e, proto.ProtocolError):
            return status.to_flight(INVALID_ARGUMENT, str(e))
        if isinstance(e, flight.FlightError):  # from pyarrow itself, e.g. a client gone
            code = next((c for c, cls in status.CLEAN.items() if isinstance(e, cls)), INTERNAL)
            log.info("%s: %s", where, e)
            return status.to_flight(code, f"the call failed ({code.lower()})")
        ref = secrets.token_hex(4)
        log.exception("internal error %s in %s (user %s)", ref, where, user)
        return status.to_flight(INTERNAL, f"internal error (reference {ref}); see the service log")

    def _known(self, user: str | None) -> set[str]:
        """Names an error message may quote: the user's, their roles, the agencies,
        schemas, tables and columns they see."""
        if user is None:
            return set()
        names = {user, *self.config.users[user].roles} if user in self.config.users else {user}
        try:
            for t in self._federation(user).catalog.tables:
                names.update((t.agency, t.schema_key, t.name, f"{t.agency}.{t.name}"))
                names.update(t.arrow_schema.names)
        except Exception:  # noqa: BLE001 - fewer names kept, never a failure
            log.debug("no catalog names for error redaction", exc_info=True)
        return names

    def _federation(self, user: str) -> Federation:
        with self._lock:
            fed = self._feds.get(user)
            if fed is None:
                fed = self._feds[user] = Federation(self.config, user=user)
        return fed.with_purpose(purpose.current.get())

    def _info(self, descriptor: flight.FlightDescriptor, user: str, table: pa.Table) -> Any:
        handle = self.results.put(user, table)
        endpoint = flight.FlightEndpoint(proto.ticket(handle), [])
        return flight.FlightInfo(table.schema, descriptor, [endpoint], table.num_rows, table.nbytes)

    def _run(self, user: str, sqls: list[str], shown: str) -> pa.Table:
        """Run the statement(s) as ``user``, listed on the query board while running."""
        fed = self._federation(user)
        cap = self.config.service.max_result_bytes_per_user
        entry = self.board.start(user, shown)
        log.info("query %s: user %s", entry.id, user)
        tables: list[pa.Table] = []
        try:
            for s in sqls:
                with interrupt.stop_when_gone(interrupt.client_gone.get(), entry.watch):
                    tables.append(fed.sql(s, watch=entry.watch, query_id=entry.id))
                total = sum(t.nbytes for t in tables)
                if total > cap:  # stop early: later parameter rows would only add
                    raise too_big(total, cap)
            table = (
                tables[0]
                if len(tables) == 1
                else pa.concat_tables(tables, promote_options="default")
            )
        except Refused as e:
            self.board.end(entry, "failed", None, e.message)
            raise
        except FedSQLError as e:
            if isinstance(e, QueryCancelled):
                self.board.end(entry, "cancelled", None, str(e))
                raise Refused(CANCELLED, f"query {entry.id} was cancelled") from None
            self.board.end(entry, "failed", None, status.from_fedsql(e, self._known(user))[1])
            raise
        except Exception:
            self.board.end(entry, "failed", None, "internal error")
            log.exception("query %s failed", entry.id)
            raise Refused(
                INTERNAL, f"internal error in query {entry.id}; see the service log"
            ) from None
        self.board.end(entry, "done", table.num_rows, None)
        return table

    def _reap(self) -> None:
        every = min(REAP_SECONDS, self.config.service.result_ttl_seconds / 4)
        while not self._stopping.wait(every):
            self.results.purge()
            now = time.monotonic()
            with self._lock:
                for h in [h for h, p in self._prepared.items() if p.expires < now]:
                    del self._prepared[h]

    def _prepared_for(self, handle: bytes, user: str) -> _Prepared:
        with self._lock:
            p = self._prepared.get(handle)
        if p is None or p.user != user:
            raise Refused(NOT_FOUND, "unknown or closed prepared statement; prepare it again")
        p.expires = time.monotonic() + PREPARED_TTL
        return p

    # -- Flight RPCs (each through _edge) -----------------------------------
    def _result(self, user: str, cmd: Any) -> pa.Table:
        """The result of a statement or metadata command."""
        if isinstance(cmd, sql_pb.CommandStatementQuery):
            if cmd.HasField("transaction_id"):
                raise Refused(INVALID_ARGUMENT, NO_TRANSACTIONS)
            return self._run(user, [cmd.query], cmd.query)
        if isinstance(cmd, sql_pb.CommandPreparedStatementQuery):
            p = self._prepared_for(cmd.prepared_statement_handle, user)
            if p.n_params and p.params is None:
                raise Refused(
                    INVALID_ARGUMENT,
                    f"the prepared statement has {p.n_params} parameter(s); bind them first",
                )
            params = p.params if p.params is not None else pa.table({})
            sqls = bind(p.sql, params) if p.n_params or params.num_columns else [p.sql]
            return self._run(user, sqls, p.sql)
        return metadata(self._federation(user).catalog, cmd)

    @_edge
    def get_flight_info(self, user: str, descriptor: flight.FlightDescriptor) -> Any:
        return self._info(descriptor, user, self._result(user, self._command(descriptor)))

    @_edge
    def get_schema(self, user: str, descriptor: flight.FlightDescriptor) -> Any:
        # A statement's schema needs its result: run it, and keep nothing.
        return flight.SchemaResult(self._result(user, self._command(descriptor)).schema)

    @_edge
    def do_get(self, user: str, ticket: flight.Ticket) -> Any:
        msg = proto.unpack(ticket.ticket)
        if not isinstance(msg, sql_pb.TicketStatementQuery):
            raise Refused(INVALID_ARGUMENT, "this ticket is not one fedsql handed out")
        table = self.results.take(user, msg.statement_handle)
        if table is None:
            raise Refused(
                NOT_FOUND,
                "unknown, expired or already read result (results wait "
                f"{self.config.service.result_ttl_seconds:g} s for their DoGet, and a "
                "user's oldest unread ones make way for new ones); run the query again",
            )
        return flight.RecordBatchStream(table)

    @_edge
    def do_put(
        self,
        user: str,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        cmd = self._command(descriptor)
        if isinstance(cmd, sql_pb.CommandPreparedStatementQuery):
            p = self._prepared_for(cmd.prepared_statement_handle, user)
            p.params = read_parameters(reader, self.config.service.max_parameter_rows)
            return
        if isinstance(cmd, (sql_pb.CommandStatementUpdate, sql_pb.CommandPreparedStatementUpdate)):
            raise Refused(INVALID_ARGUMENT, READ_ONLY)
        raise Refused(UNIMPLEMENTED, f"DoPut with {type(cmd).__name__} is not supported")

    @_edge
    def list_flights(self, user: str, criteria: bytes) -> Iterable[Any]:
        return []  # Flight SQL clients list nothing: results come by command

    @_edge
    def do_exchange(self, user: str, descriptor: Any, reader: Any, writer: Any) -> None:
        raise Refused(UNIMPLEMENTED, "DoExchange is not supported by fedsql")

    @_edge
    def list_actions(self, user: str) -> list[tuple[str, str]]:
        return [
            ("CreatePreparedStatement", "Flight SQL: prepare a query (parameters: ?, $1)"),
            ("ClosePreparedStatement", "Flight SQL: release a prepared statement"),
            (LIST_QUERIES, "running and recent queries (yours; all for [service].admins)"),
            (CANCEL, "cancel a running query by id (body: the id)"),
            (EXPLAIN, "the plan of a query: fragments per agency, residual (body: the SQL)"),
        ]

    @_edge
    def do_action(self, user: str, action: flight.Action) -> Any:
        kind = action.type
        body = action.body.to_pybytes() if action.body is not None else b""
        admin = user in self.config.service.admins
        if kind == LIST_QUERIES:
            rows = self.board.list(None if admin else user)
            return [json.dumps(rows).encode()]
        if kind == EXPLAIN:
            return [self._federation(user).explain(_text(body, "the query")).encode()]
        if kind == CANCEL:
            qid = body.decode(errors="replace").strip()
            outcome = self.board.cancel(qid, None if admin else user)
            log.info("user %s: cancel %s: %s", user, qid[:64], outcome)
            return [json.dumps({"id": qid, "outcome": outcome}).encode()]
        if kind == "CreatePreparedStatement":
            req = self._unpack_body(body, sql_pb.ActionCreatePreparedStatementRequest)
            if req.HasField("transaction_id"):
                raise Refused(INVALID_ARGUMENT, NO_TRANSACTIONS)
            _, placeholders = parse_with_placeholders(req.query)
            params = parameter_schema(placeholders)
            handle = secrets.token_bytes(16)
            with self._lock:
                mine = [h for h, p in self._prepared.items() if p.user == user]
                for h in mine[: max(0, len(mine) - MAX_PREPARED_PER_USER + 1)]:
                    del self._prepared[h]  # the user's oldest
                self._prepared[handle] = _Prepared(
                    user, req.query, len(params), None, time.monotonic() + PREPARED_TTL
                )
            return [proto.prepared_result(handle, None, params if len(params) else None)]
        if kind == "ClosePreparedStatement":
            req = self._unpack_body(body, sql_pb.ActionClosePreparedStatementRequest)
            with self._lock:
                p = self._prepared.get(req.prepared_statement_handle)
                if p is not None and p.user == user:
                    del self._prepared[req.prepared_statement_handle]
            return []
        raise Refused(UNIMPLEMENTED, f"action {kind[:64]!r} is not supported by fedsql")

    # -- decoding -----------------------------------------------------------
    @staticmethod
    def _command(descriptor: flight.FlightDescriptor) -> Any:
        if descriptor.descriptor_type != flight.DescriptorType.CMD:
            raise Refused(INVALID_ARGUMENT, "fedsql takes Flight SQL commands, not paths")
        return proto.unpack(descriptor.command)

    @staticmethod
    def _unpack_body(body: bytes, cls: type) -> Any:
        msg = proto.unpack(body)
        if not isinstance(msg, cls):
            raise Refused(INVALID_ARGUMENT, f"expected {cls.__name__}, got {type(msg).__name__}")
        return msg

    def shutdown_federations(self) -> None:
        self._stopping.set()
        with self._lock:
            feds = list(self._feds.values())
            self._feds.clear()
        for f in feds:
            f.close()


def _text(body: bytes, what: str) -> str:
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise Refused(INVALID_ARGUMENT, f"{what} is not UTF-8 text") from None


def start(config: FederationConfig, listen: str | None = None) -> FlightSqlService:
    """Start the service (serving in background threads); ``.port`` is the bound port."""
    check_servable(config)
    address = listen or config.service.listen
    where, setting = str(config.source or "fedsql serve"), "--listen HOST:PORT or [service].listen"
    check_free(where, address, setting)  # said in words before gRPC logs its own
    host, _, port = address.rpartition(":")
    tls = tls_pair(config)
    scheme = "grpc+tls" if tls else "grpc+tcp"
    try:
        return FlightSqlService(config, f"{scheme}://{host}:{port}", tls)
    except pa.ArrowException:  # taken meanwhile, or a reason the probe did not see
        raise failed(where, address, setting) from None
