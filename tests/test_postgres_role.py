"""The PostgreSQL backend as a layer of defence: the role a connector runs as is
checked at start (may it write or escalate? read what is not exposed?), every
session pins its own settings, and passwords reach libpq without being shown.

Real servers (one initialised with ``--locale=C``, one with initdb's default
locale) and real connector processes wherever the behaviour is at start. The
connectors of one server start side by side in :func:`started`; each test reads
the outcome of its own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

import fedsql
from fedsql.config import load_agency
from fedsql.connectors.backend import BackendError
from fedsql.connectors.postgres import PostgresBackend
from fedsql.errors import ConfigError, FedSQLError
from fedsql.local import LocalFederation, start_connector, write_agency_toml
from fedsql.pgserver import PostgresServer

DB = "role_check"
# A password libpq would misread unless it is encoded: URI delimiters, a percent
# sign, quotes, a backslash and a space.
PASSWORD = "p@ss:w/rd?&=% 'q\"\\x"
WRONG = "NOT-THE-PASSWORD"  # and never in a message
PASSWORD_ENV = "FEDSQL_TEST_PG_PASSWORD"


@dataclass
class Outcome:
    error: str | None  # why the connector refused to start; None: it started
    warnings: list[str]  # the PostgreSQL backend's warnings in its log
    log: str


def _outcome(toml: Path, env: dict[str, str] | None = None) -> Outcome:
    try:
        c = start_connector(toml, timeout=60, env=env)
    except FedSQLError as e:
        return Outcome(str(e), [], toml.with_suffix(".log").read_text())
    c.stop()
    log = c.log_path.read_text()
    ours = [ln for ln in log.splitlines() if "WARNING logger=fedsql.connectors.postgres" in ln]
    return Outcome(None, ours, log)


def _role(server: PostgresServer, name: str, *grants: str, cluster: tuple[str, ...] = ()) -> str:
    """A LOGIN role ``name`` that may connect and read ``people``, plus ``grants``
    (run in the agency database) and ``cluster`` statements (role memberships);
    returns its DSN."""
    server.execute(f"CREATE ROLE {name} LOGIN", f"GRANT CONNECT ON DATABASE {DB} TO {name}")
    server.execute(*cluster)
    server.execute(f"GRANT SELECT ON people TO {name}", *grants, database=DB)
    return server.dsn(DB, name)


def _toml(work: Path, name: str, dsn: str, extra: str = "") -> Path:
    return write_agency_toml(
        work / f"{name}.toml", name, "postgres", dsn, 'tables = ["people"]\n' + extra
    )


@pytest.fixture(
    scope="module", params=["pg_server", "pg_server_default_locale"], ids=["C", "default-locale"]
)
def server(request: pytest.FixtureRequest) -> PostgresServer:
    """A server holding the agency database: ``people`` (exposed), ``secret`` (not)."""
    s: PostgresServer = request.getfixturevalue(request.param)
    s.create_database(DB)
    s.execute(
        "CREATE TABLE people (id INT, name TEXT)",
        "INSERT INTO people VALUES (1, 'Anna'), (2, 'Ben')",
        "CREATE TABLE secret (marker TEXT)",
        "INSERT INTO secret VALUES ('CANARY-secret')",
        "CREATE SCHEMA scratch",
        database=DB,
    )
    return s


@pytest.fixture(scope="module")
def started(server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """One connector per case, started side by side: case → outcome."""
    work = tmp_path_factory.mktemp("roles")
    superuser = server.dsn(DB)
    server.execute("CREATE ROLE rc_group", "GRANT pg_read_server_files TO rc_group")
    files = _role(server, "rc_files", cluster=("GRANT rc_group TO rc_files",))
    cases = {
        "superuser": (superuser, ""),
        "insert": (_role(server, "rc_insert", "GRANT INSERT ON people TO rc_insert"), ""),
        "create": (_role(server, "rc_create", "GRANT CREATE ON SCHEMA scratch TO rc_create"), ""),
        "server_files": (files, ""),  # through a group: membership counts however indirect
        "reader": (server.create_reader(DB, ["people"]), ""),
        "wide": (_role(server, "rc_wide", "GRANT SELECT ON secret TO rc_wide"), ""),
        "allowed": (superuser, "allow_writable_role = true\n"),
    }
    tomls = [_toml(work, case, dsn, extra) for case, (dsn, extra) in cases.items()]
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(cases, pool.map(_outcome, tomls), strict=True))


@pytest.fixture(scope="module")
def password_dsn(pg_server: PostgresServer) -> str:
    """A reader whose password the server asks for (scram-sha-256)."""
    pg_server.create_database("password_check")
    pg_server.execute("CREATE TABLE people (id INT)", database="password_check")
    dsn = pg_server.create_reader("password_check", ["people"], role="rc_password")
    literal = PASSWORD.replace("'", "''")
    pg_server.execute(f"ALTER ROLE rc_password PASSWORD '{literal}'")
    pg_server.require_password("rc_password")
    return dsn


def _refused(started: dict[str, Outcome], case: str) -> str:
    got = started[case]
    assert got.error is not None, f"the {case} connector started, but should have refused"
    return got.error


def _accepted(started: dict[str, Outcome], case: str) -> list[str]:
    got = started[case]
    assert got.error is None, got.error
    return got.warnings


# -- refused at start -------------------------------------------------------------------


def test_superuser_is_refused(started: dict[str, Outcome]) -> None:
    err = _refused(started, "superuser")
    assert "PostgreSQL role 'postgres' may write or escalate" in err
    assert "role 'postgres' is a superuser" in err and "ALTER ROLE postgres NOSUPERUSER" in err
    assert "allow_writable_role = true" in err and "README" in err


def test_insert_on_one_table_is_refused(started: dict[str, Outcome]) -> None:
    err = _refused(started, "insert")
    assert "role 'rc_insert' may INSERT into public.people;" not in err  # the only finding
    assert "role 'rc_insert' may INSERT into public.people." in err
    assert "REVOKE INSERT ON public.people FROM rc_insert" in err


def test_create_on_a_schema_is_refused(started: dict[str, Outcome]) -> None:
    err = _refused(started, "create")
    assert "role 'rc_create' may CREATE in schema scratch." in err
    assert "REVOKE CREATE ON SCHEMA scratch FROM rc_create" in err


def test_member_of_pg_read_server_files_is_refused(started: dict[str, Outcome]) -> None:
    err = _refused(started, "server_files")
    assert "role 'rc_files' is a member of pg_read_server_files (through rc_group)" in err
    assert "REVOKE rc_group FROM rc_files" in err


# -- accepted ----------------------------------------------------------------------------


def test_reader_role_starts_quietly(started: dict[str, Outcome]) -> None:
    """What the harness (and the README) sets up: CONNECT, USAGE, SELECT."""
    assert _accepted(started, "reader") == []


def test_reader_that_may_read_more_starts_with_a_warning(started: dict[str, Outcome]) -> None:
    (warning,) = _accepted(started, "wide")  # once
    assert "role 'rc_wide' may SELECT 1 table(s) or view(s)" in warning
    assert "this connector does not expose: public.secret." in warning
    assert "REVOKE SELECT ON public.secret FROM rc_wide" in warning
    assert "CANARY" not in started["wide"].log


def test_allow_writable_role_starts_with_a_warning(started: dict[str, Outcome]) -> None:
    warning, unexposed = _accepted(started, "allowed")  # a superuser reads all, too
    assert "SECURITY: [backend] allow_writable_role = true" in warning
    assert "role 'postgres' is a superuser" in warning
    assert "public.secret" in unexposed


def test_allow_writable_role_is_a_postgres_key(tmp_path: Path) -> None:
    toml = write_agency_toml(tmp_path / "d.toml", "d", "duckdb", tmp_path / "x.duckdb")
    toml.write_text(toml.read_text() + "allow_writable_role = true\n")
    with pytest.raises(ConfigError, match="allow_writable_role only go with kind 'postgres'"):
        load_agency(toml)
    pg = _toml(tmp_path, "p", "postgresql://u@127.0.0.1:1/db", 'allow_writable_role = "yes"\n')
    with pytest.raises(ConfigError, match="allow_writable_role: expected true or false"):
        load_agency(pg)
    assert not load_agency(_toml(tmp_path, "q", "postgresql://u@h/db")).backend.allow_writable_role


# -- passwords ---------------------------------------------------------------------------


def test_password_file_and_env_connect(password_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "password.txt").write_text(PASSWORD + "\n")
    by_file = _toml(tmp_path, "file", password_dsn, 'password_file = "password.txt"\n')
    by_env = _toml(tmp_path, "env", password_dsn, f'password_env = "{PASSWORD_ENV}"\n')
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(_outcome, by_file)
        b = pool.submit(_outcome, by_env, {PASSWORD_ENV: PASSWORD})
        for got in (a.result(), b.result()):
            assert got.error is None and got.warnings == [], got.error or got.warnings
            assert PASSWORD not in got.log


def test_password_is_needed_and_never_shown(
    password_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def error(dsn: str, extra: str = "") -> str:
        with pytest.raises(BackendError) as got:
            PostgresBackend(load_agency(_toml(tmp_path, "x", dsn, extra)).backend)
        return str(got.value)

    assert "no password supplied" in error(password_dsn)
    monkeypatch.setenv(PASSWORD_ENV, WRONG)
    by_env = f'password_env = "{PASSWORD_ENV}"\n'
    err = error(password_dsn, by_env)
    assert 'password authentication failed for user "rc_password"' in err and WRONG not in err
    # libpq quotes the whole connection string when it cannot parse it: scrubbed
    broken = password_dsn.replace("@127.0.0.1", "@[::1")
    err = error(broken, by_env)
    assert "IPv6" in err and broken in err
    assert WRONG not in err and "password=" not in err


# -- sessions ----------------------------------------------------------------------------


def test_sessions_pin_their_settings_against_opposite_defaults(
    server: PostgresServer, tmp_path: Path
) -> None:
    """The database and the role both default to the opposite of what the
    connector needs; fragments still behave as DuckDB's SQL says."""
    server.create_database("opposite")
    server.execute(
        "CREATE TABLE people (id INT, s TEXT)",
        # standard strings here: one backslash each
        "INSERT INTO people VALUES (1, 'a\\b'), (2, 'x\\')",
        "CREATE SCHEMA evil",
        "CREATE TABLE evil.people (id INT, s TEXT)",
        "INSERT INTO evil.people SELECT 9, 'CANARY-evil' FROM generate_series(1, 5)",
        database="opposite",
    )
    dsn = server.create_reader("opposite", ["people", "evil.people"])
    opposite = (
        "standard_conforming_strings = off",
        "search_path = evil, public",
        "default_transaction_read_only = off",
        "statement_timeout = 0",
        "idle_in_transaction_session_timeout = 0",
        "lock_timeout = 0",
    )
    server.execute(*(f"ALTER DATABASE opposite SET {s}" for s in opposite))
    server.execute("ALTER ROLE opposite_reader SET standard_conforming_strings = off")
    toml = _toml(tmp_path, "opp", dsn, "statement_timeout_seconds = 5\n")

    backend = PostgresBackend(load_agency(toml).backend)
    try:
        runs = [backend.execute(SETTINGS_SQL, 0) for _ in range(2)]  # two pooled sessions
        for run in runs:
            got = pa.Table.from_batches(list(run.reader)).to_pylist()
            run.close()
            assert got == [WANT], got
    finally:
        backend.close()

    with LocalFederation(tmp_path, [toml]) as local, fedsql.connect(local.config_path) as fed:
        assert fed.sql("SELECT id FROM people WHERE s = 'a\\b'").to_pylist() == [{"id": 1}]
        ends_in_backslash = "SELECT id FROM people WHERE s = 'x\\'"
        assert "'x\\'" in fed.plan(ends_in_backslash).fragments[0].sql  # as PostgreSQL gets it
        assert fed.sql(ends_in_backslash).to_pylist() == [{"id": 2}]
        got = fed.sql("SELECT id, s, length(s) AS n FROM people ORDER BY id").to_pylist()
        assert got == [{"id": 1, "s": "a\\b", "n": 3}, {"id": 2, "s": "x\\", "n": 2}]


