"""Trust at the edges (issue 17), against a real connector process over mutual TLS:
replay stores per coordinator, bounded and rate-limited refusal audit lines,
status/catalog/cancel for allowed coordinators only, certificate validity and
revocation checked per request, coordinators following a renewed certificate,
and certificates that name one thing."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest

from fedsql import certs, channels, cli
from fedsql.channels import open_channel
from fedsql.config import ClientTLS, ConnectorRef
from fedsql.errors import ConfigError
from fedsql.local import LocalConnector, start_connector
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc

AGENCY = "agency"
ALLOWED = ("alpha", "beta", "brief", "revokee")
REPLAY_BOUND = 150  # replay_entries_per_coordinator of the test connector
MIB = 1 << 20


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    certs.init_ca(d / "ca")
    certs.issue(d / "ca", "connector", AGENCY, d)
    for name in (*ALLOWED, "stranger", "outsider"):
        certs.issue(d / "ca", "coordinator", name, d)
    certs.write_crl(d / "ca")  # empty: nothing revoked yet
    return d


def _db(path: Path) -> Path:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(5)")
    con.close()
    return path


@pytest.fixture(scope="module")
def node(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalConnector]:
    work = tmp_path_factory.mktemp("node")
    toml = work / "agency.toml"
    toml.write_text(
        f"""[connector]
name = "{AGENCY}"
listen = "127.0.0.1:0"
audit_log = "audit.jsonl"
allowed_coordinators = {json.dumps(list(ALLOWED))}
replay_entries_per_coordinator = {REPLAY_BOUND}

[connector.tls]
cert = "{pki / f"{AGENCY}.crt"}"
key = "{pki / f"{AGENCY}.key"}"
client_ca = "{pki / "ca" / "ca.crt"}"
crl = "{pki / "ca" / "ca.crl"}"

