"""Masks and row filters: every rule, enforced at the agency (real connectors over
gRPC) and at the coordinator; adversarial queries never see raw values."""

from __future__ import annotations

import datetime as dt
import decimal
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import grpc
import pyarrow as pa
import pytest
from helpers import start_error

import fedsql
from fedsql import scenario
from fedsql.channels import open_channel
from fedsql.config import load_federation
from fedsql.errors import ConfigError, FedSQLError
from fedsql.local import LocalFederation
from fedsql.policy import Policy, view_for
from fedsql.policy.load import parse_policy
from fedsql.policy.masks import hmac_hasher, register_hash
from fedsql.policy.model import Mask, RowFilter
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import ipc_chunks_to_reader

KEY = b"0123456789abcdef0123456789abcdef"


# -- each rule, on values, NULLs and types --------------------------------------------


def _masked(rule: Mask, values: pa.Array) -> pa.Array:
    con = duckdb.connect()
    register_hash(con, KEY)
    con.register("t", pa.table({"c": values}))
    tp = Policy((rule,)).for_table("t", ())
    view = view_for(tp, "t", pa.schema([("c", values.type)]))
    assert view is not None
    return con.sql(view.sql(dialect="duckdb")).to_arrow_table().column("c").combine_chunks()


def test_redact() -> None:
    out = _masked(Mask("t", "c", "redact"), pa.array(["123-45-6789", None, ""]))
    assert out.to_pylist() == ["***", None, "***"]
    out = _masked(Mask("t", "c", "redact"), pa.array([5, None], pa.int64()))
    assert out.to_pylist() == [None, None] and out.type == pa.int64()


def test_null_keeps_type() -> None:
    for arr in (
        pa.array([1.5, None]),
        pa.array([dt.date(2020, 1, 2)]),
        pa.array([decimal.Decimal("1.25")], pa.decimal128(10, 2)),
    ):
        out = _masked(Mask("t", "c", "null"), arr)
        assert out.null_count == len(arr) and out.type == arr.type


def test_hash_is_keyed_hmac_sha256() -> None:
    out = _masked(Mask("t", "c", "hash"), pa.array(["NID1", None, "NID1", "NID2"]))
    import hashlib
    import hmac

    want = hmac.new(KEY, b"NID1", hashlib.sha256).hexdigest()
    assert out.to_pylist()[0] == want == out.to_pylist()[2]
    assert out.to_pylist()[1] is None and out.to_pylist()[3] != want
    assert hmac_hasher(b"another key, 16+ bytes")(pa.array(["NID1"]))[0].as_py() != want
    ints = _masked(Mask("t", "c", "hash"), pa.array([42], pa.int64()))
    assert (
        ints.type == pa.string()
        and ints[0].as_py() == hmac.new(KEY, b"42", hashlib.sha256).hexdigest()
    )


def test_partial() -> None:
    out = _masked(
        Mask("t", "c", "partial", keep_last=4), pa.array(["4111222233334444", "12", None])
    )
    assert out.to_pylist() == ["************4444", "**", None]
    out = _masked(Mask("t", "c", "partial", keep_first=2, keep_last=1), pa.array(["abcdef"]))
    assert out.to_pylist() == ["ab***f"]


def test_email() -> None:
    out = _masked(Mask("t", "c", "email"), pa.array(["john.doe@example.org", "nomail", None]))
    assert out.to_pylist() == ["j***@example.org", "***", None]


def test_year() -> None:
    out = _masked(Mask("t", "c", "year"), pa.array([dt.date(1984, 7, 9), None]))
    assert out.to_pylist() == [dt.date(1984, 1, 1), None] and out.type == pa.date32()
    ts = pa.array([dt.datetime(2001, 5, 6, 7, 8, 9)], pa.timestamp("us"))
    out = _masked(Mask("t", "c", "year"), ts)
    assert out.to_pylist() == [dt.datetime(2001, 1, 1)] and out.type == ts.type


def test_bucket() -> None:
    out = _masked(Mask("t", "c", "bucket", width=10), pa.array([17, -3, None, 20], pa.int64()))
    assert out.to_pylist() == [10, -10, None, 20] and out.type == pa.int64()
    dec = pa.array([decimal.Decimal("123.45")], pa.decimal128(12, 2))
    out = _masked(Mask("t", "c", "bucket", width=100), dec)
    assert out.to_pylist() == [decimal.Decimal("100.00")] and out.type == dec.type


