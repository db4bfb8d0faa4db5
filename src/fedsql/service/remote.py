"""A Flight SQL client for `fedsql serve` (used by `fedsql shell --url`,
`fedsql queries` and `fedsql cancel`); any other Flight SQL client works too."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from fedsql.errors import FedSQLError, QueryCancelled
from fedsql.service import protocol as proto
from fedsql.service.server import CANCEL, EXPLAIN, LIST_QUERIES
from fedsql.v1 import flight_sql_pb2 as sql_pb


class RemoteError(FedSQLError):
    """The service refused or failed a request."""


def _clean(e: Exception) -> str:
    """A Flight error's message without gRPC's debug context."""
    text = re.sub(r"\. Detail: .*", "", str(e), flags=re.DOTALL).split("\n")[0]
    text = re.sub(r"^Flight returned \w+ error, with message: ", "", text)
    return text


class Remote:
    """One signed-in session with a `fedsql serve` service."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        ca_file: Path | None = None,
        verify: bool = True,
    ) -> None:
        if "://" not in url:
            url = f"grpc+tls://{url}"
        kwargs: dict[str, Any] = {}
        if ca_file is not None:
            kwargs["tls_root_certs"] = ca_file.read_bytes()
        if not verify:
            kwargs["disable_server_verification"] = True
        self.url = url
        self.user = user
        self.client = flight.FlightClient(url, **kwargs)
        try:
            header = self.client.authenticate_basic_token(user, password)
        except flight.FlightUnauthenticatedError as e:
            self.client.close()
            raise RemoteError(f"{url}: sign-in refused for user '{user}': {_clean(e)}") from None
        except flight.FlightError as e:
            self.client.close()
            raise RemoteError(f"{url}: cannot connect: {_clean(e)}") from None
        self.options = flight.FlightCallOptions(headers=[header])

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args, self.options)
        except flight.FlightCancelledError as e:
            raise QueryCancelled(_clean(e)) from None
        except (flight.FlightError, pa.ArrowException) as e:
            raise RemoteError(_clean(e)) from None

    def _fetch(self, msg: Any) -> pa.Table:
        desc = flight.FlightDescriptor.for_command(proto.pack(msg))
        info = self._call(self.client.get_flight_info, desc)
        tables = [self._call(self.client.do_get, ep.ticket).read_all() for ep in info.endpoints]
        return pa.concat_tables(tables) if tables else info.schema.empty_table()

    def sql(self, sql: str) -> pa.Table:
        return self._fetch(sql_pb.CommandStatementQuery(query=sql))

    def tables(self, include_schema: bool = False) -> pa.Table:
        return self._fetch(sql_pb.CommandGetTables(include_schema=include_schema))

    def explain(self, sql: str) -> str:
        return str(self._action(EXPLAIN, sql.encode()))

    def queries(self) -> list[dict[str, Any]]:
        return list(json.loads(self._action(LIST_QUERIES, b"")))

    def cancel(self, query_id: str) -> str:
        return str(json.loads(self._action(CANCEL, query_id.encode()))["outcome"])

    def _action(self, kind: str, body: bytes) -> str:
        results = list(self._call(self.client.do_action, flight.Action(kind, body)))
        return b"".join(r.body.to_pybytes() for r in results).decode()

    def close(self) -> None:
        self.client.close()
