"""`fedsql serve`: a real Flight SQL client (ADBC) against the service in its own process."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions
from conftest import PASSWORDS
from helpers import LocalService, start_service

import fedsql
from fedsql import scenario
from fedsql.cli import main
from fedsql.errors import ConfigError
from fedsql.local import LocalFederation
from fedsql.service.auth import hash_password, verify_password
from fedsql.service.remote import Remote, RemoteError

QUERIES = Path(fedsql.__file__).parent / "bench" / "queries"


def adbc(svc: LocalService, user: str, password: str | None = None) -> Any:
    kwargs = {"username": user, "password": password or PASSWORDS[user]}
    if svc.ca is not None:
        kwargs[DatabaseOptions.TLS_ROOT_CERTS.value] = svc.ca.read_text()
    return flight_sql.connect(svc.url, db_kwargs=kwargs, autocommit=True)


@pytest.fixture(scope="module")
def alice_db(service: LocalService) -> Iterator[Any]:
    con = adbc(service, "alice")
    yield con
    con.close()


def test_objects_are_the_agencies_and_their_tables(alice_db: Any, fed: fedsql.Federation) -> None:
    objects = alice_db.adbc_get_objects(depth="all").read_all().to_pylist()
    seen = {
        (c["catalog_name"], s["db_schema_name"], t["table_name"]): [
            col["column_name"] for col in t["table_columns"]
        ]
        for c in objects
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"]
    }
    want = {(t.agency, t.schema_key, t.name): t.arrow_schema.names for t in fed.catalog.tables}
    assert seen == want
    assert {c["catalog_name"] for c in objects} == {"trade", "registry", "industry"}
    schema = alice_db.adbc_get_table_schema("lineitem", catalog_filter="trade")
    assert schema == next(t.arrow_schema for t in fed.catalog.tables if t.name == "lineitem")
    only = alice_db.adbc_get_objects(depth="tables", table_name_filter="part%").read_all()
    names = {
        t["table_name"]
        for c in only.to_pylist()
        for s in c["catalog_db_schemas"] or []
        for t in s["db_schema_tables"] or []
    }
    assert names == {"part", "partsupp"}
    assert alice_db.adbc_get_table_types() == ["TABLE"]


def test_server_info(alice_db: Any) -> None:
    info = alice_db.adbc_get_info()
    assert info["vendor_name"] == "fedsql"
    assert info["vendor_version"] == fedsql.__version__
    assert info["vendor_arrow_version"] == pa.__version__


@pytest.mark.parametrize("q", [1, 3, 5, 10, 18])
def test_tpch_through_flight_sql_equals_embedded(
    q: int, alice_db: Any, fed: fedsql.Federation
) -> None:
    sql = (QUERIES / f"q{q:02d}.sql").read_text()
    with alice_db.cursor() as cur:
        cur.execute(sql)
        got = cur.fetch_arrow_table()
    want = fed.sql(sql)
    assert got.num_rows == want.num_rows > 0
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()


def test_prepared_statement_binds_parameters_as_literals(
    alice_db: Any, fed: fedsql.Federation
) -> None:
    sql = (
        "SELECT o_orderpriority, count(*) AS n FROM orders "
        "WHERE o_orderdate >= ? AND o_orderdate < ? AND o_orderpriority <> ? "
        "GROUP BY 1 ORDER BY 1"
    )
    with alice_db.cursor() as cur:
        cur.execute(sql, (dt.date(1995, 1, 1), dt.date(1995, 4, 1), "5-LOW"))
        got = cur.fetch_arrow_table()
        # The same prepared statement, other values.
        cur.execute(sql, (dt.date(1996, 1, 1), dt.date(1996, 2, 1), "1-URGENT"))
        again = cur.fetch_arrow_table()
        # A value is a value, never SQL: a quote cannot escape the literal.
        cur.execute("SELECT count(*) AS n FROM nation WHERE n_name = ?", ("x' OR '1'='1",))
        injected = cur.fetch_arrow_table()
        cur.execute("SELECT n_name FROM nation WHERE n_nationkey = $1 OR n_name = $2", (3, "PERU"))
        named = sorted(cur.fetch_arrow_table().column("n_name").to_pylist())
    want = fed.sql(
        "SELECT o_orderpriority, count(*) AS n FROM orders WHERE o_orderdate >= DATE '1995-01-01' "
        "AND o_orderdate < DATE '1995-04-01' AND o_orderpriority <> '5-LOW' GROUP BY 1 ORDER BY 1"
    )
    assert got.to_pylist() == want.to_pylist() and got.num_rows == 4
    assert again.to_pylist() != got.to_pylist() and again.num_rows == 4
    assert injected.to_pylist() == [{"n": 0}]
    assert named == ["CANADA", "PERU"]


def test_errors_come_back_as_clear_messages(alice_db: Any) -> None:
    with alice_db.cursor() as cur, pytest.raises(Exception, match="unknown table 'nosuch'") as e:
        cur.execute("SELECT * FROM nosuch")
    assert "Traceback" not in str(e.value)  # no server internals in what clients see
    with alice_db.cursor() as cur, pytest.raises(Exception, match="read-only|SELECT"):
        cur.execute("DELETE FROM nation")
        cur.fetchall()


def test_wrong_password_and_unknown_user_are_refused(service: LocalService) -> None:
    for user, pw in (("alice", "not-her-password"), ("mallory", "whatever-123")):
        with pytest.raises(Exception, match="UNAUTHENTICATED") as e:
            con = adbc(service, user, pw)
            con.cursor().execute("SELECT 1")
        assert "wrong user name or password" in str(e.value)
        assert pw not in str(e.value)
    # No credentials at all: every call is refused, not just the handshake.
    client = flight.FlightClient(service.url, tls_root_certs=service.ca.read_bytes())  # type: ignore[union-attr]
    with pytest.raises(flight.FlightUnauthenticatedError, match="sign in"):
        list(client.list_actions())
    client.close()
    with pytest.raises(RemoteError, match="sign-in refused for user 'alice'"):
        Remote(service.url, "alice", "nope-nope", ca_file=service.ca)
    log = service.log.read_text()
    assert "not-her-password" not in log and PASSWORDS["alice"] not in log


def test_plaintext_client_cannot_talk_to_tls_service(service: LocalService) -> None:
    with pytest.raises(RemoteError, match="cannot connect"):
        Remote(service.url.replace("grpc+tls", "grpc+tcp"), "alice", PASSWORDS["alice"])


def test_cancel_a_running_query_reaches_the_agency(
    service: LocalService, tpch_local: LocalFederation, capsys: pytest.CaptureFixture[str]
) -> None:
    """A slow query (a filtered self cross join of lineitem, at trade) is cancelled by id
    with `fedsql cancel`; the trade connector's audit log records the cancellation."""
    slow = (
        "SELECT a.l_orderkey, b.l_orderkey FROM trade.lineitem a, trade.lineitem b "
        "WHERE a.l_extendedprice * b.l_discount = 1234.5678"
    )
    outcome: dict[str, Any] = {}

    def run() -> None:
        con = adbc(service, "alice")
        try:
            with con.cursor() as cur:
                cur.execute(slow)
                outcome["rows"] = cur.fetchall()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            outcome["error"] = str(e)
        finally:
            con.close()

    t0 = time.monotonic()
    worker = threading.Thread(target=run)
    worker.start()
    remote = Remote(service.url, "alice", PASSWORDS["alice"], ca_file=service.ca)
    try:
        running: list[dict[str, Any]] = []
        while not running and time.monotonic() - t0 < 30:
            running = [q for q in remote.queries() if q["state"] == "running"]
            time.sleep(0.1)
        assert running, "the slow query never showed up as running"
        qid = running[0]["id"]
        assert running[0]["user"] == "alice" and "lineitem" in running[0]["sql"]
        time.sleep(0.5)  # let the fragment start at the agency
        auth = ["--url", service.url, "--ca", str(service.ca), "--user", "alice"]
        auth += ["--password-file", str(service.config.parent / "alice.password")]
        assert main(["cancel", qid, *auth]) == 0
        assert "cancelled" in capsys.readouterr().out
        worker.join(30)
        assert not worker.is_alive()
        assert "cancelled" in outcome.get("error", ""), outcome
        assert time.monotonic() - t0 < 30
        # The service lists it as cancelled ...
        assert main(["queries", "--json", *auth]) == 0
        mine = next(q for q in json.loads(capsys.readouterr().out) if q["id"] == qid)
        assert mine["state"] == "cancelled" and mine["user"] == "alice"
        # ... and the agency saw it: its audit line for this query id says cancelled.
        audit = tpch_local.work / "trade-audit.jsonl"
        deadline = time.monotonic() + 10
        lines: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            lines = [json.loads(x) for x in audit.read_text().splitlines()]
            lines = [x for x in lines if x.get("query_id") == qid]
            if lines:
                break
            time.sleep(0.1)
        assert lines and all(x["outcome"] == "cancelled" for x in lines), lines
        assert lines[0]["user"] == "alice"
        # Cancelling again: it has finished; someone else's query: not theirs to cancel.
        assert remote.cancel(qid) == "finished"
        assert remote.cancel("0000000000000000") == "unknown"
    finally:
        remote.close()
        worker.join(30)


