"""A PostgreSQL session as a connector opens it: pinned settings, the password,
and what its errors mean (:func:`backend_error`).

Credentials come from a file or an environment variable and are never logged.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from fedsql.connectors.backend import BackendError

if TYPE_CHECKING:
    from fedsql.connectors.postgres import PostgresOptions

LOCK_TIMEOUT_MS = 10_000  # the longest a fragment waits for a table lock


# What every session sets itself, after connecting: database and role defaults
# (ALTER DATABASE / ALTER ROLE ... SET) may say otherwise, and are not trusted
# (PostgreSQL docs, 20.11 Client Connection Defaults; 20.13.1 Previous PostgreSQL
# Versions for standard_conforming_strings). Values in milliseconds where timed.
def session_settings(statement_timeout_ms: int) -> dict[str, str]:
    """The settings pinned on every connection.

    >>> session_settings(300_000)["standard_conforming_strings"]
    'on'
    """
    return {
        # sqlglot writes DuckDB's 'a\b' as the same text: with this off, PostgreSQL
        # would read the backslash as an escape, so a value ending in one would
        # end the literal somewhere else than the checked fragment says.
        "standard_conforming_strings": "on",
        # Names resolve in public only (pg_catalog, implicitly first, still wins for
        # functions), never in a schema an attacker could write to (CVE-2018-1058).
        "search_path": "public",
        "default_transaction_read_only": "on",
        "statement_timeout": str(statement_timeout_ms),
        # A fragment that leaves its transaction idle (a client that stopped
        # reading) holds back VACUUM; no longer than a statement may run.
        "idle_in_transaction_session_timeout": str(statement_timeout_ms),
        # Wait for a table lock (an agency's DDL, VACUUM FULL) at most this long,
        # then fail, rather than queue and stall the agency's own work behind us.
        "lock_timeout": str(min(statement_timeout_ms, LOCK_TIMEOUT_MS)),
    }


def password_of(cfg: PostgresOptions) -> str | None:
    if cfg.password_file is not None:
        try:
            return cfg.password_file.read_text().strip()
        except OSError as e:
            raise ValueError(f"cannot read password_file: {e.strerror}") from None
    if cfg.password_env is not None:
        value = os.environ.get(cfg.password_env)
        if value is None:
            raise ValueError(f"environment variable {cfg.password_env} (password_env) is not set")
        return value
    return None


def with_password(dsn: str, password: str) -> str:
    """``dsn`` with the password as a libpq parameter: the PostgreSQL driver of ADBC
    1.13 takes no ``password`` option, only the connection string (``uri``), which
    libpq reads in either of its two forms (PostgreSQL docs, 34.1.1 Connection
    Strings: URI query parameters are percent-decoded; keyword values quoted, with
    backslash escapes).

    >>> with_password("postgresql://u@h/db", "p&ss w%rd")
    'postgresql://u@h/db?password=p%26ss%20w%25rd'
    >>> with_password("host=h user=u", "it's")
    "host=h user=u password='it\\\\'s'"
    """
    if re.match(r"postgres(ql)?://", dsn):
        return f"{dsn}{'&' if '?' in dsn else '?'}password={quote(password, safe='')}"
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return f"{dsn} password='{escaped}'"


# SQLSTATE classes (PostgreSQL docs, Appendix A): 42 = syntax error or access
# rule violation (undefined function, wrong types...), 0A = feature not supported.
# Syntax and semantic errors PostgreSQL raises for SQL that DuckDB (which planned
# it) accepts: a dialect gap, so the coordinator falls back to table scans.
_UNSUPPORTED_STATES = (
    "42601",
    "42883",
    "42804",
    "42846",
    "42P18",
    "0A000",
    "42725",
    "42P10",  # ORDER BY expressions not in a SELECT DISTINCT list
    "42803",  # grouping error
)
_DATA_STATES = ("22",)  # data exception: a value was at fault


def first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def sqlstate(e: Exception) -> str:
    return str(getattr(e, "sqlstate", "") or "")


def is_connection_error(e: Exception) -> bool:
    return sqlstate(e).startswith("08") or "connection" in first_line(e).lower()


def backend_error(e: Exception) -> BackendError:
    state = sqlstate(e)
    msg = first_line(e)
    # Cut the driver's prefix ("ProgrammingError: [libpq] ...") and any quoted value.
    msg = msg.split("] ", 1)[-1]
    if state.startswith(_DATA_STATES):
        msg = re.sub(r'"[^"]*"|\'[^\']*\'', "'…'", msg)
    unsupported = state.startswith(_UNSUPPORTED_STATES)
    return BackendError(
        f"PostgreSQL: {msg}", user_error=state.startswith(("22", "42")), unsupported=unsupported
    )
