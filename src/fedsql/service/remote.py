"""A Flight SQL client for `fedsql serve` (used by `fedsql shell --url`,
`fedsql queries` and `fedsql cancel`); any other Flight SQL client works too.

The analyst's purpose travels with every call as the gRPC metadata (HTTP/2
header) ``x-fedsql-purpose``: the purpose as UTF-8, percent-encoded (RFC 3986
section 2.1) where it is not printable ASCII or is ``%`` itself, since gRPC
metadata values other than ``-bin`` ones are printable ASCII only (gRPC's
PROTOCOL-HTTP2.md, "Custom-Metadata"). A plain ASCII purpose is sent as it is.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pyarrow as pa
import pyarrow.flight as flight

from fedsql.errors import FedSQLError, QueryCancelled
from fedsql.service import protocol as proto
from fedsql.service.protocol import CANCEL, EXPLAIN, LIST_QUERIES
from fedsql.service.status import reason_of, split_code
from fedsql.v1 import flight_sql_pb2 as sql_pb

PURPOSE_HEADER = "x-fedsql-purpose"
CONNECT_TIMEOUT = 10.0  # seconds the sign-in may take before the host counts as unreachable
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class RemoteError(FedSQLError):
    """The service refused or failed a request; ``reason`` is what the service said
    of why, for programs (``status.reason_of``)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


def purpose_value(purpose: str) -> str:
    """The ``x-fedsql-purpose`` value for ``purpose``.

    >>> purpose_value("audit 2025/03: sample 5%")
    'audit 2025/03: sample 5%25'
    >>> purpose_value("Gesundheitsstatistik für Ämter")
    'Gesundheitsstatistik f%C3%BCr %C3%84mter'
    """
    return quote(purpose, safe=_PRINTABLE)


def _clean(e: Exception) -> str:
    """A Flight error's message without gRPC's debug context or the service's code."""
    text = re.sub(r"\. Detail: .*", "", str(e), flags=re.DOTALL).split("\n")[0]
    text = re.sub(r"^Flight returned \w+ error, with message: ", "", text)
    return split_code(text)[1]


def diagnose(url: str, message: str, timed_out: bool, timeout: float, ca: bool = False) -> str:
    """What went wrong reaching ``url``, from gRPC's account of the failed call
    (``message``), and what to do about it (``ca``: a --ca file was given).

    >>> diagnose("grpc+tls://h:1", "failed to connect to all addresses; last error: "
    ...          "UNKNOWN: ipv4:10.0.0.1:1: Failed to connect to remote host: Connection refused",
    ...          False, 10)[:48]
    'nothing is listening at h:1 (connection refused)'
    """
    parts = urlsplit(url)
    where = parts.netloc or url
    host = parts.hostname or where
    tls = parts.scheme in ("grpc+tls", "grpcs", "https")
    low = message.lower()
    if timed_out or "deadline exceeded" in low:
        return (
            f"no answer from {where} within {timeout:g} s: the host is unreachable, or a "
            "firewall drops the traffic; check the host and port, your network or VPN "
            "(--connect-timeout SECONDS waits longer)"
        )
    if "connection refused" in low:
        return (
            f"nothing is listening at {where} (connection refused): is `fedsql serve` "
            "running there? It prints its URL when it starts ([service] listen)"
        )
    if any(w in low for w in ("errors resolving", "domain name not found", "lookup failed")):
        return f"unknown host '{host}' (the name does not resolve): check the URL"
    if any(w in low for w in ("no route to host", "network is unreachable", "host is unreachable")):
        reason = re.sub(r".*: ", "", message)
        return (
            f"host {host} is unreachable ({reason}): check the address, your network or VPN, "
            "and firewalls"
        )
    if tls and "wrong version number" in low:  # a TLS hello answered in plaintext
        return (
            f"the service at {where} does not speak TLS (it runs with [service] "
            f"insecure = true?): use grpc+tcp://{where}, or give it a [service.tls] certificate"
        )
    if not tls and any(w in low for w in ("socket closed", "connection reset", "goaway")):
        return (
            f"the service at {where} closed the plaintext connection: it speaks TLS (the "
            f"default): use grpc+tls://{where}, with --ca FILE if a private CA signed its "
            "certificate"
        )
    if "certificate has expired" in low:
        return (
            "the service's TLS certificate has expired: ask its administrator to renew it "
            "(fedsql certs issue)"
        )
    if "certificate verify failed" in low:
        reason = re.sub(r".*certificate verify failed: ?", "", message) or "not trusted"
        fix = (
            "the --ca file is not the CA that signed it"
            if ca
            else "give --ca FILE, the PEM file of the CA that signed it"
        )
        return (
            f"the service's TLS certificate is not trusted ({reason}): {fix} (ask the "
            "service's administrator); --insecure-skip-verify turns the check off, for "
            "testing only"
        )
    if "not in peer certificate" in low:
        return (
            f"the service's TLS certificate does not name '{host}': connect with a name it "
            "was issued for (`fedsql certs show CERT` lists them)"
        )
    if any(w in low for w in ("handshake", "ssl", "tls")):
        return (
            f"the TLS handshake with {where} failed ({message}): check the URL's scheme "
            "(grpc+tls:// or grpc+tcp://, as the service runs) and --ca"
        )
    m = re.search(r"received http2 header with status: (\d+)", low)
    if m:
        return (
            f"something other than a Flight SQL service answered at {where} (HTTP status "
            f"{m.group(1)}: a proxy or web server?): check the host and port"
        )
    return message