def test_roles_select_the_rule() -> None:
    pol = Policy(
        (
            Mask("t", "c", "redact", unless_role=("auditor",)),
            Mask("t", "d", "null", role=("public",)),
        ),
        (RowFilter("t", "c <> 'x'", unless_role=("auditor",)),),
    )
    assert set(pol.for_table("T", ("analyst",)).masks) == {"c"}
    assert set(pol.for_table("t", ("public",)).masks) == {"c", "d"}
    auditor = pol.for_table("t", ("auditor", "public"))
    assert set(auditor.masks) == {"d"} and not auditor.filters


@pytest.mark.parametrize(
    "entry, why",
    [
        ('[[mask]]\ntable="t"\ncolumn="c"\nrule="scramble"\n', "unknown mask rule 'scramble'"),
        ('[[mask]]\ntable="t"\ncolumn="c"\nrule="bucket"\n', "needs width > 0"),
        (
            '[[mask]]\ntable="t"\ncolumn="c"\nrule="hash"\nkeep_last=2\n',
            "only go with rule 'partial'",
        ),
        ('[[mask]]\ntable="t"\nrule="hash"\n', "needs 'column'"),
        ('[[mask]]\ntable="t"\ncolumn="c"\nrule="hash"\nwhen="x"\n', "unknown key(s) when"),
        ('[[row_filter]]\ntable="t"\nwhere="a = (SELECT 1)"\n', "subqueries are not supported"),
        ('[[row_filter]]\ntable="t"\nwhere="a = = 1"\n', "not a valid SQL expression"),
    ],
)
def test_policy_shape_errors_name_the_line(tmp_path: Path, entry: str, why: str) -> None:
    import tomllib

    p = tmp_path / "x.toml"
    p.write_text("# header\n\n" + entry)
    doc = tomllib.loads(p.read_text())
    with pytest.raises(ConfigError) as info:
        parse_policy(p, doc.get("mask"), doc.get("row_filter"))
    assert why in str(info.value) and f"{p}:3" in str(info.value)


# -- the agency scenario: three real connectors ----------------------------------------


@pytest.fixture(scope="module")
def scen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    work = tmp_path_factory.mktemp("scenario")
    with LocalFederation(work, scenario.build(work, people=3000), users=scenario.USERS) as local:
        yield local


@pytest.fixture(scope="module")
def alice(scen: LocalFederation) -> Iterator[fedsql.Federation]:
    with fedsql.connect(scen.config_path, user="alice") as f:
        yield f


@pytest.fixture(scope="module")
def audrey(scen: LocalFederation) -> Iterator[fedsql.Federation]:
    with fedsql.connect(scen.config_path, user="audrey") as f:
        yield f


@pytest.fixture(scope="module")
def secrets_(scen: LocalFederation) -> dict[str, set[str]]:
    """Raw values that must never reach an analyst."""
    rows = scenario.raw(scen.work, "SELECT national_id, name, email, address FROM people")
    employers = {r[0] for r in scenario.raw(scen.work, "SELECT employer FROM tax_returns")}
    return {
        "national_id": {r[0] for r in rows},
        "email": {r[2] for r in rows},
        "address": {r[3] for r in rows},
        "name": {r[1] for r in rows},
        "employer": employers,
    }


def _cells(table: pa.Table) -> Iterator[object]:
    for col in table.columns:
        for v in col.to_pylist():
            if isinstance(v, dict):
                yield from v.values()
            elif isinstance(v, list):
                yield from v
            else:
                yield v


_NID = re.compile(r"NID\d{9}")


def _assert_no_leak(table: pa.Table, secrets: dict[str, set[str]]) -> None:
    for v in _cells(table):
        if isinstance(v, str):
            assert not _NID.search(v), f"raw national id in {v!r}"
            assert v not in secrets["email"] and v not in secrets["address"], v
            assert v not in secrets["name"] and v not in secrets["employer"], v
        if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
            assert (v.month, v.day) == (1, 1) or v.year >= 2023, f"raw birth date {v}"


def _some(work: Path, sql: str) -> object:
    return scenario.raw(work, sql)[0][0]


