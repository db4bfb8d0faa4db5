"""The canary federation: marker values planted everywhere an analyst must not reach.

One session fixture, ``canary_env``, builds in a temporary directory a federation
of five connector processes over mutual TLS (``fedsql.local.LocalFederation``)
plus a ``fedsql serve`` process in front of them:

========== ========= ==================================================
agency     kind      notes
========== ========= ==================================================
duck       duckdb    a database file; also ``hr.salaries`` (unexposed schema)
files      files     ``people.parquet``, ``visits.csv``; unexposed files beside them
lite       sqlite    ``engine = "auto"`` (native unless a policy needs DuckDB)
lite_local sqlite    ``engine = "local"``: every fragment in the node's own DuckDB
pg         postgres  a real server; the connector logs in as a least-privilege
                     role with SELECT on the exposed tables only
========== ========= ==================================================

Every agency exposes ``people(id, name, national_id, email, region, salary,
birth_date)`` (masks: national_id ``hash``, name ``partial``, email ``email``,
salary ``bucket``, birth_date ``year``; a row filter hides ``region = 'secret'``;
all ``unless_role = ["auditor"]``) and the unmasked ``visits(id, person_id,
visit_date, note)``, and holds unexposed tables (``salaries`` and one named by a
marker). Marker values — distinctive lower-case strings starting ``cnry_`` and
distinctive numbers and dates — sit in every masked column's raw values, in every
column of hidden rows, in unexposed tables, in PostgreSQL settings and role
names, in host files (``host.csv``, ``host.json``, ``host.jsonl``,
``host.parquet``) in every connector's and the service's working directory and
in an absolute directory, and in the temporary directory's own name (so a file
path in an answer is a leak too).

The env talks to the federation three ways, each returning text (values *and*
column names) so that one check, :meth:`CanaryEnv.leaks`, applies to all:

- :meth:`CanaryEnv.analyst`: the embedded coordinator (``fedsql.connect``);
- :meth:`CanaryEnv.service`: ``fedsql serve`` through the ADBC Flight SQL driver;
- :meth:`CanaryEnv.coordinator`: a raw, signed gRPC ``Execute`` to one connector,
  as a hostile coordinator would send it (no planner).

Crashed processes are restarted on their own ports at the next call
(:attr:`CanaryEnv.crashes` records them), so one crashing input does not
cascade into every later test.

Interface (``from canary_env import canary_env  # noqa: F401`` in a test module)::

    env.agencies                 # {"duck": "duckdb", "files": "files", "lite": "sqlite", ...}
    env.config                   # FEDERATION.toml: alice = analyst, bob = auditor, carol = analyst
    env.markers, env.guesses     # frozenset of markers; strings an attacker might hash
    env.analyst(sql, user="alice") -> str          # embedded; FedSQLError as "<Class>: msg"
    env.service(sql, user="alice") -> str          # fedsql serve (ADBC); errors as text
    env.coordinator(agency, sql, key_sets=None, roles=("analyst",)) -> str
                                                   # raw signed Execute; "<CODE>: details"
    env.leaks(text, sql=None) -> list[str]         # markers found (those in ``sql`` excepted)
    env.audit_lines(agency) -> list[dict]          # the connector's audit log, parsed
    env.analyst_answer / service_answer / coordinator_answer(...) -> Answer
                                                   # the same, with table, error, kind, query_id
    env.audit_for(agency, query_id), env.open_stub(agency), env.connector(agency),
    env.alive(), env.ensure_alive(), env.restart(name), env.responsive(agency),
    env.service_responsive(), env.crashes, env.derivable,
    env.host_dirs (agency | "service" | "abs" -> dir holding host.*), env.files_dir
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import LocalService

import fedsql
from fedsql.channels import open_channel
from fedsql.config import load_federation
from fedsql.errors import FedSQLError
from fedsql.local import LocalConnector, LocalFederation, start_connector
from fedsql.pgserver import PostgresServer, free_port
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import ipc_chunks_to_reader

AGENCIES: dict[str, str] = {
    "duck": "duckdb",
    "files": "files",
    "lite": "sqlite",
    "lite_local": "sqlite",
    "pg": "postgres",
}
ENGINES = {"lite": "auto", "lite_local": "local", "pg": "auto"}
USERS = {"alice": ("analyst",), "bob": ("auditor", "analyst"), "carol": ("analyst",)}
PASSWORDS = {"alice": "alice-canary-1", "bob": "bob-canary-22", "carol": "carol-canary-333"}
HASH_KEY = b"c4a7b1e0f2d3" * 4  # the federation's secret (48 bytes), known to the env
N_VISIBLE = 5  # people rows an analyst sees, per agency
N_HIDDEN = 3  # people rows in region 'secret', per agency
HOST_KINDS = ("csv", "json", "jsonl", "parquet")
PG_ROLE = "cnry_reader"
PATH_MARKER = "cnry_hostpath"  # part of the env's directory name: any path shown leaks it
GUESSES: tuple[str, ...] = (
    "cnry_guess_one",
    "cnry_guess_two",
    "000-00-0000",
    "123-45-6789",
    "NID000000001",
    "alice@example.org",
)
PEOPLE_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("national_id", pa.string()),
        ("email", pa.string()),
        ("region", pa.string()),
        ("salary", pa.int64()),
        ("birth_date", pa.date32()),
    ]
)
POLICY = """
[[mask]]
table = "people"
column = "national_id"
rule = "hash"
unless_role = ["auditor"]