def test_admins_see_every_query_users_only_theirs(
    service: LocalService, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = Remote(service.url, "alice", PASSWORDS["alice"], ca_file=service.ca)
    bob = Remote(service.url, "bob", PASSWORDS["bob"], ca_file=service.ca)
    try:
        alice.sql("SELECT count(*) FROM region")
        bob.sql("SELECT count(*) FROM nation")
        assert {q["user"] for q in alice.queries()} == {"alice"}
        assert {q["user"] for q in bob.queries()} >= {"alice", "bob"}
        done = next(q for q in alice.queries() if "region" in q["sql"])
        assert done["state"] == "done" and done["rows"] == 1
        assert done["agencies"]["registry"]["rows"] == 1
        assert done["agencies"]["registry"]["bytes"] > 0
        plan = alice.explain(
            "SELECT o_orderkey, c_name FROM orders JOIN customer ON o_custkey = c_custkey"
        )
        assert "trade" in plan and "registry" in plan
        auth = ["--url", service.url, "--ca", str(service.ca), "--user", "bob"]
        auth += ["--password-file", str(service.config.parent / "bob.password")]
        assert main(["queries", *auth]) == 0
        listing = capsys.readouterr().out
        assert "id " in listing and "| alice" in listing and "| bob" in listing
        assert "registry 1 rows/" in listing
    finally:
        alice.close()
        bob.close()


# -- masks follow the signed-in analyst ---------------------------------------------


@pytest.fixture(scope="module")
def scenario_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    """The agency scenario (hashed IDs, generalised fields) behind a plaintext service."""
    work = tmp_path_factory.mktemp("scenario-service")
    users = ""
    for user, roles in (("alice", '["analyst"]'), ("audrey", '["auditor"]')):
        users += f'[user.{user}]\nroles = {roles}\npassword_hash = "{hash_password(user * 3)}"\n\n'
    with LocalFederation(work, scenario.build(work, people=2000), users=users) as local:
        local.config_path.write_text(
            local.config_path.read_text() + "\n[service]\ninsecure = true\n"
        )
        svc = start_service(local.config_path)
        try:
            yield svc
        finally:
            svc.stop()


def test_masks_differ_by_user_as_in_the_embedded_api(scenario_service: LocalService) -> None:
    sql = "SELECT national_id, name, birth_date FROM people ORDER BY national_id LIMIT 5"
    seen = {}
    for user in ("alice", "audrey"):
        con = adbc(scenario_service, user, user * 3)
        with con.cursor() as cur:
            cur.execute(sql)
            seen[user] = cur.fetch_arrow_table()
        con.close()
        with fedsql.connect(scenario_service.config, user=user) as f:
            assert seen[user].to_pylist() == f.sql(sql).to_pylist()
    alice, audrey = seen["alice"].to_pylist(), seen["audrey"].to_pylist()
    assert all(r["national_id"].startswith("NID") for r in audrey)
    assert not any(r["national_id"].startswith("NID") for r in alice)  # hashed
    assert all(r["birth_date"].month == 1 and r["birth_date"].day == 1 for r in alice)
    # Each fragment carried the analyst's identity to the agency's audit log.
    audit = scenario_service.config.parent / "registry-audit.jsonl"
    users = {json.loads(x).get("user") for x in audit.read_text().splitlines()}
    assert {"alice", "audrey"} <= users


# -- configuration ------------------------------------------------------------------


def test_passwords_hash_and_verify() -> None:
    h = hash_password("correct horse")
    assert h.startswith("scrypt$") and "correct horse" not in h
    assert verify_password("correct horse", h)
    assert not verify_password("correct hors", h)
    assert not verify_password("x", "scrypt$garbage")


def test_serve_refuses_to_start_without_sign_in_or_tls(
    tpch_local: LocalFederation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tpch_local.config_path.read_text()  # users without password hashes
    cfg = tmp_path / "f.toml"
    cfg.write_text(base + "\n[service]\ninsecure = true\n")
    assert main(["serve", "-c", str(cfg)]) == 1
    assert "no user can sign in" in capsys.readouterr().err
    cfg.write_text(
        base.replace(
            'roles = ["analyst"]\n',
            'roles = ["analyst"]\npassword_hash = "' + hash_password("pw-123456") + '"\n',
            1,
        )
    )
    assert main(["serve", "-c", str(cfg)]) == 1
    assert "[service] needs TLS" in capsys.readouterr().err
    cfg.write_text(
        base.replace('roles = ["analyst"]\n', 'roles = ["analyst"]\npassword_hash = "hunter2"\n', 1)
    )
    with pytest.raises(ConfigError, match="never the password itself"):
        fedsql.config.load_federation(cfg)


def test_passwd_prints_a_hash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough password\n"))
    assert main(["passwd", "--user", "carol"]) == 0
    out = capsys.readouterr()
    assert verify_password("a long enough password", out.out.strip())
    assert "[user.carol]" in out.err
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["passwd"]) == 1
    assert "at least 8" in capsys.readouterr().err


def test_schema_of_a_statement(service: LocalService) -> None:
    """GetSchema on a statement (Flight's describe-before-fetch) gives the result's schema."""
    from fedsql.service import protocol
    from fedsql.v1 import flight_sql_pb2 as sql_pb

    remote = Remote(service.url, "alice", PASSWORDS["alice"], ca_file=service.ca)
    try:
        cmd = sql_pb.CommandStatementQuery(query="SELECT n_name, n_nationkey + 1 AS k FROM nation")
        desc = flight.FlightDescriptor.for_command(protocol.pack(cmd))
        schema = remote.client.get_schema(desc, remote.options).schema
        tables = remote.client.get_schema(
            flight.FlightDescriptor.for_command(protocol.pack(sql_pb.CommandGetTables())),
            remote.options,
        ).schema
    finally:
        remote.close()
    assert schema.names == ["n_name", "k"]
    assert tables == protocol.TABLES


def test_type_info_for_jdbc_get_type_info(service: LocalService) -> None:
    from fedsql.service import protocol
    from fedsql.v1 import flight_sql_pb2 as sql_pb

    remote = Remote(service.url, "alice", PASSWORDS["alice"], ca_file=service.ca)
    try:
        everything = remote._fetch(sql_pb.CommandGetXdbcTypeInfo())
        dates = remote._fetch(sql_pb.CommandGetXdbcTypeInfo(data_type=91))
    finally:
        remote.close()
    assert everything.schema == protocol.XDBC_TYPE_INFO
    assert {"BIGINT", "VARCHAR", "DECIMAL", "DATE"} <= set(everything["type_name"].to_pylist())
    assert dates["type_name"].to_pylist() == ["DATE"]