[backend]
kind = "duckdb"
path = "{_db(work / "agency.duckdb")}"
"""
    )
    c = start_connector(toml)
    yield c
    c.stop()


def _channel(pki: Path, node: LocalConnector, who: str) -> tuple[grpc.Channel, grpc.Channel]:
    tls = ClientTLS(pki / "ca" / "ca.crt", pki / f"{who}.crt", pki / f"{who}.key")
    return open_channel(ConnectorRef(AGENCY, node.address, False, tls))


def _catalog(stub: pb_grpc.ConnectorStub) -> pb.Catalog:
    req = pb.GetCatalogRequest(principal=pb.Principal(user="alice", roles=["analyst"]))
    return stub.GetCatalog(req, timeout=10)


def _code(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _audit(node: LocalConnector) -> list[dict[str, Any]]:
    path = node.log_path.parent / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# -- 1. replay protection per coordinator ---------------------------------------------


def test_a_flood_of_signed_calls_from_one_coordinator_leaves_the_others_alone(
    pki: Path, node: LocalConnector
) -> None:
    ch, raw = _channel(pki, node, "alpha")
    other, other_raw = _channel(pki, node, "beta")
    with raw, other_raw:
        alpha, beta = pb_grpc.ConnectorStub(ch), pb_grpc.ConnectorStub(other)
        exhausted: list[grpc.RpcError] = []
        for _ in range(REPLAY_BOUND + 100):
            try:
                _catalog(alpha)
            except grpc.RpcError as e:
                exhausted.append(e)
        assert len(exhausted) == 100, [e.details() for e in exhausted[:3]]
        assert {e.code() for e in exhausted} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        details = str(exhausted[0].details())
        assert "coordinator 'alpha'" in details and "replay_entries_per_coordinator" in details
        # The other coordinator is unaffected, catalog and fragments alike.
        for _ in range(20):
            assert [t.name for t in _catalog(beta).tables] == ["people"]
        req = pb.ExecuteRequest(
            query_id="q-beta",
            sql="SELECT count(*) AS n FROM people",
            principal=pb.Principal(user="bob"),
        )
        assert any(m.arrow_ipc for m in beta.Execute(req, timeout=10))


# -- 2. refused requests: bounded, named as claims, rate-limited ----------------------


def test_a_wrong_name_coordinators_huge_requests_leave_bounded_unauthenticated_lines(
    pki: Path, node: LocalConnector
) -> None:
    sql = "SELECT '" + "x" * MIB + "' AS s"
    roles = ["r" * 1000] * 500
    flood = 45
    ch, raw = _channel(pki, node, "stranger")
    t0 = time.monotonic()
    with raw:
        stub = pb_grpc.ConnectorStub(ch)
        for i in range(flood):
            req = pb.ExecuteRequest(
                # (evidence.py echoes the query id into a trailer; huge ones overflow it)
                query_id=f"flood-{i}-" + "q" * 300,
                sql=sql,
                principal=pb.Principal(user="u" * 100_000, roles=roles, purpose="p" * 300_000),
            )
            err = _code(lambda req=req: list(stub.Execute(req, timeout=20)))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + 15
    while True:
        recs = [r for r in _audit(node) if r.get("coordinator") == "stranger"]
        lines = [r for r in recs if r.get("rpc") == "Execute"]
        summaries = [r for r in recs if r.get("kind") == "refusals"]
        if len(lines) + sum(r["refused_more"] for r in summaries) >= flood:
            break
        assert time.monotonic() < deadline, "no summary line for the refusals left out"
        time.sleep(0.25)
    assert len(lines) + sum(r["refused_more"] for r in summaries) == flood
    # A burst of lines, then about one a second: not one fsync'ed line per request.
    assert len(lines) <= 20 + elapsed + 2, (len(lines), elapsed)
    assert lines[0]["query_id"].startswith("flood-0-")  # the first refusal is never dropped
    assert summaries[0]["summary"] == f"{summaries[0]['refused_more']} more refused from stranger"
    text = (node.log_path.parent / "audit.jsonl").read_text().splitlines()
    assert max(len(x) for x in text if '"stranger"' in x) < 80_000
    for r in lines:
        assert r["authenticated"] is False and r["outcome"] == "refused"
        assert "user" not in r and "roles" not in r and "purpose" not in r
        assert len(r["claimed_user"]) <= 256 and len(r["claimed_purpose"]) <= 1024
        assert len(r["claimed_roles"]) <= 32 and all(len(x) <= 128 for x in r["claimed_roles"])
        assert r["claims_truncated"] is True and r["claimed_roles_count"] == 500
        assert r["sql_truncated"] is True and r["sql_chars"] == len(sql)
        assert len(r["query_id"]) <= 128
        assert "coordinator 'stranger' is not allowed" in r["error"]


# -- 3. status, catalog and cancel for allowed coordinators only ----------------------


def test_status_catalog_and_cancel_need_an_allowed_coordinator(
    pki: Path, node: LocalConnector, tmp_path: Path
) -> None:
    ch, raw = _channel(pki, node, "outsider")
    with raw:
        stub = pb_grpc.ConnectorStub(ch)
        calls = {
            "GetStatus": lambda: stub.GetStatus(pb.GetStatusRequest(), timeout=10),
            "GetCatalog": lambda: _catalog(stub),
            "Cancel": lambda: stub.Cancel(pb.CancelRequest(query_id="q-x"), timeout=10),
        }
        for rpc, call in calls.items():
            err = _code(call)
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, rpc
            assert "coordinator 'outsider' is not allowed" in str(err.details()), rpc
    refused = {
        r["rpc"]
        for r in _audit(node)
        if r.get("coordinator") == "outsider" and r.get("outcome") == "refused"
    }
    assert refused == set(calls)
    ch, raw = _channel(pki, node, "beta")
    with raw:
        status = pb_grpc.ConnectorStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10)
        assert status.connector == AGENCY
    # A plaintext (insecure = true) development connector answers as before.
    toml = tmp_path / "dev.toml"
    toml.write_text(
        f'[connector]\nname = "dev"\nlisten = "127.0.0.1:0"\ninsecure = true\n\n'
        f'[backend]\nkind = "duckdb"\npath = "{_db(tmp_path / "dev.duckdb")}"\n'
    )
    dev = start_connector(toml)
    try:
        with grpc.insecure_channel(dev.address) as plain:
            stub = pb_grpc.ConnectorStub(plain)
            assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).connector == "dev"
            assert [t.name for t in _catalog(stub).tables] == ["people"]
            assert stub.Cancel(pb.CancelRequest(query_id="q"), timeout=10).cancelled == 0
    finally:
        dev.stop()


# -- 4. validity and revocation per request; coordinators follow renewals -------------


def test_an_expired_certificate_stops_working_on_an_open_channel_and_a_renewed_one_is_used(
    pki: Path, node: LocalConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channels, "RENEW_CHECK_SECONDS", 0.2)
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)
    certs.issue(pki / "ca", "coordinator", "brief", pki, not_after=ends)
    ch, raw = _channel(pki, node, "brief")
    with raw:
        stub = pb_grpc.ConnectorStub(ch)
        assert _catalog(stub).tables  # the handshake and the first call: still valid
        time.sleep(max(0.0, (ends - dt.datetime.now(dt.UTC)).total_seconds()) + 1.0)
        err = _code(lambda: _catalog(stub))  # the same connection, now past its validity
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "expired" in str(err.details())
        # A renewed certificate on disk is picked up by the same channel object.
        certs.issue(pki / "ca", "coordinator", "brief", pki, days=1)
        time.sleep(0.3)
        assert _catalog(stub).tables
        # A call running when the certificate is renewed again ends on its connection,
        # which is closed after it.
        req = pb.ExecuteRequest(
            query_id="q-brief", sql="SELECT id FROM people", principal=pb.Principal(user="b")
        )
        running = stub.Execute(req, timeout=10)
        certs.issue(pki / "ca", "coordinator", "brief", pki, days=2)
        time.sleep(0.3)
        assert _catalog(stub).tables
        pool = raw._pool  # type: ignore[attr-defined]
        assert len(pool._old) == 1  # the previous connection, kept for the running call
        assert [m for m in running if m.arrow_ipc]  # to its end
        deadline = time.monotonic() + 5
        while pool._old:
            assert time.monotonic() < deadline, "the previous connection was never closed"
            time.sleep(0.05)


def test_a_revoked_certificate_is_refused_once_the_crl_is_written(
    pki: Path, node: LocalConnector, capsys: pytest.CaptureFixture[str]
) -> None:
    ch, raw = _channel(pki, node, "revokee")
    other, other_raw = _channel(pki, node, "beta")
    with raw, other_raw:
        stub = pb_grpc.ConnectorStub(ch)
        assert _catalog(stub).tables
        ca = str(pki / "ca")
        assert cli.main(["certs", "revoke", "--ca", ca, str(pki / "revokee.crt")]) == 0
        assert "is now revoked" in capsys.readouterr().out
        deadline = time.monotonic() + 10  # the connector looks at the file every 2 s
        while True:
            try:
                _catalog(stub)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "revoked" in str(e.details())
                break
            assert time.monotonic() < deadline, "the revocation was never applied"
            time.sleep(0.2)
        assert _catalog(pb_grpc.ConnectorStub(other)).tables  # the others still work


def test_a_crl_not_signed_by_the_federation_ca_is_refused(tmp_path: Path) -> None:
    certs.init_ca(tmp_path / "ours")
    certs.init_ca(tmp_path / "theirs")
    crl = certs.write_crl(tmp_path / "theirs")
    ours = (tmp_path / "ours" / "ca.crt").read_bytes()
    with pytest.raises(ConfigError, match="not signed by the federation CA"):
        certs.load_crl(crl.read_bytes(), ours, "crl")
    mine = certs.write_crl(tmp_path / "ours")
    assert certs.load_crl(mine.read_bytes(), ours, "crl").serials == frozenset()


# -- 5. certificates that name one thing ---------------------------------------------


def test_certs_issue_refuses_wildcards_other_nodes_names_and_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca, out = str(tmp_path / "ca"), str(tmp_path / "out")
    assert cli.main(["certs", "init", ca]) == 0

    def issue(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = cli.main(["certs", "issue", "--ca", ca, *args, "--out", out])
        return code, capsys.readouterr().err

    assert issue("connector", "health", "--host", "health.gov.example")[0] == 0
    assert issue("coordinator", "stats")[0] == 0
    refused = {
        ("connector", "evil", "--host", "*.gov.example"): "wildcard",
        ("connector", "evil", "--host", "health"): "the name of connector 'health'",
        ("connector", "evil", "--host", "health.gov.example"): "a host of connector 'health'",
        ("connector", "evil", "--host", "stats"): "coordinator 'stats'",
        ("coordinator", "health"): "already the name of a connector",
        ("connector", "health.gov.example"): "a host of connector 'health'",
        ("connector", "evil", "--host", "localhost"): "--local",
        ("connector", "evil", "--host", "127.0.0.1"): "--local",
        ("connector", "evil", "--host", "::1"): "--local",
        ("connector", "evil", "--host", "db.localhost"): "--local",
    }
    for args, why in refused.items():
        code, err = issue(*args)
        assert code == 1 and why in err, (args, err)
    assert not (tmp_path / "out" / "evil.crt").exists()
    # Renewing a node keeps its name and hosts; a plain certificate names only its node.
    assert issue("connector", "health", "--host", "health.gov.example")[0] == 0
    assert issue("connector", "tax")[0] == 0
    assert "(tax)," in certs.describe(tmp_path / "out" / "tax.crt")
    # Local development asks for loopback names explicitly.
    assert issue("connector", "dev", "--local")[0] == 0
    assert "(dev, localhost, 127.0.0.1)" in certs.describe(tmp_path / "out" / "dev.crt")
    assert issue("connector", "dev2", "--local", "--host", "::1")[0] == 0