[[mask]]
table = "people"
column = "name"
rule = "partial"
unless_role = ["auditor"]

[[mask]]
table = "people"
column = "email"
rule = "email"
unless_role = ["auditor"]

[[mask]]
table = "people"
column = "salary"
rule = "bucket"
width = 1000
unless_role = ["auditor"]

[[mask]]
table = "people"
column = "birth_date"
rule = "year"
unless_role = ["auditor"]

[[row_filter]]
table = "people"
where = "region <> 'secret'"
unless_role = ["auditor"]
"""
# Rendered text of one cell is cut here (a 400 MB string must not take the test down);
# markers are short, so a marker in the first MAX_CELL characters is still found.
MAX_CELL = 1 << 20


@dataclass
class Answer:
    """One call's outcome: the text the string methods return, and its parts."""

    text: str
    table: pa.Table | None = None
    error: str | None = None  # the message, when the call failed
    kind: str | None = None  # exception class (analyst, service) or gRPC code name
    seconds: float = 0.0
    query_id: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def render(table: pa.Table) -> str:
    """Every column name (nested ones too) and every value of ``table`` as text."""
    lines = [" | ".join(f"{f.name}: {f.type}" for f in table.schema)]
    for row in table.to_pylist():
        cells = []
        for v in row.values():
            s = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            cells.append(s[:MAX_CELL])
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def hmac_hex(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


# -- the planted data ----------------------------------------------------------------


def _people(ai: int, a: str) -> pa.Table:
    rows: list[dict[str, Any]] = []
    for i in range(1, N_VISIBLE + 1):
        rows.append(
            {
                "id": i,
                "name": f"cnry_raw_name_{a}_{i}",
                "national_id": f"cnry_raw_nid_{a}_{i}",
                "email": f"cnry_raw_email_{a}_{i}@example.org",
                "region": ("north", "south")[i % 2],
                # Masked, these are the bucket (..000) and January 1: far from the
                # raw value, so that small offsets on masked values do not hit it.
                "salary": 9_100_000_000 + ai * 100_000 + i * 1000 + 913,
                "birth_date": dt.date(1913, 12, 25 + i),
            }
        )
    for j in range(1, N_HIDDEN + 1):
        rows.append(
            {
                "id": 47_000_000 + ai * 100 + j,
                "name": f"cnry_hidden_name_{a}_{j}",
                "national_id": f"cnry_hidden_nid_{a}_{j}",
                "email": f"cnry_hidden_email_{a}_{j}@example.org",
                "region": "secret",
                "salary": 8_200_000_000 + ai * 100_000 + j * 1000 + 291,
                "birth_date": dt.date(1907, 11, 20 + j),
            }
        )
    return pa.Table.from_pylist(rows, schema=PEOPLE_SCHEMA)


def _visits() -> pa.Table:
    """Visits of visible people only (unmasked: nothing here is a marker)."""
    rows = [
        {"id": v, "person_id": (v % N_VISIBLE) + 1, "visit_date": dt.date(2023, 3, v), "note": n}
        for v, n in enumerate(["checkup", "flu", "checkup", "fracture", "flu", "checkup"], 1)
    ]
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("id", pa.int64()),
                ("person_id", pa.int64()),
                ("visit_date", pa.date32()),
                ("note", pa.string()),
            ]
        ),
    )


