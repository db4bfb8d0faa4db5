"""PostgreSQL backend: fragments transpiled to PostgreSQL, results streamed as Arrow (ADBC).

Read-only at the source: every session is ``default_transaction_read_only`` with
a ``statement_timeout``; each fragment runs in its own transaction, rolled back
afterwards, on a connection from a bounded pool. Credentials come from a file
or an environment variable and are never logged.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

import pyarrow as pa

from fedsql.config import BackendConfig
from fedsql.connectors.backend import (
    BackendError,
    Interrupter,
    Running,
    adbc_running,
    arrow_type_of_declared,
    check_listed,
)
from fedsql.wire import RemoteTable

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


class PostgresBackend:
    kind = "postgres"
    dialect = "postgres"
    default_schemas = ("", "public")
    # PostgreSQL runs what DuckDB does for the SQL fedsql pushes, given a "C"
    # collation; with another collation ORDER BY/comparisons on text differ.
    unsupported: frozenset[str] = frozenset()

    def __init__(self, cfg: BackendConfig) -> None:
        import adbc_driver_postgresql.dbapi as pg

        self._pg = pg
        assert cfg.dsn is not None
        self._dsn = cfg.dsn
        self._password = _password(cfg)
        self._timeout_ms = int(cfg.statement_timeout_seconds * 1000)
        self._pool: queue.Queue[Any] = queue.Queue(maxsize=cfg.pool_size)
        self._size = cfg.pool_size
        self.max_scans = cfg.pool_size
        self._opened = 0
        self._lock = threading.Lock()
        con = self._connect()
        try:
            self._tables = self._catalog(con, cfg.tables)
            collation = self._scalar(
                con, "SELECT datcollate FROM pg_database WHERE datname = current_database()"
            )
            if collation not in ("C", "POSIX"):
                # Text order differs from DuckDB's byte order: keep sorting home.
                self.unsupported = frozenset({"Ordered", "GT", "GTE", "LT", "LTE", "Between"})
        finally:
            self._release(con)

    # -- connections -----------------------------------------------------------
    def _connect(self) -> Any:
        kwargs: dict[str, Any] = {}
        if self._password is not None:
            kwargs["db_kwargs"] = {"password": self._password}
        try:
            con = self._pg.connect(self._dsn, **kwargs)
        except Exception as e:  # driver errors carry no secrets, but keep it short
            raise BackendError(f"cannot connect to PostgreSQL: {_first(e)}", False) from None
        with con.cursor() as cur:
            cur.execute("SET default_transaction_read_only = on")
            cur.execute(f"SET statement_timeout = {self._timeout_ms}")
            cur.execute("SET search_path = public")
        con.commit()
        with self._lock:
            self._opened += 1
        return con

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
        with con.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
        return row[0] if row else None

    # -- catalog ---------------------------------------------------------------
    def _catalog(self, con: Any, only: tuple[str, ...] | None) -> tuple[RemoteTable, ...]:
        with con.cursor() as cur:
            cur.execute(
                """
                SELECT n.nspname, c.relname, c.reltuples::bigint, a.attname,
                       format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
                FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname NOT LIKE 'pg_toast%'
                ORDER BY n.nspname, c.relname, a.attnum
                """
            )
            rows = cur.fetchall()
        con.rollback()
        tables: dict[tuple[str, str], tuple[int, list[pa.Field]]] = {}
        for schema, name, est, col, typ, nullable in rows:
            key = ("" if schema == "public" else schema, name)
            fields = tables.setdefault(key, (int(est), []))[1]
            fields.append(pa.field(col, arrow_type_of_declared(typ), nullable=bool(nullable)))
        wanted = {t.lower() for t in only} if only is not None else None
        out = []
        for (schema, name), (est, fields) in sorted(tables.items()):
            full = f"{schema}.{name}" if schema else name
            if wanted is not None and full.lower() not in wanted:
                continue
            out.append(RemoteTable(schema, name, pa.schema(fields), est if est >= 0 else -1))
        check_listed(wanted, {t.full_name.lower() for t in out})
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
            _backend_error,
            lambda broken: self._release(con, broken),
            _is_connection_error,
        )

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break
            except Exception:
                pass


def _password(cfg: BackendConfig) -> str | None:
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


def _first(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _sqlstate(e: Exception) -> str:
    return str(getattr(e, "sqlstate", "") or "")


def _is_connection_error(e: Exception) -> bool:
    return _sqlstate(e).startswith("08") or "connection" in _first(e).lower()


def _backend_error(e: Exception) -> BackendError:
    state = _sqlstate(e)
    msg = _first(e)
    # Cut the driver's prefix ("ProgrammingError: [libpq] ...") and any quoted value.
    msg = msg.split("] ", 1)[-1]
    if state.startswith(_DATA_STATES):
        import re

        msg = re.sub(r'"[^"]*"|\'[^\']*\'', "'…'", msg)
    unsupported = state.startswith(_UNSUPPORTED_STATES)
    return BackendError(
        f"PostgreSQL: {msg}", user_error=state.startswith(("22", "42")), unsupported=unsupported
    )
