"""PostgreSQL backend: fragments transpiled to PostgreSQL, results streamed as Arrow (ADBC).

Defence in depth at the source:

- the database role is checked when the connector starts (``pgrole.py``):
  one that may write or escalate is refused unless ``[backend]
  allow_writable_role = true``, and SELECT on tables the connector does not
  expose is warned about;
- every session pins its own settings (:func:`session_settings`), whatever the
  database or role defaults: read-only transactions, standard string literals,
  a fixed ``search_path`` and timeouts;
- each fragment runs in its own transaction, rolled back afterwards, on a
  connection from a bounded pool.

Credentials come from a file or an environment variable and are never logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import sqlglot
from sqlglot import exp

from fedsql.capabilities import ALL_FEATURES, Capabilities
from fedsql.connectors.backend import (
    BackendError,
    Interrupter,
    Running,
    adbc_running,
    arrow_type_of_declared,
    exposed_names,
)
from fedsql.connectors.kind import BackendConfig, BackendKind
from fedsql.connectors.pgrole import check_role, ident, qualified, role_rights, warn_unexposed
from fedsql.connectors.pgsample import sample, sql_type
from fedsql.connectors.pgsession import (
    backend_error,
    first_line,
    is_connection_error,
    password_of,
    session_settings,
    with_password,
)
from fedsql.errors import ConfigError
from fedsql.lockdown import Setup
from fedsql.tomlconf import rel
from fedsql.wire import RemoteTable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """The ``[backend]`` keys of kind ``postgres``."""

    dsn: str  # libpq URI or keywords, without the password
    password_file: Path | None = None  # the password, from this file ...
    password_env: str | None = None  # ... or from this environment variable
    pool_size: int = 4  # connections at most
    statement_timeout_seconds: float = 300.0  # per fragment
    allow_writable_role: bool = False  # start even if the role may write (loud warning)

    def __repr__(self) -> str:  # never show a DSN that might carry a secret
        return f"PostgresOptions(pool_size={self.pool_size})"


class PostgresBackend:
    kind = "postgres"
    dialect = "postgres"
    runs_as_written = False  # fragments are transpiled; key sets written as arrays
    default_schemas = ("", "public")
    # A correlated scalar subquery is a SubPlan, run once per outer row; EXISTS and
    # IN become semi-joins.
    per_row_subqueries = frozenset({"scalar"})
    # PostgreSQL runs what DuckDB does for the SQL fedsql pushes, given a "C"
    # collation (with another, comparing and sorting *text* differ; numbers and
    # dates do not). Expressions it computes its own way are not asked of it
    # (exact_expressions), and key sets are written into its SQL.
    # Left out: what PostgreSQL computes or names its own way (LIKE's default
    # backslash escape and POSIX regular expressions, substr's count from a start
    # below 1, hashes as bytes, NULLs in greatest(), DuckDB-only functions, EXTRACT
    # parts beyond year..minute, which sqlglot writes as DuckDB names them; QUALIFY,
    # which sqlglot writes as a subquery that applies ORDER BY and LIMIT first).
    capabilities = Capabilities(
        ALL_FEATURES
        - {
            "exact_expressions",
            "arrow_key_sets",
            "pattern_matching",
            "negative_substring",
            "string_functions_extra",
            "statistics",
            "extended_aggregates",
            "math_functions",
            "duckdb_functions",
            "date_parts",
            "qualify",
        }
    )

    def __init__(self, backend: BackendConfig) -> None:
        import adbc_driver_postgresql.dbapi as pg

        self._pg = pg
        cfg: PostgresOptions = backend.options
        password = password_of(cfg)
        self._conninfo = cfg.dsn if password is None else with_password(cfg.dsn, password)
        # what must never appear in an error message: the password, as given and encoded
        self._secrets = [(self._conninfo, cfg.dsn)]
        if password:
            self._secrets += [(quote(password, safe=""), "***"), (password, "***")]
        self._settings = session_settings(int(cfg.statement_timeout_seconds * 1000))
        self._pool: queue.Queue[Any] = queue.Queue(maxsize=cfg.pool_size)
        self._size = cfg.pool_size
        self.max_scans = cfg.pool_size
        self._opened = 0
        self._lock = threading.Lock()
        con = self._connect()
        try:
            role = str(self._scalar(con, "SELECT current_user"))
            rights = role_rights(con)
            con.rollback()
            check_role(role, rights, cfg.allow_writable_role)
            self._tables = self._catalog(con, backend.tables, role)
            warn_unexposed(role, rights, self._tables)
            collation, ctype = self._row(
                con,
                "SELECT datcollate, datctype FROM pg_database WHERE datname = current_database()",
            )
            features = set(self.capabilities.features)
            if collation not in ("C", "POSIX"):
                features.discard("text_ordering")  # text order is not DuckDB's byte order
            if ctype in ("C", "POSIX"):
                features.discard("unicode_case")  # lower('Ä') stays 'Ä' there
            self.capabilities = Capabilities(frozenset(features))
        except BaseException:
            self._release(con, broken=True)
            raise
        self._release(con)

    # -- connections -----------------------------------------------------------
    def _connect(self) -> Any:
        try:
            con = self._pg.connect(self._conninfo)
        except Exception as e:  # libpq may quote the connection string: scrub it
            msg = self._scrub(first_line(e))
            raise BackendError(f"cannot connect to PostgreSQL: {msg}", False) from None
        try:
            with con.cursor() as cur:
                # one round trip; set_config(..., false) is SET: for the session,
                # once the transaction commits
                sets = (f"set_config('{k}', '{v}', false)" for k, v in self._settings.items())
                cur.execute("SELECT " + ", ".join(sets))
                got = cur.fetchone()
            con.commit()
        except Exception as e:
            _quietly_close(con)
            raise BackendError(
                f"cannot set up a PostgreSQL session: {first_line(e)}", False
            ) from None
        pinned = dict(zip(self._settings, got or (), strict=False))
        for k in ("standard_conforming_strings", "search_path", "default_transaction_read_only"):
            if pinned.get(k) != self._settings[k]:
                _quietly_close(con)
                raise BackendError(f"PostgreSQL did not keep {k} = {self._settings[k]}", False)
        with self._lock:
            self._opened += 1
        return con

    def _scrub(self, text: str) -> str:
        for secret, shown in self._secrets:
            text = text.replace(secret, shown)
        return text

    def _acquire(self) -> Any:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            can_open = self._opened < self._size
        if can_open:
            return self._connect()
        try:
            return self._pool.get(timeout=30)
        except queue.Empty:
            raise BackendError("all PostgreSQL connections are busy; try again", False) from None

    def _release(self, con: Any, broken: bool = False) -> None:
        if not broken:
            try:
                con.rollback()  # nothing a fragment did outlives it
                self._pool.put_nowait(con)
                return
            except Exception:
                pass
        try:
            con.close()
        except Exception:
            pass
        with self._lock:
            self._opened -= 1

    @staticmethod
    def _scalar(con: Any, sql: str) -> Any:
        return PostgresBackend._row(con, sql)[0]

    @staticmethod
    def _row(con: Any, sql: str) -> tuple[Any, ...]:
        with con.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
        return tuple(row) if row else (None,)

    # -- catalog ---------------------------------------------------------------
    def _catalog(
        self, con: Any, only: tuple[str, ...] | None, role: str
    ) -> tuple[RemoteTable, ...]:
        """The exposed tables: those listed in ``[backend].tables``, else every table
        and view the role may SELECT (so names and columns of the others stay home)."""
        with con.cursor() as cur:
            cur.execute(
                """
                SELECT n.nspname, c.relname, c.reltuples::bigint, a.attname,
                       format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
                       has_table_privilege(c.oid, 'SELECT')
                FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname !~ '^pg_(toast|temp_)'
                ORDER BY n.nspname, c.relname, a.attnum
                """
            )
            rows = cur.fetchall()
        con.rollback()
        tables: dict[tuple[str, str], tuple[int, bool, list[pa.Field]]] = {}
        for schema, name, est, col, typ, nullable, readable in rows:
            key = ("" if schema == "public" else schema, name)
            fields = tables.setdefault(key, (int(est), bool(readable), []))[2]
            fields.append(pa.field(col, arrow_type_of_declared(typ), nullable=bool(nullable)))
        full_names = {
            (f"{schema}.{name}" if schema else name): (schema, name)
            for (schema, name), (_, readable, _) in tables.items()
            if only is not None or readable
        }
        chosen = set(exposed_names(sorted(full_names), only))
        out = []
        denied = []
        for (schema, name), (est, readable, fields) in sorted(tables.items()):
            full = f"{schema}.{name}" if schema else name
            if full not in chosen:
                continue
            if not readable:
                denied.append(qualified(schema or "public", name))
            out.append(RemoteTable(schema, name, pa.schema(fields), est if est >= 0 else -1))
        if denied:
            raise ValueError(
                f"PostgreSQL role '{role}' may not SELECT {', '.join(denied)}, listed in "
                f"[backend].tables; an administrator can run: GRANT SELECT ON "
                f"{', '.join(denied)} TO {ident(role)}"
            )
        return tuple(out)

    def tables(self) -> tuple[RemoteTable, ...]:
        return self._tables

    # -- execution -------------------------------------------------------------
    def execute(
        self,
        sql: str,
        batch_rows: int,
        tables: dict[str, pa.Table] | None = None,
        interrupter: Interrupter | None = None,
    ) -> Running:
        con = self._acquire()
        return adbc_running(
            con,
            sql,
            interrupter,
            backend_error,
            lambda broken: self._release(con, broken),
            is_connection_error,
        )

    @staticmethod
    def key_condition(probe: exp.Expr, values: list[Any]) -> exp.Expr:
        """``probe = ANY(CAST('{...}' AS type[]))``: one literal, parsed in microseconds,
        probed through a hash table (PostgreSQL hashes large ``= ANY`` arrays) or an index.

        >>> print(PostgresBackend.key_condition(exp.column("b"), [3, 1]).sql("postgres"))
        b = ANY(CAST('{3,1}' AS BIGINT[]))
        """
        if values and isinstance(values[0], str):
            items = ['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]
            typ = "TEXT"
        elif values and isinstance(values[0], dt.date):
            items, typ = [v.isoformat() for v in values], "DATE"
        else:
            items, typ = [str(v) for v in values], "BIGINT"
        literal = exp.Literal.string("{" + ",".join(items) + "}")
        cond = sqlglot.parse_one(f"x = ANY(CAST('{{}}' AS {typ}[]))", read="postgres")
        cond.this.replace(probe.copy())
        cond.expression.this.this.set("this", literal)
        return cond

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break
            except Exception:
                pass


def _quietly_close(con: Any) -> None:
    try:
        con.close()
    except Exception:  # already broken: nothing to close
        pass


def _options(where: str, base: Path, d: dict[str, Any]) -> PostgresOptions:
    if re.search(r"://[^/@]*:[^/@]*@", d["dsn"]):
        raise ConfigError(
            f"{where}.dsn must not contain a password; use password_file or password_env"
        )
    for k in ("pool_size", "statement_timeout_seconds"):
        if k in d and (isinstance(d[k], bool) or d[k] <= 0):
            raise ConfigError(f"{where}.{k} must be a positive number")
    return PostgresOptions(
        dsn=d["dsn"],
        password_file=rel(base, d["password_file"]) if "password_file" in d else None,
        password_env=d.get("password_env"),
        pool_size=d.get("pool_size", 4),
        statement_timeout_seconds=float(d.get("statement_timeout_seconds", 300.0)),
        allow_writable_role=d.get("allow_writable_role", False),
    )


def _open(cfg: BackendConfig, setup: Setup | None, limits: dict[str, Any]) -> PostgresBackend:
    return PostgresBackend(cfg)  # its fragments' DuckDB work runs in the node's engine


KIND = BackendKind(
    name="postgres",
    what="a PostgreSQL database, read through ADBC",
    keys={
        "dsn": str,
        "password_file": str,
        "password_env": str,
        "pool_size": int,
        "statement_timeout_seconds": (int, float),
        "allow_writable_role": bool,
    },
    required=("dsn",),
    options=_options,
    open=_open,
    sql_type=sql_type,
    sample=sample,
    location="dsn",
)