def _secret_rows(tag: str, ai: int, base: int) -> pa.Table:
    """Rows of an unexposed table, every value a marker."""
    return pa.table(
        {
            "person": [f"cnry_{tag}_{k}" for k in (1, 2)],
            "amount": pa.array([base + ai * 100_000 + k * 1000 + 777 for k in (1, 2)], pa.int64()),
            "note": [f"cnry_{tag}_note_{k}" for k in (1, 2)],
        }
    )


def _host_files(d: Path, tag: str) -> list[str]:
    """host.csv/.json/.jsonl/.parquet in ``d``, each holding a marker; the markers."""
    d.mkdir(parents=True, exist_ok=True)
    m = {k: f"cnry_hostfile_{tag}_{k}" for k in HOST_KINDS}
    (d / "host.csv").write_text(f"secret,amount\n{m['csv']},5500000001\n")
    (d / "host.json").write_text(json.dumps([{"secret": m["json"], "amount": 5500000002}]))
    (d / "host.jsonl").write_text(json.dumps({"secret": m["jsonl"], "amount": 5500000003}) + "\n")
    pq.write_table(pa.table({"secret": [m["parquet"]], "amount": [5500000004]}), d / "host.parquet")
    return [*m.values(), "5500000001", "5500000002", "5500000003", "5500000004"]


def _write_sqlite(db: Path, tables: dict[str, pa.Table]) -> None:
    import sqlite3

    types = {pa.int64(): "BIGINT", pa.string(): "VARCHAR", pa.date32(): "DATE"}
    con = sqlite3.connect(db)
    try:
        for name, t in tables.items():
            cols = ", ".join(f'"{f.name}" {types[f.type]}' for f in t.schema)
            con.execute(f'CREATE TABLE "{name}" ({cols})')
            marks = ", ".join("?" for _ in t.schema)
            rows = [
                tuple(v.isoformat() if isinstance(v, dt.date) else v for v in r.values())
                for r in t.to_pylist()
            ]
            con.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows)
        con.commit()
    finally:
        con.close()


def _write_duckdb(db: Path, tables: dict[str, pa.Table]) -> None:
    import duckdb

    con = duckdb.connect(str(db))
    try:
        for name, t in tables.items():
            if "." in name:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {name.split('.')[0]}")
            con.register("src", t)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM src")
            con.unregister("src")
    finally:
        con.close()


def _write_postgres(server: PostgresServer, db: str, tables: dict[str, pa.Table]) -> str:
    """Load the tables as the superuser, then make the connector's least-privilege
    role (LOGIN, SELECT on the exposed tables only) and plant settings/role markers."""
    import adbc_driver_postgresql.dbapi as pgdb

    admin = server.create_database(db)
    types = {pa.int64(): "BIGINT", pa.string(): "TEXT", pa.date32(): "DATE"}
    with pgdb.connect(admin) as con:
        con.adbc_connection.set_autocommit(True)
        with con.cursor() as cur:
            cur.execute("CREATE SCHEMA hr")
            for name, t in tables.items():
                cols = ", ".join(f'"{f.name}" {types[f.type]}' for f in t.schema)
                cur.execute(f"CREATE TABLE {name} ({cols})")
                for r in t.to_pylist():
                    vals = ", ".join(
                        str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"
                        for v in r.values()
                    )
                    cur.execute(f"INSERT INTO {name} VALUES ({vals})")
            cur.execute(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                f"'{PG_ROLE}') THEN CREATE ROLE {PG_ROLE} LOGIN; END IF; END $$"
            )
            cur.execute(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                "'cnry_pgrole_marker') THEN CREATE ROLE cnry_pgrole_marker NOLOGIN; END IF; "
                "END $$"
            )
            cur.execute(f'REVOKE ALL ON DATABASE "{db}" FROM PUBLIC')
            cur.execute(f'GRANT CONNECT ON DATABASE "{db}" TO {PG_ROLE}')
            cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            cur.execute(f"GRANT USAGE ON SCHEMA public TO {PG_ROLE}")
            cur.execute(f"GRANT SELECT ON people, visits TO {PG_ROLE}")
            # Settings and role names an attacker could read through pg_settings/pg_roles.
            cur.execute(
                f'ALTER ROLE {PG_ROLE} IN DATABASE "{db}" SET cnry.marker = '
                "'cnry_pgsetting_marker'"
            )
            cur.execute(f"ALTER ROLE {PG_ROLE} SET application_name = 'cnry_pgappname'")
    return admin.replace("postgres@", f"{PG_ROLE}@", 1)


