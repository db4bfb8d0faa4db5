"""`fedsql connector check AGENCY.toml`, end to end (a subprocess per config): a good
DuckDB agency with mutual TLS and a good PostgreSQL agency pass; a missing or
expired certificate, a table that is not there, an audit directory the connector
cannot write and a PostgreSQL role that may write each fail, with the check named
and what to do; exit status 0 or 1."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from fedsql import certs
from fedsql.hashkey import make_key_file
from fedsql.pgserver import PostgresServer

DB = "check_agency"


@dataclass
class Run:
    rc: int
    out: str
    found: dict[str, list[tuple[str, str]]]  # check -> (status, message)

    def status(self, check: str) -> set[str]:
        return {s for s, _ in self.found.get(check, [])}

    def said(self, check: str) -> str:
        return " | ".join(m for _, m in self.found.get(check, []))


def _check(toml: Path) -> Run:
    r = subprocess.run(
        [sys.executable, "-m", "fedsql", "connector", "check", str(toml)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=toml.parent,
        env={k: v for k, v in os.environ.items() if k != "FEDSQL_HASH_KEY"},
    )
    found: dict[str, list[tuple[str, str]]] = {}
    lines = r.stdout.strip().splitlines()
    for ln in lines[:-1]:
        status, rest = ln.split(" ", 1)
        check, _, message = rest.strip().partition(": ")
        found.setdefault(check, []).append((status, message))
    assert "Traceback" not in r.stderr, r.stderr
    assert lines and " checks: " in lines[-1], r.stdout + r.stderr
    return Run(r.returncode, r.stdout, found)


def _agency(work: Path, name: str, backend: str, extra_connector: str = "", tls: str = "") -> Path:
    toml = work / f"{name}.toml"
    toml.write_text(
        f'[connector]\nname = "health"\nlisten = "127.0.0.1:0"\n'
        f'audit_log = "audit/{name}.jsonl"\n{extra_connector}'
        + (tls or "insecure = true\n")
        + f"\n{backend}"
    )
    return toml


def _tls(pki: Path, cert: Path, key: Path) -> str:
    return (
        'allowed_coordinators = ["coordinator"]\n[connector.tls]\n'
        f'cert = "{cert}"\nkey = "{key}"\nclient_ca = "{pki / certs.CA_CERT}"\n'
    )


DUCKDB = """[backend]
kind = "duckdb"
path = "health.duckdb"
{tables}
[[mask]]
table = "patients"
column = "national_id"
rule = "partial"
"""


@pytest.fixture(scope="module")
def duck_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    work = tmp_path_factory.mktemp("check")
    with duckdb.connect(str(work / "health.duckdb")) as con:
        con.execute("CREATE TABLE patients AS SELECT 1 AS id, '123-45-6789' AS national_id")
        con.execute("CREATE TABLE visits AS SELECT 1 AS patient_id, DATE '2024-01-02' AS day")
    pki = work / "pki"
    certs.init_ca(pki)
    good = certs.issue(pki, "connector", "health", pki, local=True)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    old = certs.issue(
        pki,
        "connector",
        "health",
        work / "old",
        local=True,
        not_before=past - dt.timedelta(days=1),
        not_after=past,
    )
    backend = DUCKDB.format(tables="")
    (work / "fingerprint").write_text(make_key_file(work / "federation.key"))
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o500)  # the connector's user may not write there (root may: see below)
    unwritable = "/sys/fedsql-check/audit.jsonl" if os.geteuid() == 0 else f"{locked}/a.jsonl"
    tomls = {
        "good": _agency(
            work,
            "good",
            backend,
            'hash_key_file = "federation.key"\n',
            _tls(pki, good.cert, good.key),
        ),
        "no_key": _agency(work, "no_key", backend.replace('rule = "partial"', 'rule = "hash"')),
        "no_cert": _agency(work, "no_cert", backend, tls=_tls(pki, work / "gone.crt", good.key)),
        "expired": _agency(work, "expired", backend, tls=_tls(pki, old.cert, old.key)),
        "wrong_table": _agency(
            work, "wrong_table", DUCKDB.format(tables='tables = ["patients", "vistis"]')
        ),
        "bad_mask": _agency(
            work, "bad_mask", backend.replace('column = "national_id"', 'column = "ssn"')
        ),
        "audit": _agency(work, "audit", backend, tls=_tls(pki, good.cert, good.key)),
        "bad_config": _agency(work, "bad_config", backend, 'listn = "x"\n'),
    }
    held = socket.socket()  # a port some other process listens on
    held.bind(("127.0.0.1", 0))
    held.listen()
    busy = tomls["busy"] = _agency(work, "busy", backend)
    port = held.getsockname()[1]
    busy.write_text(busy.read_text().replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"'))
    text = tomls["audit"].read_text()
    tomls["audit"].write_text(text.replace('"audit/audit.jsonl"', f'"{unwritable}"'))
    with held, ThreadPoolExecutor(4) as pool:
        return dict(zip(tomls, pool.map(_check, tomls.values()), strict=True))


def test_a_port_in_use_is_a_warning(duck_runs: dict[str, Run]) -> None:
    r = duck_runs["busy"]
    assert r.rc == 0, r.out
    assert r.status("listen") == {"warn"} and "already running" in r.said("listen")


def test_a_good_tls_duckdb_agency_passes(duck_runs: dict[str, Run]) -> None:
    r = duck_runs["good"]
    assert r.rc == 0, r.out
    for check in (
        "config",
        "listen",
        "tls cert",
        "tls key",
        "tls names",
        "tls chain",
        "tls CA",
        "audit log",
        "backend",
        "table patients",
        "table visits",
        "policy",
    ):
        assert r.status(check) == {"ok"}, (check, r.out)
    assert "396 days left" in r.said("tls cert")
    assert "names health" in r.said("tls names")
    assert "2 table(s) exposed" in r.said("backend")
    assert "masks national_id (partial)" in r.said("table patients")
    assert "ready to serve" in r.out.splitlines()[-1]
    assert r.status("hash key") == {"ok"}
    assert f"fingerprint {(tmp_dir(r) / 'fingerprint').read_text()}" in r.said("hash key")


def tmp_dir(r: Run) -> Path:
    return Path(r.said("config").split(": valid")[0]).parent


def test_a_hash_mask_without_a_key_fails(duck_runs: dict[str, Run]) -> None:
    r = duck_runs["no_key"]
    assert r.rc == 1
    assert r.status("hash key") == {"FAIL"}
    assert "hash_key_file" in r.said("hash key") and "FEDSQL_HASH_KEY" in r.said("hash key")


def test_a_missing_certificate_fails(duck_runs: dict[str, Run]) -> None:
    r = duck_runs["no_cert"]
    assert r.rc == 1
    assert r.status("tls cert") == {"FAIL"}
    assert "gone.crt: not found" in r.said("tls cert")
    assert "fedsql certs issue --ca CA_DIR connector health" in r.said("tls cert")
    assert "fix the FAIL lines" in r.out.splitlines()[-1]


def test_an_expired_certificate_fails(duck_runs: dict[str, Run]) -> None:
    r = duck_runs["expired"]
    assert r.rc == 1
    assert r.status("tls cert") == {"FAIL"}
    assert "expired 30 day(s) ago" in r.said("tls cert") and "restart" in r.said("tls cert")
    assert r.status("tls key") == {"ok"} and r.status("tls chain") == {"ok"}  # only the dates


def test_a_table_that_is_not_there_fails(duck_runs: dict[str, Run]) -> None:
    r = duck_runs["wrong_table"]
    assert r.rc == 1
    assert r.status("backend") == {"FAIL"}
    assert "vistis" in r.said("backend") and "not found" in r.said("backend")
    assert r.status("tls") == {"warn"}  # plaintext: a warning, not a failure


def test_a_mask_on_a_missing_column_fails(duck_runs: dict[str, Run]) -> None:
    r = duck_runs["bad_mask"]
    assert r.rc == 1
    assert r.status("policy") == {"FAIL"}
    assert "unknown column 'ssn'" in r.said("policy") and "national_id" in r.said("policy")
    assert r.status("table patients") == {"ok"}


def test_an_unwritable_audit_directory_fails(duck_runs: dict[str, Run]) -> None:
    r = duck_runs["audit"]
    assert r.rc == 1
    assert r.status("audit log") == {"FAIL"}
    assert "cannot write" in r.said("audit log") and "write access" in r.said("audit log")
    assert r.status("backend") == {"ok"}


def test_an_invalid_config_fails_first(duck_runs: dict[str, Run]) -> None:
    r = duck_runs["bad_config"]
    assert r.rc == 1
    assert list(r.found) == ["config"]
    assert "unknown key(s) 'listn'" in r.said("config")


@pytest.fixture(scope="module")
def pg_runs(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    work = tmp_path_factory.mktemp("check_pg")
    pg_server.create_database(DB)
    pg_server.execute(
        "CREATE TABLE people (id INT, name TEXT)",
        "INSERT INTO people VALUES (1, 'Anna')",
        database=DB,
    )
    reader = pg_server.create_reader(DB, ["people"], role="check_reader")
    backend = '[backend]\nkind = "postgres"\ndsn = "{dsn}"\ntables = ["people"]\n{extra}'
    tomls = {
        "reader": _agency(work, "reader", backend.format(dsn=reader, extra="")),
        "superuser": _agency(work, "superuser", backend.format(dsn=pg_server.dsn(DB), extra="")),
        "allowed": _agency(
            work,
            "allowed",
            backend.format(dsn=pg_server.dsn(DB), extra="allow_writable_role = true\n"),
        ),
    }
    with ThreadPoolExecutor(3) as pool:
        return dict(zip(tomls, pool.map(_check, tomls.values()), strict=True))


def test_a_read_only_postgres_role_passes(pg_runs: dict[str, Run]) -> None:
    r = pg_runs["reader"]
    assert r.rc == 0, r.out
    assert r.status("database role") == {"ok"} and "may only read" in r.said("database role")
    assert r.status("table people") == {"ok"} and r.status("backend") == {"ok"}


def test_a_postgres_role_that_may_write_fails(pg_runs: dict[str, Run]) -> None:
    r = pg_runs["superuser"]
    assert r.rc == 1
    assert r.status("database role") == {"FAIL"}
    said = r.said("database role")
    assert "superuser" in said and "NOSUPERUSER" in said and "allow_writable_role" in said
    assert r.status("table people") == {"ok"}  # the rest is still checked


def test_allow_writable_role_turns_it_into_a_warning(pg_runs: dict[str, Run]) -> None:
    r = pg_runs["allowed"]
    assert r.rc == 0, r.out
    assert r.status("database role") == {"warn"}
    assert "allow_writable_role = true" in r.said("database role")
