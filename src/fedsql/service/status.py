"""What a client of `fedsql serve` sees when a call fails: a stable code and a message.

The one place that turns failures into Flight statuses. Nothing else leaves the
service: no traceback, no server path, no data value quoted in an engine's error.

Why not simply raise ``pa.ArrowInvalid`` or ``KeyError`` for INVALID_ARGUMENT and
NOT_FOUND: pyarrow (checked with 26.0.1) converts any exception from a handler
that is not a ``pyarrow.flight.Flight*Error`` into an Arrow status whose detail is
``traceback.format_exception`` of it; gRPC then carries that detail twice, in the
status message (``msg. Detail: Python exception: Traceback ... File "/srv/..."``)
and in the ``x-arrow-status-detail-bin`` trailer. Only the Flight*Error classes
become statuses without it, and they have no INVALID_ARGUMENT, NOT_FOUND or
RESOURCE_EXHAUSTED (``FlightServerError`` is UNKNOWN; no Arrow status code maps
to RESOURCE_EXHAUSTED at all). So a code the wire can carry cleanly travels as
the gRPC status; the others travel as UNKNOWN with the code as the message's
first word, ``INVALID_ARGUMENT: ...``, which :func:`split_code` reads back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pyarrow.flight as flight

from fedsql import reasons
from fedsql.errors import (
    CatalogError,
    ConfigError,
    ConnectorError,
    ExecutionError,
    FedSQLError,
    FragmentLimitExceeded,
    FragmentNotPermitted,
    PlanError,
    PolicyError,
    QueryCancelled,
    QueryTimeout,
)

INVALID_ARGUMENT = "INVALID_ARGUMENT"  # bad SQL, a malformed or refused request
NOT_FOUND = "NOT_FOUND"  # unknown table, result, prepared statement
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"  # over a [service] or [limits] cap
UNIMPLEMENTED = "UNIMPLEMENTED"
PERMISSION_DENIED = "PERMISSION_DENIED"
UNAUTHENTICATED = "UNAUTHENTICATED"
UNAVAILABLE = "UNAVAILABLE"  # an agency cannot be reached; the service is busy
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
CANCELLED = "CANCELLED"
INTERNAL = "INTERNAL"

# The codes pyarrow sends as themselves, without a Python traceback.
CLEAN: dict[str, type[flight.FlightError]] = {
    PERMISSION_DENIED: flight.FlightUnauthorizedError,
    UNAUTHENTICATED: flight.FlightUnauthenticatedError,
    UNAVAILABLE: flight.FlightUnavailableError,
    DEADLINE_EXCEEDED: flight.FlightTimedOutError,
    CANCELLED: flight.FlightCancelledError,
    INTERNAL: flight.FlightInternalError,
}
CODES = frozenset(CLEAN) | {INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNIMPLEMENTED}

# Reasons the service passes on to its clients (FedSQLError.reason).
REASONS = frozenset({reasons.PURPOSE_REQUIRED})

MAX_MESSAGE = 2000  # characters of a message sent (a parser may echo a whole query)


class Refused(Exception):
    """A request the service turns down; ``message`` is fit for the client as is."""

    def __init__(self, code: str, message: str) -> None:
        assert code in CODES, code
        super().__init__(message)
        self.code = code
        self.message = message


def to_flight(code: str, message: str, reason: str = "") -> flight.FlightError:
    """The Flight exception a handler raises for ``code`` (server paths blanked).
    ``reason`` (a ``reasons`` name) travels as the error's ``extra_info``, for
    programs: :func:`reason_of` reads it back.

    >>> str(to_flight("NOT_FOUND", "unknown table 'x'"))
    "NOT_FOUND: unknown table 'x'"
    >>> type(to_flight("PERMISSION_DENIED", "no")).__name__
    'FlightUnauthorizedError'
    """
    if len(message) > MAX_MESSAGE:  # cut first: the path pattern then scans little
        message = message[: MAX_MESSAGE - 3] + "..."
    text = blank_paths(message)
    extra = reason.encode() if reason in REASONS else b""
    cls = CLEAN.get(code)
    if cls is None:
        return flight.FlightServerError(f"{code}: {text}", extra_info=extra)
    return cls(text, extra_info=extra)


def reason_of(e: flight.FlightError) -> str:
    """The reason :func:`to_flight` sent with ``e`` ("" if none, or not one of ours).

    >>> reason_of(to_flight("PERMISSION_DENIED", "no", reasons.PURPOSE_REQUIRED))
    'PURPOSE_REQUIRED'
    """
    raw = e.extra_info or b""
    text = raw.decode("ascii", "replace") if len(raw) <= 64 else ""
    return text if text in REASONS else ""


def split_code(message: str) -> tuple[str | None, str]:
    """(code, message) of a message :func:`to_flight` prefixed; (None, message) else.

    >>> split_code("RESOURCE_EXHAUSTED: too big")
    ('RESOURCE_EXHAUSTED', 'too big')
    """
    code, sep, rest = message.partition(": ")
    if sep and code in CODES:
        return code, rest
    return None, message


def from_fedsql(e: FedSQLError, known: Iterable[str] = ()) -> tuple[str, str]:
    """(code, message) for a query's failure. Text that comes from an engine (an
    agency's error, the coordinator's DuckDB) has its quoted values blanked; names
    in ``known`` (agencies, tables, columns, the user) may stay."""
    msg = str(e)
    if isinstance(e, QueryCancelled):
        return CANCELLED, msg
    if isinstance(e, QueryTimeout):
        return DEADLINE_EXCEEDED, msg
    if isinstance(e, PolicyError):
        return PERMISSION_DENIED, msg
    if isinstance(e, CatalogError):
        return NOT_FOUND, msg
    if isinstance(e, PlanError):
        return INVALID_ARGUMENT, msg
    if isinstance(e, ConfigError):  # the service's own configuration: not the client's doing
        return INTERNAL, msg
    if isinstance(e, FragmentLimitExceeded):
        return RESOURCE_EXHAUSTED, redact(msg, known)
    if isinstance(e, FragmentNotPermitted):  # a grant, a required purpose
        return PERMISSION_DENIED, redact(msg, known)
    if isinstance(e, ConnectorError):
        code = UNAVAILABLE if type(e) is ConnectorError else INVALID_ARGUMENT
        return code, redact(msg, known)
    if isinstance(e, ExecutionError):
        return INVALID_ARGUMENT, redact(msg, known)
    return INTERNAL, redact(msg, known)


# -- redaction ------------------------------------------------------------------------

_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[\w.@+~-]+[/\\])+[\w.@+~-]*")
_PLACEHOLDERS = frozenset({"…", "...", "<value>"})


def blank_paths(text: str) -> str:
    """File paths (two components or more) become ``<path>``.

    >>> blank_paths('File "/srv/fedsql/server.py", line 3; rows/bytes')
    'File "<path>", line 3; rows/bytes'
    """
    return _PATH.sub("<path>", text)


def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _spans(text: str) -> list[tuple[int, int, str | None]]:
    """Quoted spans of ``text`` as (start, end, content), and stray quotes as
    (start, end, None).

    Engines quote values without escaping them (DuckDB: ``string 'O'Hara' to
    INT32``), so a quote closes a span only when no letter or digit follows it;
    ``''`` inside '...' and backslash escapes inside E'...' are part of the value.
    A quote between two letters outside any span is an apostrophe (``can't``); any
    other quote outside a span is stray, and an unterminated span runs to the end.
    """
    out: list[tuple[int, int, str | None]] = []
    i, n = 0, len(text)
    while i < n:
        q = text[i]
        if q not in "'\"":
            i += 1
            continue
        before = text[i - 1] if i else " "
        e_string = q == "'" and before in "eE" and (i < 2 or not _word(text[i - 2]))
        if _word(before) and not e_string:
            after = text[i + 1] if i + 1 < n else " "
            if not _word(after):
                out.append((i, i + 1, None))  # a quote no word boundary explains
            i += 1
            continue
        start = i - 1 if e_string else i
        j = i + 1
        while j < n:
            c = text[j]
            if e_string and c == "\\":
                j += 2
                continue
            if c == q and text[j + 1 : j + 2] == q:
                j += 2
                continue
            if c == q and (j + 1 == n or not _word(text[j + 1])):
                break
            j += 1
        end = min(j + 1, n)
        out.append((start, end, text[i + 1 : j] if j < n else None))
        i = end
    return out


def redact(text: str, known: Iterable[str] = ()) -> str:
    """``text`` with every quoted value blanked; quoted ``known`` names stay.

    Everything from the first quoted value to the last is one ``'…'``: however the
    quotes inside a value fall, no part of it survives between two of them.

    >>> redact("agency 'trade': Could not convert string 'O'Hara' to INT32", {"trade"})
    "agency 'trade': Could not convert string '…' to INT32"
    >>> redact("bad 'it''s', E'a\\\\'b' and \\"x\\"", ())
    "bad '…'"
    >>> redact("string '…'Hara-X' to INT32")  # what a naive redactor left behind
    "string '…' to INT32"
    """
    names = {k.lower() for k in known} | _PLACEHOLDERS
    bad = [(s, e) for s, e, c in _spans(text) if c is None or c.lower() not in names]
    if not bad:
        return text
    return text[: bad[0][0]] + "'…'" + text[bad[-1][1] :]