def _agency_toml(d: Path, name: str, kind: str, where: str, extra: str = "") -> Path:
    port = free_port()  # fixed, so that a restarted connector keeps its address
    key = d.parent / "federation.key"
    engine = f'engine = "{ENGINES[name]}"\n' if name in ENGINES else ""
    toml = d / f"{name}.toml"
    toml.write_text(
        f"""[connector]
name = "{name}"
listen = "127.0.0.1:{port}"
insecure = true
audit_log = "{name}-audit.jsonl"
hash_key_file = "{key}"
{extra}
[backend]
kind = "{kind}"
{where}
tables = ["people", "visits"]
{engine}{POLICY}"""
    )
    return toml


# -- the env ---------------------------------------------------------------------------


@dataclass
class CanaryEnv:
    """A running canary federation (see the module docstring)."""

    agencies: dict[str, str]
    config: Path  # FEDERATION.toml of the embedded coordinator
    markers: frozenset[str]
    guesses: tuple[str, ...]
    work: Path
    key: bytes
    local: LocalFederation
    service_config: Path
    service_dir: Path
    service_ca: Path
    service_port: int
    tomls: dict[str, Path]
    # for tests that need them
    visible: int = N_VISIBLE
    hidden: int = N_HIDDEN
    host_dirs: dict[str, Path] = field(default_factory=dict)  # agency|service|abs -> dir
    files_dir: Path | None = None  # the files backend's own directory
    crashes: list[tuple[str, int | None]] = field(default_factory=list)  # (process, returncode)
    # Markers that arithmetic on *masked* values can produce without reading anything
    # (a visible row's raw salary is its bucket + 913, its raw birth date January 1 +
    # 359..363 days): a fuzzer that adds such constants may see them legitimately.
    derivable: frozenset[str] = frozenset()
    _svc: LocalService | None = None
    _feds: dict[str, fedsql.Federation] = field(default_factory=dict)
    _adbc: dict[str, Any] = field(default_factory=dict)
    _stubs: dict[str, tuple[pb_grpc.ConnectorStub, grpc.Channel]] = field(default_factory=dict)
    _needles: list[tuple[str, str]] = field(default_factory=list)  # (lower-case needle, marker)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # the client caches
    _restarting: threading.RLock = field(default_factory=threading.RLock)

    # -- calls ------------------------------------------------------------------------
    def analyst(self, sql: str, user: str = "alice") -> str:
        """``fedsql.connect(config, user=user).sql(sql)`` as text; a FedSQLError as
        ``"<ClassName>: <message>"``. Other exceptions propagate (they are bugs)."""
        return self.analyst_answer(sql, user).text

    def analyst_answer(self, sql: str, user: str = "alice", timeout: float = 60.0) -> Answer:
        self.ensure_alive()
        fed = self._federation(user)
        t0 = time.perf_counter()
        try:
            table = fed.sql(sql, timeout=timeout)
        except FedSQLError as e:
            kind = type(e).__name__
            return Answer(f"{kind}: {e}", None, str(e), kind, time.perf_counter() - t0)
        return Answer(render(table), table, None, None, time.perf_counter() - t0)

    def service(self, sql: str, user: str = "alice") -> str:
        """The same through ``fedsql serve`` (ADBC Flight SQL); errors as text."""
        return self.service_answer(sql, user).text

    def service_answer(self, sql: str, user: str = "alice", timeout: float = 60.0) -> Answer:
        import adbc_driver_manager
        from adbc_driver_flightsql import StatementOptions

        self.ensure_alive()
        t0 = time.perf_counter()
        try:
            con = self._adbc_connection(user)
            with con.cursor() as cur:
                cur.adbc_statement.set_options(
                    **{
                        StatementOptions.TIMEOUT_QUERY.value: f"{timeout:g}",
                        StatementOptions.TIMEOUT_FETCH.value: f"{timeout:g}",
                    }
                )
                cur.execute(sql)
                table = cur.fetch_arrow_table()
        except (adbc_driver_manager.Error, adbc_driver_manager.dbapi.Error) as e:
            with self._lock:
                broken = self._adbc.pop(user, None)
            if broken is not None:
                with contextlib.suppress(Exception):
                    broken.close()
            kind = type(e).__name__
            msg = str(e)
            return Answer(f"{kind}: {msg}", None, msg, kind, time.perf_counter() - t0)
        return Answer(render(table), table, None, None, time.perf_counter() - t0)

    def coordinator(
        self,
        agency: str,
        sql: str,
        key_sets: dict[str, pa.Table] | None = None,
        roles: tuple[str, ...] = ("analyst",),
        *,
        user: str = "alice",
        query_id: str | None = None,
        timeout: float = 30.0,
    ) -> str:
        """A raw signed ``Execute`` of ``sql`` at ``agency``'s connector, as a hostile
        coordinator sends it: result as text, or ``"<grpc code>: <details>"``."""
        return self.coordinator_answer(
            agency, sql, key_sets, roles, user=user, query_id=query_id, timeout=timeout
        ).text

    def coordinator_answer(
        self,
        agency: str,
        sql: str,
        key_sets: dict[str, pa.Table] | None = None,
        roles: tuple[str, ...] = ("analyst",),
        *,
        user: str = "alice",
        query_id: str | None = None,
        timeout: float = 30.0,
        fresh_channel: bool = False,
    ) -> Answer:
        self.ensure_alive()
        qid = query_id or "cnry-" + uuid.uuid4().hex[:16]
        req = pb.ExecuteRequest(
            query_id=qid,
            sql=sql,
            principal=pb.Principal(user=user, roles=list(roles)),
            key_sets=[_key_set(n, t) for n, t in (key_sets or {}).items()],
        )
        t0 = time.perf_counter()
        if fresh_channel:
            stub, raw = self.open_stub(agency)
        else:
            stub = self._stub(agency)
            raw = None
        try:
            msgs = list(stub.Execute(req, timeout=timeout))
            chunks = [m.arrow_ipc for m in msgs if m.arrow_ipc]
            table = ipc_chunks_to_reader(chunks).read_all()
        except grpc.RpcError as e:
            code = e.code().name if e.code() is not None else "UNKNOWN"
            details = str(e.details() or "")
            return Answer(f"{code}: {details}", None, details, code, time.perf_counter() - t0, qid)
        finally:
            if raw is not None:
                raw.close()
        return Answer(render(table), table, None, None, time.perf_counter() - t0, qid)

    # -- checks -----------------------------------------------------------------------
    def leaks(self, text: str, sql: str | None = None) -> list[str]:
        """Markers found in ``text``: as they are (any case), reversed, as hex, base64,
        md5/sha1/sha256 hex, and HMAC (the federation key) of markers, of raw values
        and of :attr:`guesses`. The HMACs an analyst legitimately sees — of the
        visible rows' raw national IDs, the hash mask's output — do not count.
        Markers that occur in ``sql`` (the caller's own input, echoed back) are
        not leaks of it."""
        low = text.lower()
        own = (sql or "").lower()
        found: dict[str, None] = {}
        for needle, marker in self._needles:
            if needle in low and marker not in found and not (own and marker.lower() in own):
                found[marker] = None
        return list(found)

    def audit_lines(self, agency: str) -> list[dict[str, Any]]:
        """The audit log of ``agency``'s connector, parsed (a damaged line as {"_raw": ...})."""
        path = self.tomls[agency].parent / f"{agency}-audit.jsonl"
        out: list[dict[str, Any]] = []
        if not path.exists():
            return out
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"_raw": line})
        return out

    def audit_for(self, agency: str, query_id: str) -> list[dict[str, Any]]:
        return [r for r in self.audit_lines(agency) if r.get("query_id") == query_id]

    # -- processes --------------------------------------------------------------------
    def connector(self, agency: str) -> LocalConnector:
        return next(c for c in self.local.connectors if c.name == agency)

    def address(self, agency: str) -> str:
        return self.connector(agency).address

    @property
    def service_url(self) -> str:
        return f"grpc+tls://127.0.0.1:{self.service_port}"

    @property
    def service_proc(self) -> subprocess.Popen[bytes]:
        assert self._svc is not None
        return self._svc.proc

    def alive(self) -> dict[str, bool]:
        """Which processes are running (agency names, and "service")."""
        out = {c.name: c.proc.poll() is None for c in self.local.connectors}
        out["service"] = self._svc is not None and self._svc.proc.poll() is None
        return out

    def ensure_alive(self) -> None:
        """Restart, on its own port, any process that died (recorded in ``crashes``)."""
        if all(self.alive().values()):
            return
        with self._restarting:  # one thread restarts; the others find it done
            for name, ok in self.alive().items():
                if not ok:
                    self.restart(name)

    def restart(self, name: str) -> None:
        """Stop (if running) and start again one connector, or the service."""
        with self._restarting, self._lock:
            if name == "service":
                if self._svc is not None:
                    if self._svc.proc.poll() is not None:
                        self.crashes.append(("service", self._svc.proc.returncode))
                    self._svc.stop()
                # Not closed here: another thread may be inside a call on one of them
                # (they close when their last user lets go).
                self._adbc.clear()
                self._svc = _start_service(
                    self.service_config, self.service_ca, self.service_dir, self.service_port
                )
                return
            i, old = next((i, c) for i, c in enumerate(self.local.connectors) if c.name == name)
            if old.proc.poll() is not None:
                self.crashes.append((name, old.proc.returncode))
            old.stop(timeout=5)
            self.local.connectors[i] = _start_when_port_free(self.tomls[name])
            # Channels that saw the node die back off before reconnecting: start afresh.
            for fed in self._feds.values():
                with contextlib.suppress(Exception):
                    fed.close()
            self._feds.clear()
            stub = self._stubs.pop(name, None)
            if stub is not None:
                stub[1].close()

    def responsive(self, agency: str, timeout: float = 3.0) -> bool:
        """Whether ``agency``'s connector answers a trivial fragment within ``timeout``
        on a fresh connection."""
        a = self.coordinator_answer(agency, "SELECT 1 AS one", timeout=timeout, fresh_channel=True)
        return a.ok

    def service_responsive(self, timeout: float = 5.0) -> bool:
        """Whether ``fedsql serve`` answers a trivial query (as carol) within ``timeout``."""
        return self.service_answer("SELECT 1 AS one", user="carol", timeout=timeout).ok

    def close(self) -> None:
        for fed in self._feds.values():
            with contextlib.suppress(Exception):
                fed.close()
        for con in self._adbc.values():
            with contextlib.suppress(Exception):
                con.close()
        for _, raw in self._stubs.values():
            raw.close()
        # All processes at once: SIGTERM to each, then wait (a stuck one is killed).
        procs = [c.proc for c in self.local.connectors]
        if self._svc is not None:
            procs.append(self._svc.proc)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()

    # -- clients ----------------------------------------------------------------------
    def _federation(self, user: str) -> fedsql.Federation:
        with self._lock:
            fed = self._feds.get(user)
            if fed is None:
                fed = self._feds[user] = fedsql.connect(self.config, user=user)
            return fed

    def _adbc_connection(self, user: str) -> Any:
        import adbc_driver_flightsql.dbapi as flight_sql
        from adbc_driver_flightsql import DatabaseOptions

        with self._lock:
            con = self._adbc.get(user)
            if con is None:
                kwargs = {
                    "username": user,
                    "password": PASSWORDS[user],
                    DatabaseOptions.TLS_ROOT_CERTS.value: self.service_ca.read_text(),
                    DatabaseOptions.TIMEOUT_QUERY.value: "120",
                    DatabaseOptions.TIMEOUT_FETCH.value: "120",
                }
                con = flight_sql.connect(self.service_url, db_kwargs=kwargs, autocommit=True)
                self._adbc[user] = con
            return con

    def open_stub(self, agency: str) -> tuple[pb_grpc.ConnectorStub, grpc.Channel]:
        """A new signed channel to ``agency`` as the federation's coordinator:
        (stub, the channel to close)."""
        ref = load_federation(self.config).connector(agency)
        ch, raw = open_channel(ref)
        return pb_grpc.ConnectorStub(ch), raw

    def _stub(self, agency: str) -> pb_grpc.ConnectorStub:
        with self._lock:
            got = self._stubs.get(agency)
            if got is None:
                got = self._stubs[agency] = self.open_stub(agency)
            return got[0]


