"""The connector node through its real gRPC service: refusals, catalog, health, streaming."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import start_error

from fedsql.channels import open_channel
from fedsql.config import load_federation
from fedsql.local import LocalFederation, start_connector, write_agency_toml
from fedsql.v1 import connector_pb2 as pb
from fedsql.wire import catalog_from_proto, ipc_chunks_to_reader, key_set_to_proto


def _execute(stub, sql: str) -> pa.Table:  # type: ignore[no-untyped-def]
    req = pb.ExecuteRequest(
        query_id="t", sql=sql, principal=pb.Principal(user="tester", roles=["analyst"])
    )
    msgs = list(stub.Execute(req, timeout=30))  # the whole call, stats message included
    assert msgs[-1].HasField("stats")
    return ipc_chunks_to_reader(m.arrow_ipc for m in msgs if m.arrow_ipc).read_all()


REFUSED = {
    "two statements": "SELECT 1 FROM orders; SELECT 2 FROM orders",
    "insert": "INSERT INTO orders SELECT * FROM orders",
    "update": "UPDATE orders SET o_comment = 'x'",
    "delete": "DELETE FROM orders",
    "create": "CREATE TABLE x AS SELECT * FROM orders",
    "drop": "DROP TABLE orders",
    "alter": "ALTER TABLE orders ADD COLUMN x INT",
    "copy": "COPY orders TO '/tmp/fedsql-leak.csv'",
    "attach": "ATTACH '/tmp/other.duckdb' AS other",
    "detach": "DETACH other",
    "pragma": "PRAGMA database_list",
    "set": "SET threads = 1",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_csv_auto": "SELECT * FROM read_csv_auto('/etc/passwd')",
    "read_parquet": "SELECT * FROM read_parquet('/tmp/x.parquet')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "read_text in a subquery": "SELECT (SELECT content FROM read_text('/etc/hosts')) FROM orders",
    "glob": "SELECT * FROM glob('/etc/*')",
    "file as table": "SELECT * FROM '/etc/passwd'",
    "unexposed catalog": "SELECT * FROM duckdb_settings()",
    "information_schema": "SELECT * FROM information_schema.tables",
    "query()": "SELECT * FROM query('SELECT 1')",
    "getenv": "SELECT getenv('HOME') FROM orders",
    "current_setting": "SELECT current_setting('threads') FROM orders",
    "unexposed table": "SELECT * FROM customer",
    "other catalog": "SELECT * FROM system.main.duckdb_tables",
    "select into": "SELECT * INTO t2 FROM orders",
    "describe": "DESCRIBE orders",
    "syntax error": "SELEC * FROM orders",
    "empty": "",
}


@pytest.mark.parametrize("sql", REFUSED.values(), ids=REFUSED.keys())
def test_connector_refuses(sql: str, trade_stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        _execute(trade_stub, sql)
    err = info.value
    assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)
    assert err.details(), "a refusal says why"


def test_refusal_messages_say_why(trade_stub) -> None:  # type: ignore[no-untyped-def]
    cases = {
        "SELECT * FROM read_csv('/etc/passwd')": "table function read_csv is not in the",
        "SELECT * FROM customer": "table customer is not exposed",
        "SELECT 1 FROM orders; SELECT 2 FROM orders": "exactly one statement",
        "DROP TABLE orders": "only a SELECT query is allowed, got DROP",
        "SELECT getenv('HOME') FROM orders": "function getenv is not in the fragment language",
    }
    for sql, why in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            _execute(trade_stub, sql)
        assert why in info.value.details(), (sql, info.value.details())


def test_connector_runs_a_select_and_streams_arrow(trade_stub) -> None:  # type: ignore[no-untyped-def]
    t = _execute(trade_stub, "SELECT o_orderkey, o_totalprice FROM orders ORDER BY o_orderkey")
    assert t.num_rows == 15000 and t.column_names == ["o_orderkey", "o_totalprice"]
    assert pa.types.is_decimal(t.schema.field("o_totalprice").type)
    assert t.column("o_orderkey").to_pylist()[:3] == [1, 2, 3]


def test_large_result_streams_in_many_messages(trade_stub) -> None:  # type: ignore[no-untyped-def]
    req = pb.ExecuteRequest(query_id="big", sql="SELECT * FROM lineitem")
    msgs = list(trade_stub.Execute(req, timeout=60))
    payloads = [m.arrow_ipc for m in msgs if m.arrow_ipc]
    assert msgs[-1].stats.rows == 60175
    assert msgs[-1].stats.bytes == sum(len(p) for p in payloads)
    t = ipc_chunks_to_reader(payloads).read_all()
    assert t.num_rows == 60175


def test_backend_error_is_invalid_argument(trade_stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        _execute(trade_stub, "SELECT no_such_column FROM orders")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no_such_column" in info.value.details()


def test_catalog_and_health(trade_stub, tpch_local: LocalFederation) -> None:  # type: ignore[no-untyped-def]
    cat = catalog_from_proto(trade_stub.GetCatalog(pb.GetCatalogRequest(), timeout=10))
    assert cat.connector == "trade" and cat.backend == "duckdb"
    names = {t.name: t for t in cat.tables}
    assert set(names) == {"orders", "lineitem"}
    assert names["lineitem"].row_count_estimate == 60175
    assert "l_shipdate" in names["lineitem"].arrow_schema.names
    _, raw = open_channel(load_federation(tpch_local.config_path).connector("trade"))
    with raw as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="fedsql.v1.Connector"), timeout=5
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_audit_log_has_one_line_per_fragment(tpch_local: LocalFederation, trade_stub) -> None:  # type: ignore[no-untyped-def]
    import json

    _execute(trade_stub, "SELECT count(*) AS n FROM orders")
    with pytest.raises(grpc.RpcError):
        _execute(trade_stub, "DROP TABLE orders")
    lines = [
        json.loads(x) for x in (tpch_local.work / "trade-audit.jsonl").read_text().splitlines()
    ]
    lines = [r for r in lines if "kind" not in r]  # fragment lines (not start, peer, ...)
    assert any(r["outcome"] == "ok" and "count(*)" in r["sql"] for r in lines)
    assert any(r["outcome"] == "refused" and r["sql"] == "DROP TABLE orders" for r in lines)
    assert all(r["user"] for r in lines if r["query_id"] == "t")


def _serve_fails(toml: Path) -> str:
    return start_error(toml)


def test_unknown_config_key_stops_the_node(tmp_path: Path, tpch_parquet: Path) -> None:
    toml = write_agency_toml(
        tmp_path / "a.toml",
        "a",
        "files",
        tpch_parquet,
        extra='\n[[grant]]\ntable = "orders"\nrole = "analyst"\n',
    )
    assert "unknown key(s) 'role'" in _serve_fails(toml)


def test_plaintext_needs_insecure(tmp_path: Path, tpch_parquet: Path) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text(
        f'[connector]\nname = "a"\nlisten = "127.0.0.1:0"\n\n'
        f'[backend]\nkind = "files"\npath = "{tpch_parquet}"\n'
    )
    assert "insecure = true" in _serve_fails(toml)


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    toml = write_agency_toml(tmp_path / "a.toml", "a", "duckdb", tmp_path / "nope.duckdb")
    assert "does not exist" in _serve_fails(toml)


def test_exposed_tables_restricts(tmp_path: Path, tpch_parquet: Path) -> None:
    toml = write_agency_toml(
        tmp_path / "a.toml", "a", "files", tpch_parquet, extra='tables = ["nation", "region"]\n'
    )
    c = start_connector(toml)
    try:
        with grpc.insecure_channel(c.address) as ch:
            from fedsql.v1 import connector_pb2_grpc as pb_grpc

            stub = pb_grpc.ConnectorStub(ch)
            cat = catalog_from_proto(stub.GetCatalog(pb.GetCatalogRequest(), timeout=10))
            assert sorted(t.name for t in cat.tables) == ["nation", "region"]
            with pytest.raises(grpc.RpcError) as info:
                _execute(stub, "SELECT * FROM lineitem")
            assert "not exposed" in info.value.details()
            # The files themselves are out of reach too, even by path.
            with pytest.raises(grpc.RpcError):
                _execute(stub, f"SELECT * FROM '{tpch_parquet / 'lineitem.parquet'}'")
            assert _execute(stub, "SELECT count(*) AS n FROM nation").column("n")[0].as_py() == 25
    finally:
        c.stop()


def test_sigterm_shuts_down_gracefully(tmp_path: Path, tpch_parquet: Path) -> None:
    toml = write_agency_toml(tmp_path / "a.toml", "a", "files", tpch_parquet)
    c = start_connector(toml)
    c.stop(timeout=15)
    assert c.proc.returncode == 0
    assert "shutting down" in c.log_path.read_text()


def test_cli_serve_bad_config_exits_nonzero(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("[connector\n")
    r = subprocess.run(
        [sys.executable, "-m", "fedsql", "connector", "serve", str(toml)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "not valid TOML" in r.stderr and "Traceback" not in r.stderr


def test_key_sets_ship_join_keys_as_arrow(trade_stub) -> None:  # type: ignore[no-untyped-def]
    from fedsql.wire import key_set_to_proto

    keys = key_set_to_proto("__fedsql_keys0", pa.array([1, 2, 3, 999_999_999], pa.int64()))
    sql = (
        "SELECT o_orderkey FROM orders WHERE EXISTS "
        "(SELECT 1 FROM __fedsql_keys0 WHERE k = o_orderkey) ORDER BY 1"
    )
    req = pb.ExecuteRequest(query_id="keys", sql=sql, key_sets=[keys])
    msgs = list(trade_stub.Execute(req, timeout=30))
    t = ipc_chunks_to_reader(m.arrow_ipc for m in msgs if m.arrow_ipc).read_all()
    assert t.column(0).to_pylist() == [1, 2, 3]
    bad = [
        pb.ExecuteRequest(sql=sql),  # not sent: an unknown table
        pb.ExecuteRequest(sql=sql.replace("keys0", "keys1"), key_sets=[keys]),
        pb.ExecuteRequest(
            sql="SELECT * FROM evil", key_sets=[pb.KeySet(name="evil", arrow_ipc=keys.arrow_ipc)]
        ),
        pb.ExecuteRequest(
            sql=sql, key_sets=[pb.KeySet(name="__fedsql_keys0", arrow_ipc=b"not arrow")]
        ),
    ]
    for r in bad:
        with pytest.raises(grpc.RpcError) as info:
            list(trade_stub.Execute(r, timeout=30))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_compressed_ipc_round_trips(trade_stub, codec: str) -> None:  # type: ignore[no-untyped-def]
    sql = "SELECT * FROM lineitem ORDER BY l_orderkey, l_linenumber"
    plain = list(trade_stub.Execute(pb.ExecuteRequest(sql=sql), timeout=60))
    packed = list(trade_stub.Execute(pb.ExecuteRequest(sql=sql, compression=codec), timeout=60))
    a = ipc_chunks_to_reader(m.arrow_ipc for m in plain if m.arrow_ipc).read_all()
    b = ipc_chunks_to_reader(m.arrow_ipc for m in packed if m.arrow_ipc).read_all()
    assert a.equals(b)
    assert packed[-1].stats.bytes < plain[-1].stats.bytes / 2
    with pytest.raises(grpc.RpcError) as info:
        list(trade_stub.Execute(pb.ExecuteRequest(sql=sql, compression="gzip"), timeout=60))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "bad", [{"compression": "gzip"}, {"fragment_language": "9.9"}], ids=["codec", "language"]
)
def test_a_refused_request_still_audits_its_key_sets(  # type: ignore[no-untyped-def]
    trade_stub, tpch_local: LocalFederation, bad: dict[str, str]
) -> None:
    """A request refused for its compression or language: the line says what it
    shipped (the key sets' sizes), like a refusal by the guard."""
    qid = f"refused-keys-{next(iter(bad))}"
    keys = key_set_to_proto("__fedsql_keys0", pa.array([1, 2, 3], pa.int64()))
    req = pb.ExecuteRequest(
        query_id=qid, sql="SELECT o_orderkey FROM orders", key_sets=[keys], **bad
    )
    with pytest.raises(grpc.RpcError) as info:
        list(trade_stub.Execute(req, timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    audit = (tpch_local.work / "trade-audit.jsonl").read_text().splitlines()
    (line,) = [r for r in map(json.loads, audit) if r.get("query_id") == qid]
    assert line["outcome"] == "refused" and line["key_sets"] == {"__fedsql_keys0": 3}, line