ADVERSARIAL = [
    "SELECT * FROM people",
    "SELECT national_id AS x, name AS y, email AS z FROM people",
    "SELECT p.* FROM people p",
    "SELECT p FROM people p",
    "SELECT COLUMNS('.*') FROM people",
    "SELECT * EXCLUDE (region) FROM people",
    "SELECT CAST(birth_date AS VARCHAR) AS b, birth_date::TIMESTAMP AS t FROM people",
    "SELECT upper(name), lower(address), substr(national_id, 1, 12), left(email, 20) FROM people",
    "SELECT replace(email, '***', '') AS e, reverse(name) AS n FROM people",
    "SELECT * FROM (SELECT national_id, address FROM people) sub",
    "WITH x AS (SELECT national_id, name FROM people) SELECT * FROM x",
    "SELECT national_id FROM people UNION SELECT national_id FROM visits "
    "UNION SELECT national_id FROM tax_returns",
    "SELECT birth_date, count(*) AS n FROM people GROUP BY birth_date",
    "SELECT min(birth_date), max(birth_date), min(national_id), max(address) FROM people",
    "SELECT national_id, row_number() OVER (ORDER BY birth_date, address) AS r FROM people",
    "SELECT name FROM people ORDER BY address, national_id LIMIT 20",
    "SELECT string_agg(address, ',') AS a, string_agg(name, ',') AS n FROM people",
    "SELECT list(national_id) AS l FROM people",
    "SELECT v.*, p.* FROM visits v JOIN people p ON v.national_id = p.national_id LIMIT 50",
    "SELECT DISTINCT email FROM people",
    "SELECT employer, income FROM tax_returns",
    "SELECT (SELECT max(p2.national_id) FROM people p2 WHERE p2.national_id = p.national_id) "
    "FROM people p",
    "SELECT national_id FROM people WHERE national_id IN (SELECT national_id FROM visits)",
    "SELECT extract(month FROM birth_date) AS m, extract(day FROM birth_date) AS d, count(*) "
    "FROM people GROUP BY ALL",
    "SELECT struct_pack(a := national_id, b := email) AS s FROM people",
    "SELECT md5(national_id) AS h, hash(address) AS h2 FROM people",
    "SELECT regexp_replace(national_id, '[a-f]', 'x', 'g') AS r FROM people",
]


@pytest.mark.parametrize("sql", ADVERSARIAL)
def test_adversarial_queries_see_no_raw_value(
    sql: str, alice: fedsql.Federation, audrey: fedsql.Federation, secrets_: dict[str, set[str]]
) -> None:
    got = alice.sql(sql)
    assert got.num_rows > 0
    _assert_no_leak(got, secrets_)
    # The exempt role runs the same query and, with no row filter, sees at least as much.
    assert audrey.sql(sql).num_rows >= got.num_rows


def _count(fed: fedsql.Federation, sql: str) -> int:
    return int(fed.sql(sql).column(0)[0].as_py())


@pytest.mark.parametrize(
    "template",
    [
        "SELECT count(*) FROM people WHERE national_id = '{nid}'",
        "SELECT count(*) FROM people WHERE national_id LIKE 'NID%'",
        "SELECT count(*) FROM people WHERE email = '{email}'",
        "SELECT count(*) FROM people WHERE address LIKE '1%'",
        "SELECT count(*) FROM people WHERE birth_date = DATE '{birth}'",
        "SELECT count(*) FROM people p JOIN visits v ON p.national_id = v.national_id "
        "WHERE v.national_id = '{nid}'",
        "SELECT count(*) FROM tax_returns WHERE income = {income}",
        "SELECT count(*) FROM tax_returns WHERE employer = 'Globex'",
        "SELECT count(*) FROM people WHERE region = 'Smallville'",
        "SELECT count(*) FROM visits WHERE region = 'Smallville'",
    ],
)
def test_predicates_see_masked_values_only(
    template: str, scen: LocalFederation, alice: fedsql.Federation, audrey: fedsql.Federation
) -> None:
    work = scen.work
    nid, email, birth = scenario.raw(
        work,
        "SELECT national_id, email, birth_date FROM people "
        "WHERE extract(day FROM birth_date) > 1 AND region <> 'Smallville' LIMIT 1",
    )[0]
    income = _some(work, "SELECT income FROM tax_returns WHERE income % 10000 <> 0 LIMIT 1")
    sql = template.format(nid=nid, email=email, birth=birth, income=income)
    assert _count(alice, sql) == 0
    assert _count(audrey, sql) > 0  # the same predicate on raw values does match


def test_row_filters_apply_before_counting(
    scen: LocalFederation, alice: fedsql.Federation, audrey: fedsql.Federation
) -> None:
    total = _some(scen.work, "SELECT count(*) FROM people")
    hidden = _some(scen.work, "SELECT count(*) FROM people WHERE region = 'Smallville'")
    assert _count(alice, "SELECT count(*) FROM people") == total - hidden
    assert _count(audrey, "SELECT count(*) FROM people") == total
    got = alice.sql("SELECT region, count(*) AS n FROM people GROUP BY region")
    assert "Smallville" not in got.column("region").to_pylist()