def _key_set(name: str, table: pa.Table) -> pb.KeySet:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return pb.KeySet(name=name, arrow_ipc=sink.getvalue().to_pybytes())


def _start_when_port_free(toml: Path, timeout: float = 30.0) -> LocalConnector:
    end = time.monotonic() + timeout
    while True:
        try:
            return start_connector(toml, timeout=timeout)
        except FedSQLError:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)  # the old process's port may not be free yet


def _start_service(
    config: Path, ca: Path, cwd: Path, port: int, timeout: float = 60.0
) -> LocalService:
    """``fedsql serve`` with ``cwd`` as its working directory, on a fixed port."""
    log = config.with_suffix(".serve.log")
    end = time.monotonic() + timeout
    while True:
        with log.open("ab") as errf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fedsql", "-v", "serve", "-c", str(config)]
                + ["--listen", f"127.0.0.1:{port}"],
                stdout=subprocess.PIPE,
                stderr=errf,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
            )
        assert proc.stdout is not None
        buf = b""
        while time.monotonic() < end and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                buf += os.read(proc.stdout.fileno(), 4096)
                if re.search(rb"listening on 127\.0\.0\.1:(\d+)", buf):
                    return LocalService(proc, port, f"grpc+tls://127.0.0.1:{port}", config, ca, log)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        if time.monotonic() >= end:
            tail = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"fedsql serve did not start: {tail}")
        time.sleep(0.5)  # the port of a service that just died may not be free yet


