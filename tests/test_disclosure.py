"""Disclosure by role: a catalog shows a principal only what they may query, no
row count that would tell how many rows a filter hides from them, and a row
filter's condition (its literals) only to those it does not bind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from fedsql.channels import open_channel
from fedsql.config import load_federation
from fedsql.local import LocalFederation, write_agency_toml
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc

POLICY = """
[[row_filter]]
table = "people"
where = "o_class <> 'SECRET'"
unless_role = ["auditor"]

[[mask]]
table = "people"
column = "ssn"
rule = "partial"
keep_last = 2

[[grant]]
table = "people"
roles = ["analyst", "auditor"]

[[grant]]
table = "budget"
roles = ["auditor"]
"""


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.ConnectorStub]:
    work: Path = tmp_path_factory.mktemp("disclosure")
    db = work / "agency.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE people AS SELECT i AS id, 'NID' || i AS ssn, "
        "CASE WHEN i < 3 THEN 'SECRET' ELSE 'open' END AS o_class FROM range(20) t(i)"
    )
    con.execute("CREATE TABLE budget AS SELECT 1 AS amount")
    con.close()
    toml = write_agency_toml(work / "agency.toml", "agency", "duckdb", db, POLICY)
    with LocalFederation(work, [toml]) as local:
        ch, raw = open_channel(load_federation(local.config_path).connector("agency"))
        with raw:
            yield pb_grpc.ConnectorStub(ch)


def _catalog(stub: pb_grpc.ConnectorStub, *roles: str) -> dict[str, pb.Table]:
    req = pb.GetCatalogRequest(principal=pb.Principal(user="u", roles=list(roles)))
    return {t.name: t for t in stub.GetCatalog(req, timeout=30).tables}


def test_tables_without_a_grant_are_not_listed(stub: pb_grpc.ConnectorStub) -> None:
    assert set(_catalog(stub, "analyst")) == {"people"}
    assert set(_catalog(stub, "auditor")) == {"people", "budget"}
    assert _catalog(stub) == {}


def test_row_counts_and_filter_literals_only_for_those_not_filtered(
    stub: pb_grpc.ConnectorStub,
) -> None:
    analyst = _catalog(stub, "analyst")["people"]
    assert analyst.row_filtered and analyst.row_count_estimate == -1
    assert list(analyst.row_filters) == ["row filter [unless auditor]"]
    assert "SECRET" not in str(analyst)
    auditor = _catalog(stub, "auditor")["people"]
    assert not auditor.row_filtered and auditor.row_count_estimate == 20
    assert list(auditor.row_filters) == ["o_class <> 'SECRET' [unless auditor]"]
    # the mask's rule (no data in it) is shown to everyone
    ssn = next(c for c in analyst.columns if c.name == "ssn")
    assert ssn.mask.startswith("partial") and ssn.mask_rules