def test_hashed_keys_join_across_agencies(scen: LocalFederation, alice: fedsql.Federation) -> None:
    sql = (
        "SELECT count(*) FROM visits v JOIN tax_returns t ON v.national_id = t.national_id "
        "JOIN people p ON p.national_id = t.national_id"
    )
    want = _some(scen.work, sql + " WHERE v.region <> 'Smallville' AND p.region <> 'Smallville'")
    assert _count(alice, sql) == want > 0
    ids = alice.sql("SELECT DISTINCT national_id FROM tax_returns").column(0).to_pylist()
    assert all(re.fullmatch(r"[0-9a-f]{64}", x) for x in ids)


def _raw_execute(local: LocalFederation, agency: str, sql: str, roles: list[str]) -> pa.Table:
    ch, raw = open_channel(load_federation(local.config_path).connector(agency))
    with raw:
        req = pb.ExecuteRequest(
            query_id="raw", sql=sql, principal=pb.Principal(user="mallory", roles=roles)
        )
        msgs = list(pb_grpc.ConnectorStub(ch).Execute(req, timeout=30))
    return ipc_chunks_to_reader(m.arrow_ipc for m in msgs if m.arrow_ipc).read_all()


def test_connector_masks_hand_written_fragments(
    scen: LocalFederation, secrets_: dict[str, set[str]]
) -> None:
    """No coordinator in between and none of its policies: the agency still masks."""
    t = _raw_execute(scen, "registry", "SELECT national_id, address, email FROM people", [])
    _assert_no_leak(t, secrets_)
    t = _raw_execute(
        scen, "registry", "SELECT count(*) AS n FROM main.people WHERE region = 'Smallville'", []
    )
    assert t.column("n")[0].as_py() == 0
    t = _raw_execute(scen, "registry", "SELECT national_id FROM people LIMIT 1", ["auditor"])
    assert _NID.fullmatch(t.column(0)[0].as_py())


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT fedsql_hash('NID000007919') FROM people",
        "WITH people AS (SELECT * FROM people) SELECT * FROM people",
    ],
)
def test_connector_refuses_policy_bypasses(scen: LocalFederation, sql: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _raw_execute(scen, "registry", sql, [])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_analyst_cannot_call_the_hash_function(alice: fedsql.Federation) -> None:
    with pytest.raises(FedSQLError, match="function fedsql_hash is not in the fragment language"):
        alice.sql("SELECT count(*) FROM people WHERE national_id = fedsql_hash('NID000007919')")


def test_errors_do_not_echo_values(alice: fedsql.Federation, secrets_: dict[str, set[str]]) -> None:
    for sql in [
        "SELECT CAST(national_id AS INTEGER) FROM people",
        "SELECT CAST(name AS DATE) FROM people",
        "SELECT CAST(region AS INTEGER) FROM people",
    ]:
        with pytest.raises(FedSQLError) as info:
            alice.sql(sql)
        msg = str(info.value)
        assert not _NID.search(msg) and "Smallville" not in msg and "North" not in msg, msg


def test_catalog_and_explain_show_policies(scen: LocalFederation, alice: fedsql.Federation) -> None:
    text = alice.explain("SELECT name, birth_date FROM people")
    assert "registry.people.birth_date masked (year)" in text and "row filter" in text
    r = subprocess.run(
        [sys.executable, "-m", "fedsql", "catalog", "-c", str(scen.config_path), "--user", "alice"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert re.search(r"national_id \| VARCHAR +\| hash +\| hash \[unless auditor\]", r.stdout)
    # the condition's literals are for those it does not bind (auditors)
    assert "  row filter [unless auditor]  (applies to you)" in r.stdout
    assert "Smallville" not in r.stdout


def test_role_scoped_mask(scen: LocalFederation) -> None:
    with fedsql.connect(scen.config_path, user="pat") as pat:
        days = pat.sql("SELECT DISTINCT extract(day FROM visit_date) FROM visits").column(0)
        assert days.to_pylist() == [1]


# -- the federation's own policies, at the coordinator -----------------------------------


def _fed_with_policy(scen: LocalFederation, tmp_path: Path, policy: str) -> Path:
    cfg = tmp_path / "fed-policy.toml"
    key = scen.work / "federation.key"
    cfg.write_text(
        scen.config_path.read_text().replace(
            "[user.alice]", f'[coordinator]\nhash_key_file = "{key}"\n\n[user.alice]'
        )
        + policy
    )
    return cfg


COORD_POLICY = """
[[mask]]
table = "health.visits"
column = "cost"
rule = "bucket"
width = 100
unless_role = ["auditor"]

[[mask]]
table = "registry.people"
column = "region"
rule = "hash"

[[row_filter]]
table = "health.visits"
where = "diagnosis <> 'flu'"
"""


def test_coordinator_policies(scen: LocalFederation, tmp_path: Path) -> None:
    cfg = _fed_with_policy(scen, tmp_path, COORD_POLICY)
    with fedsql.connect(cfg, user="alice") as fed:
        costs = fed.sql("SELECT DISTINCT cost FROM visits").column(0).to_pylist()
        assert costs and all(c % 100 == 0 for c in costs)
        assert _count(fed, "SELECT count(*) FROM visits WHERE diagnosis = 'flu'") == 0
        assert _count(fed, "SELECT count(*) FROM visits WHERE cost = 311.70") == 0
        regions = fed.sql("SELECT DISTINCT region FROM people").column(0).to_pylist()
        assert all(re.fullmatch(r"[0-9a-f]{64}", r) for r in regions)
        assert _count(fed, "SELECT count(*) FROM people WHERE region = 'North'") == 0
        # The agency's own masks still hold: the coordinator cannot loosen them.
        ids = fed.sql("SELECT national_id FROM visits LIMIT 5").column(0).to_pylist()
        assert all(re.fullmatch(r"[0-9a-f]{64}", x) for x in ids)
        plan = fed.explain("SELECT cost FROM visits WHERE visit_id < 10 AND cost > 100")
        assert "at coordinator: health.visits.cost masked (bucket" in plan
        # The unmasked predicate still runs at the agency; the masked one does not.
        frag = plan.split("residual")[0]
        assert "visit_id" in frag and "> 100" not in frag
    with fedsql.connect(cfg, user="audrey") as fed:
        assert _count(fed, "SELECT count(*) FROM visits WHERE cost = 311.70") > 0
        assert _count(fed, "SELECT count(*) FROM visits WHERE diagnosis = 'flu'") == 0


@pytest.mark.parametrize(
    "policy, why",
    [
        ('[[mask]]\ntable = "health.nope"\ncolumn = "x"\nrule = "null"\n', "unknown table"),
        ('[[mask]]\ntable = "health.visits"\ncolumn = "nope"\nrule = "null"\n', "unknown column"),
        ('[[mask]]\ntable = "health.visits"\ncolumn = "cost"\nrule = "email"\n', "needs a text"),
    ],
)
def test_coordinator_policy_validation(
    scen: LocalFederation, tmp_path: Path, policy: str, why: str
) -> None:
    cfg = _fed_with_policy(scen, tmp_path, "\n" + policy)
    with fedsql.connect(cfg, user="alice") as fed, pytest.raises(ConfigError, match=why):
        fed.sql("SELECT 1 FROM visits LIMIT 1")


# -- agency policy validation at start-up --------------------------------------------------


@pytest.mark.parametrize(
    "entry, why",
    [
        (
            '[[mask]]\ntable = "peeple"\ncolumn = "name"\nrule = "redact"\n',
            "unknown table 'peeple'",
        ),
        ('[[mask]]\ntable = "people"\ncolumn = "nam"\nrule = "redact"\n', "unknown column 'nam'"),
        ('[[mask]]\ntable = "people"\ncolumn = "name"\nrule = "year"\n', "needs a date"),
        (
            '[[mask]]\ntable = "people"\ncolumn = "birth_date"\nrule = "bucket"\nwidth = 5\n',
            "needs a numeric",
        ),
        (
            '[[row_filter]]\ntable = "people"\nwhere = "regoin <> \'x\'"\n',
            "unknown column 'regoin'",
        ),
    ],
)
def test_connector_refuses_to_start_on_a_bad_policy(
    scen: LocalFederation, tmp_path: Path, entry: str, why: str
) -> None:
    toml = tmp_path / "registry.toml"
    text = (
        (scen.work / "registry.toml")
        .read_text()
        .replace('path = "registry.duckdb"', f'path = "{scen.work / "registry.duckdb"}"')
        .replace(
            'hash_key_file = "federation.key"', f'hash_key_file = "{scen.work / "federation.key"}"'
        )
    )
    toml.write_text(text + "\n" + entry)
    line = len(text.splitlines()) + 2
    err = start_error(toml)
    assert why in err and f"registry.toml:{line}" in err


def test_hash_mask_without_key_refuses_to_start(
    scen: LocalFederation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDSQL_HASH_KEY", raising=False)
    toml = tmp_path / "tax.toml"
    toml.write_text(
        (scen.work / "tax.toml")
        .read_text()
        .replace('hash_key_file = "federation.key"\n', "")
        .replace('path = "tax.duckdb"', f'path = "{scen.work / "tax.duckdb"}"')
    )
    assert "needs the federation's secret key" in start_error(toml)
