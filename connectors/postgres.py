"""PostgreSQL backend: fragments transpiled to PostgreSQL, results streamed as Arrow (ADBC).

Defence in depth at the source:

- the database role is checked when the connector starts (:func:`role_rights`):
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

import logging
import os
import queue
import re
import threading
from collections import defaultdict
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from fedsql.capabilities import ALL_FEATURES, Capabilities
from fedsql.config import BackendConfig
from fedsql.connectors.backend import (
    BackendError,
    Interrupter,
    Running,
    adbc_running,
    arrow_type_of_declared,
    exposed_names,
)
from fedsql.wire import RemoteTable

log = logging.getLogger(__name__)

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


class PostgresBackend:
    kind = "postgres"
    dialect = "postgres"
    default_schemas = ("", "public")
    # PostgreSQL runs what DuckDB does for the SQL fedsql pushes, given a "C"
    # collation (with another, comparing and sorting *text* differ; numbers and
    # dates do not). Expressions it computes its own way are not asked of it
    # (exact_expressions), and key sets are written into its SQL.
    # Left out: what PostgreSQL computes or names its own way (LIKE's default
    # backslash escape and POSIX regular expressions, substr's count from a start
    # below 1, hashes as bytes, NULLs in greatest(), DuckDB-only functions).
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
        }
    )

    def __init__(self, cfg: BackendConfig) -> None:
        import adbc_driver_postgresql.dbapi as pg

        self._pg = pg
        assert cfg.dsn is not None
        password = _password(cfg)
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
            _check_role(role, rights, cfg.allow_writable_role)
            self._tables = self._catalog(con, cfg.tables, role)
            _warn_unexposed(role, rights, self._tables)
            collation, ctype = self._row(
                con,
                "SELECT datcollate, datctype FROM pg_database "
                "WHERE datname = current_database()",
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
            msg = self._scrub(_first(e))
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
            raise BackendError(f"cannot set up a PostgreSQL session: {_first(e)}", False) from None
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
                denied.append(_name(schema or "public", name))
            out.append(RemoteTable(schema, name, pa.schema(fields), est if est >= 0 else -1))
        if denied:
            raise ValueError(
                f"PostgreSQL role '{role}' may not SELECT {', '.join(denied)}, listed in "
                f"[backend].tables; an administrator can run: GRANT SELECT ON "
                f"{', '.join(denied)} TO {_ident(role)}"
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


# Predefined roles that reach outside the database or into other sessions
# (PostgreSQL docs, 22.5 Predefined Roles); pg_write_all_data is named too, though
# its writes also show up table by table.
OUTSIDE_ROLES = (
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
    "pg_write_all_data",
)
README_SECTION = 'README, "A read-only PostgreSQL role for the connector"'

_RIGHTS_SQL = """
WITH grantee AS (
    SELECT r.rolname::text AS who, r.rolname AS arg, r.oid, r.rolsuper, r.rolcreaterole,
           r.rolcreatedb, r.rolreplication, r.rolbypassrls
    FROM pg_roles r WHERE pg_has_role(current_user, r.oid, 'MEMBER')
    UNION ALL
    SELECT 'PUBLIC', 'public'::name, 0::oid, false, false, false, false, false
), rel AS (
    SELECT c.oid, c.relowner, n.nspname::text AS nsp, c.relname::text AS rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_(toast|temp_)'
), nsp AS (
    SELECT oid, nspowner, nspname::text AS nsp FROM pg_namespace
    WHERE nspname !~ '^pg_(toast|temp_)'
)
SELECT 'attribute', g.who, a.attr, NULL, NULL
FROM grantee g, LATERAL (VALUES ('SUPERUSER', g.rolsuper), ('CREATEROLE', g.rolcreaterole),
    ('CREATEDB', g.rolcreatedb), ('REPLICATION', g.rolreplication),
    ('BYPASSRLS', g.rolbypassrls)) AS a(attr, has)
WHERE a.has
UNION ALL
SELECT 'member', g.who, NULL, NULL, NULL FROM grantee g WHERE g.who IN ({outside})
UNION ALL
SELECT 'database', g.who, 'CREATE', NULL, current_database()::text FROM grantee g
WHERE has_database_privilege(g.arg, current_database(), 'CREATE')
UNION ALL
SELECT 'database', g.who, 'OWNER', NULL, d.datname::text
FROM grantee g JOIN pg_database d ON d.datdba = g.oid AND d.datname = current_database()
UNION ALL
SELECT 'schema', g.who, 'CREATE', n.nsp, NULL FROM grantee g, nsp n
WHERE has_schema_privilege(g.arg, n.oid, 'CREATE')
UNION ALL
SELECT 'schema', g.who, 'OWNER', n.nsp, NULL
FROM grantee g JOIN nsp n ON n.nspowner = g.oid
WHERE n.nsp NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'table', g.who, p.priv, r.nsp, r.rel
FROM grantee g, rel r, (VALUES ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'),
    ('REFERENCES'), ('TRIGGER'), ('SELECT')) AS p(priv)