SETTINGS_SQL = (
    "SELECT current_setting('standard_conforming_strings') AS scs, "
    "current_setting('search_path') AS search_path, "
    "current_setting('transaction_read_only') AS ro, "
    "current_setting('default_transaction_read_only') AS default_ro, "
    "current_setting('statement_timeout') AS statement_timeout, "
    "current_setting('idle_in_transaction_session_timeout') AS idle, "
    "current_setting('lock_timeout') AS lock_timeout"
)
WANT = {
    "scs": "on",
    "search_path": "public",
    "ro": "on",
    "default_ro": "on",
    "statement_timeout": "5s",
    "idle": "5s",
    "lock_timeout": "5s",
}


def test_table_names_match_exactly_as_postgres_spells_them(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    """``people`` and ``"People"`` differ only in case; fragments are DuckDB SQL,
    where names do not: the listed one is exposed, exactly, and unlisted the pair
    is refused at start with the reason."""
    pg_server.create_database("cases")
    pg_server.execute(
        "CREATE TABLE people (who TEXT)",
        "INSERT INTO people VALUES ('lower')",
        'CREATE TABLE "People" (who TEXT)',
        """INSERT INTO "People" VALUES ('upper')""",
        'CREATE TABLE "Visits" (n INT)',
        'INSERT INTO "Visits" VALUES (7)',
        database="cases",
    )
    dsn = pg_server.create_reader("cases", ["people", "People", "Visits"])
    unlisted = write_agency_toml(tmp_path / "unlisted.toml", "unlisted", "postgres", dsn)
    assert "differ only in case" in (_outcome(unlisted).error or "")
    toml = write_agency_toml(
        tmp_path / "cases.toml", "cases", "postgres", dsn, 'tables = ["People", "Visits"]\n'
    )
    with LocalFederation(tmp_path, [toml]) as local, fedsql.connect(local.config_path) as fed:
        assert fed.sql("SELECT who FROM cases.people").column(0).to_pylist() == ["upper"]
        assert fed.sql("SELECT n FROM cases.visits").column(0).to_pylist() == [7]


def test_schemas_go_by_the_agencys_own_names(pg_server: PostgresServer, tmp_path: Path) -> None:
    """``public`` is public, not ``main``; every listed name resolves; an unknown one
    is fedsql's error, not DuckDB's (issue 15)."""
    pg_server.create_database("tax")
    pg_server.execute(
        "CREATE TABLE tax_returns (id INT, income INT)",
        "INSERT INTO tax_returns VALUES (1, 10)",
        "CREATE SCHEMA archive",
        "CREATE TABLE archive.old_returns (id INT)",
        "INSERT INTO archive.old_returns VALUES (7)",
        database="tax",
    )
    dsn = pg_server.create_reader("tax", ["tax_returns", "archive.old_returns"])
    toml = write_agency_toml(tmp_path / "tax.toml", "tax", "postgres", dsn)
    with LocalFederation(tmp_path, [toml]) as local, fedsql.connect(local.config_path) as fed:
        keys = sorted((t.schema_key, t.name) for t in fed.catalog.tables)
        assert keys == [("archive", "old_returns"), ("public", "tax_returns")]
        for name in ("tax.public.tax_returns", "tax.tax_returns", "tax_returns"):
            assert fed.sql(f"SELECT * FROM {name}").num_rows == 1, name
        for name in ("tax.archive.old_returns", "tax.old_returns", "old_returns"):
            assert fed.sql(f"SELECT id FROM {name}").column(0).to_pylist() == [7], name
        for t in fed.catalog.tables:  # as listed: agency.schema.table
            assert fed.sql(f"SELECT count(*) FROM {t.agency}.{t.schema_key}.{t.name}").num_rows
        with pytest.raises(FedSQLError) as info:
            fed.sql("SELECT * FROM tax.nope.tax_returns")
        assert "unknown table 'tax.nope.tax_returns'" in str(info.value)
        assert "Catalog Error" not in str(info.value)