def _needles(
    markers: frozenset[str],
    raw_values: list[str],
    guesses: tuple[str, ...],
    key: bytes,
    legit_hmacs: set[str],
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in sorted(markers):
        low = m.lower()
        out.append((low, m))
        if len(m) >= 6:
            out.append((low[::-1], m))
            out.append((m.encode().hex(), m))
    for v in sorted(set(raw_values) | markers):
        b = v.encode()
        for algo in ("md5", "sha1", "sha256"):
            out.append((hashlib.new(algo, b).hexdigest(), v))
        if len(v) >= 6:
            out.append((base64.b64encode(b).decode().lower(), v))
    for v in sorted(set(raw_values) | markers | set(guesses)):
        h = hmac_hex(key, v)
        if h not in legit_hmacs:
            out.append((h, f"hmac({v})"))
    return out


def build(work: Path, pg: PostgresServer) -> CanaryEnv:
    """Build the data, start the connectors and the service; see the module docstring."""
    from fedsql import certs
    from fedsql.service.auth import hash_password

    (work / "federation.key").write_bytes(HASH_KEY + b"\n")
    markers: set[str] = {
        PATH_MARKER,
        "cnry_pgsetting_marker",
        "cnry_pgappname",
        "cnry_pgrole_marker",
    }
    raw_values: list[str] = []
    legit: set[str] = set()
    derivable: set[str] = set()
    tomls: dict[str, Path] = {}
    host_dirs: dict[str, Path] = {}
    files_dir: Path | None = None
    visits = _visits()
    for ai, (a, kind) in enumerate(AGENCIES.items()):
        d = work / a
        d.mkdir()
        people = _people(ai, a)
        for r in people.to_pylist():
            hidden = r["region"] == "secret"
            for col in ("id", "name", "national_id", "email", "salary", "birth_date"):
                if col == "id" and not hidden:
                    continue  # visible ids are 1..N, shown unmasked
                v = r[col]
                text = v.isoformat() if isinstance(v, dt.date) else str(v)
                raw_values.append(text)
                markers.add(text.split("@")[0])  # emails: the local part is the marker
            if not hidden:
                legit.add(hmac_hex(HASH_KEY, r["national_id"]))
                derivable.update((str(r["salary"]), r["birth_date"].isoformat()))
        secret = _secret_rows(f"unexposed_{a}", ai, 6_300_000_000)
        marked = _secret_rows(f"tbl_{a}", ai, 6_500_000_000)
        tables = {"people": people, "visits": visits, "salaries": secret, f"cnry_tbl_{a}": marked}
        markers.add(f"cnry_tbl_{a}")
        for t in (secret, marked):
            for col in t.columns:
                markers.update(str(v) for v in col.to_pylist())
        host_dirs[a] = d
        markers.update(_host_files(d, a))
        if kind == "duckdb":
            other = _secret_rows("duckschema", ai, 6_600_000_000)
            markers.update(str(v) for c in other.columns for v in c.to_pylist())
            _write_duckdb(d / f"{a}.duckdb", {**tables, "hr.salaries": other})
            where = f'path = "{d / (a + ".duckdb")}"'
        elif kind == "files":
            files_dir = d / "data"
            files_dir.mkdir()
            pq.write_table(people, files_dir / "people.parquet")
            import pyarrow.csv as pacsv

            pacsv.write_csv(visits, files_dir / "visits.csv")
            pq.write_table(secret, files_dir / "salaries.parquet")
            pacsv.write_csv(marked, files_dir / f"cnry_tbl_{a}.csv")
            where = f'path = "{files_dir}"'
        elif kind == "sqlite":
            _write_sqlite(d / f"{a}.sqlite", tables)
            where = f'path = "{d / (a + ".sqlite")}"'
        else:
            other = _secret_rows("pgschema", ai, 6_700_000_000)
            markers.update(str(v) for c in other.columns for v in c.to_pylist())
            dsn = _write_postgres(pg, "canary", {**tables, "hr.salaries": other})
            where = f'dsn = "{dsn}"\npool_size = 4'
        tomls[a] = _agency_toml(d, a, kind, where)
    abs_dir = work / "abs"
    host_dirs["abs"] = abs_dir
    markers.update(_host_files(abs_dir, "abs"))
    svc_dir = work / "service"
    host_dirs["service"] = svc_dir
    markers.update(_host_files(svc_dir, "service"))

    users = "".join(f"[user.{u}]\nroles = {json.dumps(list(r))}\n\n" for u, r in USERS.items())
    local = LocalFederation(work, list(tomls.values()), users=users)
    try:
        certs.init_ca(svc_dir / "pki", name="fedsql canary service CA")
        got = certs.issue(svc_dir / "pki", "connector", "localhost", svc_dir)
        lines = [local.config_path.read_text().split("\n[user.")[0], ""]
        for u, r in USERS.items():
            (svc_dir / f"{u}.hash").write_text(hash_password(PASSWORDS[u]) + "\n")
            lines += [f"[user.{u}]", f"roles = {json.dumps(list(r))}"]
            lines += [f'password_hash_file = "{u}.hash"', ""]
        lines += ["[service]", 'admins = ["bob"]', "[service.tls]"]
        lines += [f'cert = "{got.cert}"', f'key = "{got.key}"', ""]
        svc_config = svc_dir / "federation.toml"
        svc_config.write_text("\n".join(lines))
        port = free_port()
        ca = svc_dir / "pki" / certs.CA_CERT
        svc = _start_service(svc_config, ca, svc_dir, port)
    except BaseException:
        local.stop()
        raise
    frozen = frozenset(markers)
    env = CanaryEnv(
        agencies=dict(AGENCIES),
        config=local.config_path,
        markers=frozen,
        guesses=GUESSES,
        work=work,
        key=HASH_KEY,
        local=local,
        service_config=svc_config,
        service_dir=svc_dir,
        service_ca=ca,
        service_port=port,
        tomls=tomls,
        host_dirs=host_dirs,
        files_dir=files_dir,
        derivable=frozenset(derivable),
        _svc=svc,
    )
    env._needles = _needles(frozen, raw_values, GUESSES, HASH_KEY, legit)
    return env


# One env per test process, however many modules import the fixture: pytest keeps a
# module-defined fixture per module, so the modules share it through here.
_SHARED: dict[str, Any] = {"env": None, "users": 0, "pg": None}
_SHARED_LOCK = threading.Lock()


@pytest.fixture(scope="session")
def canary_env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[CanaryEnv]:
    """The canary federation, one per test session (see the module docstring)."""
    try:
        pg = request.getfixturevalue("pg_server")  # shared with other tests when there
    except pytest.FixtureLookupError:
        pg = None
    with _SHARED_LOCK:
        if _SHARED["env"] is None:
            if pg is None:
                pg = _SHARED["pg"] = PostgresServer()
            _SHARED["env"] = build(tmp_path_factory.mktemp(PATH_MARKER), pg)
        _SHARED["users"] += 1
        env = _SHARED["env"]
    try:
        yield env
    finally:
        with _SHARED_LOCK:
            _SHARED["users"] -= 1
            if not _SHARED["users"]:
                env.close()
                _SHARED["env"] = None
                if _SHARED["pg"] is not None:
                    _SHARED["pg"].stop()
                    _SHARED["pg"] = None
