"""The analyst's purpose through `fedsql serve`: the x-fedsql-purpose header from
any Flight SQL client (here the ADBC driver) reaches the agencies' audit logs, and
unlocks an agency with require_purpose = true."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from adbc_driver_flightsql import dbapi as flight_sql
from helpers import LocalService, start_service

from fedsql import reasons
from fedsql.local import LocalFederation, write_agency_toml
from fedsql.service.auth import hash_password
from fedsql.service.remote import Remote, RemoteError, purpose_value

PASSWORD = "purpose-test-password"
HEADER = "adbc.flight.sql.rpc.call_header.x-fedsql-purpose"


@pytest.fixture(scope="module")
def strict(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalFederation, LocalService]]:
    """One agency that refuses queries without a purpose, behind `fedsql serve`."""
    work = tmp_path_factory.mktemp("purpose")
    (work / "data").mkdir()
    (work / "data" / "visits.csv").write_text("region,visits\nnorth,3\nsouth,4\n")
    toml = write_agency_toml(work / "health.toml", "health", "files", work / "data")
    toml.write_text(toml.read_text().replace("[backend]", "require_purpose = true\n\n[backend]"))
    (work / "alice.hash").write_text(hash_password(PASSWORD) + "\n")
    users = '[user.alice]\nroles = ["analyst"]\npassword_hash_file = "alice.hash"\n'
    users += "[service]\ninsecure = true\n"  # plaintext on loopback: the header is the point
    with LocalFederation(work, [toml], users=users) as local:
        svc = start_service(local.config_path)
        try:
            yield local, svc
        finally:
            svc.stop()


def _connect(svc: LocalService, purpose: str | None) -> Any:
    kwargs = {"username": "alice", "password": PASSWORD}
    if purpose is not None:
        kwargs[HEADER] = purpose_value(purpose)
    return flight_sql.connect(svc.url, db_kwargs=kwargs, autocommit=True)


def _purposes(local: LocalFederation) -> list[str]:
    lines = [json.loads(x) for x in (local.work / "health-audit.jsonl").read_text().splitlines()]
    return [r["purpose"] for r in lines if r.get("outcome") == "ok" and "purpose" in r]


def _sum(con: Any) -> Any:
    with con.cursor() as cur:
        cur.execute("SELECT sum(visits) AS v FROM visits")
        return cur.fetchall()


def test_a_flight_sql_client_sends_its_purpose_to_the_agencies(
    strict: tuple[LocalFederation, LocalService],
) -> None:
    local, svc = strict
    with _connect(svc, None) as con, pytest.raises(Exception, match="requires a purpose"):
        _sum(con)
    for purpose in ("regional statistics, 2025", "Gesundheitsstatistik für Ämter, 5%"):
        with _connect(svc, purpose) as con:
            assert _sum(con) == [(7,)]
        assert _purposes(local)[-1] == purpose


def test_a_missing_purpose_reaches_a_remote_client_as_a_reason_not_a_text(
    strict: tuple[LocalFederation, LocalService],
) -> None:
    """The service passes the agency's PURPOSE_REQUIRED on (the Flight error's
    extra_info): the shell's hint reads the reason; other refusals carry none."""
    _, svc = strict
    remote = Remote(svc.url, "alice", PASSWORD)
    try:
        with pytest.raises(RemoteError, match="requires a purpose") as e:
            remote.sql("SELECT sum(visits) AS v FROM visits")
        assert e.value.reason == reasons.PURPOSE_REQUIRED
        with pytest.raises(RemoteError) as other:
            remote.sql("SELECT nope FROM visits")
        assert other.value.reason == ""
        remote.purpose = "regional statistics"
        assert remote.sql("SELECT sum(visits) AS v FROM visits").column(0)[0].as_py() == 7
    finally:
        remote.close()


def test_a_purpose_that_is_not_printable_text_is_refused(
    strict: tuple[LocalFederation, LocalService],
) -> None:
    _, svc = strict
    for bad, why in (
        ("a%0Ab", "control character"),
        ("%FF%FE", "not UTF-8"),
        ("x" * 600, "longer"),
    ):
        kwargs = {"username": "alice", "password": PASSWORD, HEADER: bad}
        with (
            pytest.raises(Exception, match="INVALID_ARGUMENT") as e,
            flight_sql.connect(svc.url, db_kwargs=kwargs, autocommit=True) as con,
        ):
            _sum(con)
        assert why in str(e.value)


def test_another_purpose_shares_the_catalog_and_its_refresh(fed) -> None:  # type: ignore[no-untyped-def]
    """``with_purpose`` is the same analyst asking for another reason: one catalog and
    one plan cache (a plan is a function of catalog, policies and roles, not of the
    purpose), so a refresh through either is a refresh for both: neither plans from a
    catalog the other has dropped."""
    child = fed.with_purpose("audit of 2026 returns")
    assert child.principal.purpose == "audit of 2026 returns"
    assert child.principal.user == fed.principal.user
    assert child.catalog is fed.catalog
    before = fed.catalog
    child.refresh_catalog()
    assert fed.catalog is child.catalog and fed.catalog is not before
    assert fed.sql("SELECT count(*) FROM region").column(0)[0].as_py() == 5
    assert child.sql("SELECT count(*) FROM region").column(0)[0].as_py() == 5