class Remote:
    """One signed-in session with a `fedsql serve` service."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        ca_file: Path | None = None,
        verify: bool = True,
        purpose: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
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
        self._purpose = (purpose or "").strip()
        self._ca = ca_file is not None
        self._auth: list[tuple[bytes, bytes]] = []
        self.client = flight.FlightClient(url, **kwargs)
        try:
            self._sign_in(password, connect_timeout)
        except BaseException:
            self.client.close()
            raise
        self.options = self._options()

    def _sign_in(self, password: str, timeout: float) -> None:
        """Flight's basic-then-bearer handshake, then one call: the service checks
        the password at the first call after the handshake (service/auth.py)."""
        t0 = time.monotonic()
        try:
            header = self.client.authenticate_basic_token(
                self.user, password, self._options(timeout)
            )
            self._auth = [header]
            list(self.client.list_actions(self._options(timeout)))
        except flight.FlightUnauthenticatedError as e:
            raise RemoteError(
                f"{self.url}: sign-in refused for user '{self.user}': {_clean(e)}; check the "
                "user name and the password (--password-file, $FEDSQL_PASSWORD or the "
                "prompt); the service's administrator sets it (`fedsql passwd`)"
            ) from None
        except flight.FlightError as e:
            timed_out = isinstance(e, flight.FlightTimedOutError) or (
                time.monotonic() - t0 >= timeout * 0.95
            )
            message = _clean(e)
            if not timed_out and not self._auth:
                # A failed handshake reads "Could not finish writing before closing",
                # whatever the cause; a plain call reports what gRPC saw.
                message = self._probe(timeout) or message
            why = diagnose(self.url, message, timed_out, timeout, self._ca)
            raise RemoteError(f"{self.url}: cannot connect: {why}") from None

    def _probe(self, timeout: float) -> str:
        try:
            list(self.client.list_actions(flight.FlightCallOptions(timeout=timeout)))
        except flight.FlightUnauthenticatedError:
            return ""  # the service answers: the connection itself is fine
        except flight.FlightError as e:
            return _clean(e)
        return ""

    def _options(self, timeout: float | None = None) -> flight.FlightCallOptions:
        headers = list(self._auth)
        if self._purpose:
            headers.append((PURPOSE_HEADER.encode(), purpose_value(self._purpose).encode()))
        return flight.FlightCallOptions(headers=headers, timeout=timeout)

    @property
    def purpose(self) -> str:
        """Why the analyst asks; sent with every call (``x-fedsql-purpose``)."""
        return self._purpose

    @purpose.setter
    def purpose(self, purpose: str) -> None:
        self._purpose = purpose.strip()
        self.options = self._options()

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args, self.options)
        except flight.FlightCancelledError as e:
            raise QueryCancelled(_clean(e)) from None
        except flight.FlightError as e:
            raise RemoteError(_clean(e), reason_of(e)) from None
        except pa.ArrowException as e:
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