WHERE CASE WHEN p.priv IN ('INSERT', 'UPDATE', 'REFERENCES', 'SELECT')
           THEN has_any_column_privilege(g.arg, r.oid, p.priv)
           ELSE has_table_privilege(g.arg, r.oid, p.priv) END
UNION ALL
SELECT 'table', g.who, 'OWNER', r.nsp, r.rel FROM grantee g JOIN rel r ON r.relowner = g.oid
UNION ALL
SELECT 'via', g.who, p.rolname::text, NULL, NULL
FROM grantee g, pg_auth_members m JOIN pg_roles p ON p.oid = m.roleid
WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND pg_has_role(p.oid, g.oid, 'MEMBER')
""".format(outside=", ".join(f"'{r}'" for r in OUTSIDE_ROLES))


def role_rights(con: Any) -> list[tuple[str, str, str | None, str | None, str | None]]:
    """What the connection's role may do beyond reading, and what it may read.

    Rows ``(kind, holder, right, schema, name)``; ``holder`` is the role itself, a
    role it is a member of (directly or not, with or without INHERIT: it may
    ``SET ROLE`` to any, ``pg_has_role(..., 'MEMBER')``), or ``PUBLIC``:

    - ``attribute``: SUPERUSER, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS
      (PostgreSQL docs, 22.2 Role Attributes; view ``pg_roles``, 54.21);
    - ``member``: the holder is one of :data:`OUTSIDE_ROLES` (22.5 Predefined Roles;
      22.3 Role Membership);
    - ``database`` / ``schema``: CREATE, or OWNER (owners may drop and grant), on
      the current database or any schema (5.7 Privileges);
    - ``table``: INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER, SELECT or
      OWNER on a table or view outside pg_catalog/information_schema; INSERT,
      UPDATE, REFERENCES and SELECT count when granted on any one column;
    - ``via``: ``right`` is a role granted to the role itself (``pg_auth_members``)
      through which it is a member of ``holder`` (what to revoke).

    All through the access privilege inquiry functions (9.26 System Information
    Functions and Operators: ``has_table_privilege``, ``has_any_column_privilege``,
    ``has_schema_privilege``, ``has_database_privilege``, ``pg_has_role``), which
    account for ownership, superuser, inherited membership and grants to PUBLIC.
    TEMPORARY on the database is not asked about: the sessions are read-only
    (:func:`session_settings`), so not even a temporary table can be created.
    """
    with con.cursor() as cur:
        cur.execute(_RIGHTS_SQL)
        return [tuple(r) for r in cur.fetchall()]


_Rights = list[tuple[str, str, str | None, str | None, str | None]]


def _findings(role: str, rights: _Rights) -> tuple[list[str], list[str]]:
    """What ``role`` may do that a connector must not, and what to run about it."""
    holders: dict[tuple[str, str | None, str | None, str | None], set[str]] = defaultdict(set)
    via: dict[str, list[str]] = defaultdict(list)  # holder → the role's grants leading to it
    for kind, who, right, schema, name in rights:
        if kind == "via":
            via[who].append(str(right))
        elif right != "SELECT":
            holders[(kind, right, schema, name)].add(who)
    if any(k[:2] == ("database", "OWNER") for k in holders):
        # What pg_database_owner holds (schema public, since PostgreSQL 15) comes
        # with owning the database, which is reported (and fixed) as such.
        holders = {k: v for k, v in holders.items() if "pg_database_owner" not in v}
    supers = holders.get(("attribute", "SUPERUSER", None, None), set())
    # A superuser may do anything: listing it all would hide the one fix.
    if role in supers:
        return [f"role '{role}' is a superuser"], [f"ALTER ROLE {_ident(role)} NOSUPERUSER"]
    if supers:
        first = sorted(supers)[0]
        through = sorted(via.get(first, [])) or [first]
        return [f"role '{role}' is a member of superuser {_ident(first)}"], [
            f"REVOKE {_ident(r)} FROM {_ident(role)}" for r in through
        ]
    found: list[str] = []
    fixes: dict[str, None] = {}  # ordered, no repeats
    revoke: dict[tuple[str, str], list[str]] = defaultdict(list)  # (object, holder) → rights
    for (kind, right, schema, name), who_all in sorted(
        holders.items(), key=lambda kv: ORDER.index(kv[0][0])
    ):
        # whom to take it from: PUBLIC first, then a role it comes from, else the role
        others = sorted(who_all - {role, "PUBLIC"})
        who = "PUBLIC" if "PUBLIC" in who_all else others[0] if others else role
        through = sorted(via.get(who, [])) or [who]
        how = {role: "", "PUBLIC": " (granted to PUBLIC)"}.get(who, f" (as a member of {who})")
        if kind == "attribute":
            if who == role:
                found.append(f"role '{role}' has {right}")
                fixes[f"ALTER ROLE {_ident(role)} NO{right}"] = None
            else:
                found.append(f"role '{role}' is a member of {who}, which has {right}")
            continue
        if kind == "member":
            indirect = [r for r in through if r != who]
            also = f" (through {', '.join(indirect)})" if indirect else ""
            found.append(f"role '{role}' is a member of {who}{also}")
        elif kind == "database":
            what = "owns" if right == "OWNER" else "may CREATE schemas in"
            found.append(f"role '{role}' {what} database {_ident(str(name))}{how}")
            if who == role and right == "OWNER":
                fixes[f"ALTER DATABASE {_ident(str(name))} OWNER TO <another role>"] = None
            elif who in (role, "PUBLIC"):
                revoke[(f"DATABASE {_ident(str(name))}", who)].append(right or "")
        elif kind == "schema":
            what = "owns schema" if right == "OWNER" else "may CREATE in schema"
            found.append(f"role '{role}' {what} {_ident(str(schema))}{how}")
            if who == role and right == "OWNER":
                fixes[f"ALTER SCHEMA {_ident(str(schema))} OWNER TO <another role>"] = None
            elif who in (role, "PUBLIC"):
                revoke[(f"SCHEMA {_ident(str(schema))}", who)].append(right or "")
        else:
            table = _name(str(schema), str(name))
            what = {
                "INSERT": "may INSERT into",
                "DELETE": "may DELETE from",
                "OWNER": "owns",
                "REFERENCES": "has REFERENCES on",
                "TRIGGER": "has TRIGGER on",
            }.get(right or "", f"may {right}")
            found.append(f"role '{role}' {what} {table}{how}")
            if who == role and right == "OWNER":
                fixes[f"ALTER TABLE {table} OWNER TO <another role>"] = None
            elif who in (role, "PUBLIC"):
                revoke[(table, who)].append(right or "")
        if who not in (role, "PUBLIC"):
            for r in through:
                fixes[f"REVOKE {_ident(r)} FROM {_ident(role)}"] = None
    for (obj, who), privs in revoke.items():
        grantee = "PUBLIC" if who == "PUBLIC" else _ident(who)  # a keyword, not a name
        fixes[f"REVOKE {', '.join(privs)} ON {obj} FROM {grantee}"] = None
    return found, list(fixes)


ORDER = ("attribute", "member", "database", "schema", "table")
SHOW = 10  # findings named in a message; the rest are counted


def _listed(items: list[str], sep: str = "; ") -> str:
    more = f"{sep}and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return sep.join(items[:SHOW]) + more


def _check_role(role: str, rights: _Rights, allow: bool) -> None:
    """Refuse a role that may write or escalate, unless ``allow_writable_role``."""
    found, fixes = _findings(role, rights)
    if not found:
        return
    what = _listed(found)
    todo = _listed(fixes)
    if allow:
        log.warning(
            "SECURITY: [backend] allow_writable_role = true: this connector runs as "
            "PostgreSQL role '%s', which may write or escalate: %s. Fragments still run "
            "in read-only transactions, but the database no longer refuses what the "
            "connector should never ask; give it a role of its own (%s)",
            role,
            what,
            README_SECTION,
        )
        return
    raise ValueError(
        f"PostgreSQL role '{role}' may write or escalate, and a connector needs only "
        f"SELECT: {what}. An administrator can run: {todo}; or connect as a role with "
        f"only CONNECT, USAGE and SELECT ({README_SECTION}). To run with this role "
        "anyway, set allow_writable_role = true under [backend]"
    )


def _warn_unexposed(role: str, rights: _Rights, exposed: tuple[RemoteTable, ...]) -> None:
    """Warn (once, at start) about tables the role may SELECT but the connector
    does not expose: a role for the connector needs SELECT on the exposed ones only."""
    shown = {(t.schema or "public", t.name) for t in exposed}
    extra = sorted(
        {
            (str(schema), str(name))
            for kind, _, right, schema, name in rights
            if kind == "table" and right == "SELECT" and (schema, name) not in shown
        }
    )
    if not extra:
        return
    names = [_name(s, n) for s, n in extra]
    log.warning(
        "PostgreSQL role '%s' may SELECT %d table(s) or view(s) this connector does not "
        "expose: %s. It needs SELECT on the exposed tables only (e.g. REVOKE SELECT ON "
        "%s FROM %s; %s)",
        role,
        len(names),
        _listed(names, ", "),
        names[0],
        _ident(role),
        README_SECTION,
    )


def _ident(name: str) -> str:
    """An SQL identifier, quoted only when it must be.

    >>> _ident("people"), _ident("Tax Returns")
    ('people', '"Tax Returns"')
    """
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _name(schema: str, name: str) -> str:
    return f"{_ident(schema)}.{_ident(name)}"


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


def _quietly_close(con: Any) -> None:
    try:
        con.close()
    except Exception:  # already broken: nothing to close
        pass
