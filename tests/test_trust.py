"""Trust between agencies, against a real connector process over mutual TLS:
certificates, coordinator identity, signed principals, grants, purpose, limits,
the hash-chained audit log, and secrets that never show."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pyarrow as pa
import pytest

import fedsql
from fedsql import certs, cli, reasons
from fedsql.channels import open_channel
from fedsql.config import ClientTLS, ConnectorRef, load_agency, load_federation
from fedsql.connectors.audit import AuditLog, seal, verify
from fedsql.errors import ConfigError, FragmentLimitExceeded, PurposeRequired
from fedsql.local import LocalConnector, start_connector
from fedsql.trust import Signer
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import ipc_chunks_to_reader, stamped

AGENCY = "trade"
PURPOSE = "tests of fedsql's trust model"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedsql", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation CA made with the CLI, and certificates for the nodes of the tests."""
    d = tmp_path_factory.mktemp("pki")
    ca = d / "ca"
    r = _cli("certs", "init", str(ca))
    assert r.returncode == 0, r.stderr
    assert "ca.key" in r.stdout and "BEGIN" not in r.stdout
    for kind, name in [("connector", AGENCY), ("coordinator", "coordinator")]:
        r = _cli("certs", "issue", "--ca", str(ca), kind, name, "--out", str(d))
        assert r.returncode == 0, r.stderr
        assert "BEGIN" not in r.stdout
    # A coordinator with a good certificate that the connector does not allow.
    certs.issue(ca, "coordinator", "stranger", d)
    # A certificate that expired yesterday, from the right CA.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    certs.issue(ca, "coordinator", "expired", d / "old", days=2, not_before=past)
    # A whole other federation.
    certs.init_ca(d / "other-ca")
    certs.issue(d / "other-ca", "coordinator", "coordinator", d / "other")
    assert (d / "coordinator.key").stat().st_mode & 0o777 == 0o600
    return d


@pytest.fixture(scope="module")
def secure(
    pki: Path, tpch_parquet: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalConnector]:
    """One connector with TLS, grants, a hash mask, required purpose and limits."""
    work = tmp_path_factory.mktemp("secure")
    (work / "federation.key").write_text("5ec2e7" * 10 + "\n")
    toml = work / "trade.toml"
    toml.write_text(
        f"""[connector]
name = "{AGENCY}"
listen = "127.0.0.1:0"
audit_log = "audit/trade-audit.jsonl"
hash_key_file = "federation.key"
allowed_coordinators = ["coordinator"]
require_purpose = true

[connector.tls]
cert = "{pki / (AGENCY + ".crt")}"
key = "{pki / (AGENCY + ".key")}"
client_ca = "{pki / "ca" / "ca.crt"}"

[backend]
kind = "files"
path = "{tpch_parquet}"
tables = ["nation", "region", "orders", "lineitem"]

[limits]
max_rows = 5000
max_bytes = 400000
max_seconds = 1.5

[[mask]]
table = "nation"
column = "n_comment"
rule = "hash"

[[grant]]
table = "nation"
roles = ["analyst"]

[[grant]]
table = "region"
users = ["bob"]

[[grant]]
table = "orders"
roles = ["analyst"]

[[grant]]
table = "lineitem"
roles = ["analyst"]
"""
    )
    c = start_connector(toml)
    yield c
    c.stop()


def _ref(pki: Path, address: str, name: str = "coordinator", **kw: object) -> ConnectorRef:
    tls = ClientTLS(pki / "ca" / "ca.crt", pki / f"{name}.crt", pki / f"{name}.key")
    return ConnectorRef(AGENCY, address, False, replace(tls, **kw))  # type: ignore[arg-type]


def _request(sql: str, user: str = "alice", roles: tuple[str, ...] = ("analyst",), **kw: str):  # type: ignore[no-untyped-def]
    purpose = kw.get("purpose", PURPOSE)
    return pb.ExecuteRequest(
        query_id=kw.get("query_id", "q" + os.urandom(4).hex()),
        sql=sql,
        principal=pb.Principal(user=user, roles=list(roles), purpose=purpose),
    )


def _run(stub: pb_grpc.ConnectorStub, req: pb.ExecuteRequest) -> pa.Table:
    msgs = list(stub.Execute(req, timeout=30))
    return ipc_chunks_to_reader(m.arrow_ipc for m in msgs if m.arrow_ipc).read_all()


@pytest.fixture(scope="module")
def stub(pki: Path, secure: LocalConnector) -> Iterator[pb_grpc.ConnectorStub]:
    """The allowed coordinator's client: its certificate, principals signed."""
    ch, raw = open_channel(_ref(pki, secure.address))
    with raw:
        yield pb_grpc.ConnectorStub(ch)


@pytest.fixture(scope="module")
def unsigned(pki: Path, secure: LocalConnector) -> Iterator[pb_grpc.ConnectorStub]:
    """The allowed coordinator's TLS connection, without its signing step."""
    _, raw = open_channel(_ref(pki, secure.address))
    with raw:
        yield pb_grpc.ConnectorStub(raw)


def _refused(stub: pb_grpc.ConnectorStub, req: pb.ExecuteRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _run(stub, req)
    return info.value


# -- mutual TLS --------------------------------------------------------------


def test_allowed_coordinator_gets_data(stub: pb_grpc.ConnectorStub) -> None:
    t = _run(stub, _request("SELECT n_name, n_comment FROM nation ORDER BY n_nationkey"))
    assert t.num_rows == 25
    assert all(len(v) == 64 for v in t.column("n_comment").to_pylist())  # hashed at the source


def _handshake_fails(
    address: str, creds: grpc.ChannelCredentials, server_name: str = AGENCY
) -> str:
    opts = [("grpc.ssl_target_name_override", server_name)]
    with (
        grpc.secure_channel(address, creds, options=opts) as ch,
        pytest.raises(grpc.RpcError) as info,
    ):
        list(pb_grpc.ConnectorStub(ch).Execute(_request("SELECT 1 AS x"), timeout=10))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    return str(info.value.details())


def test_client_without_certificate_is_refused(pki: Path, secure: LocalConnector) -> None:
    ca = (pki / "ca" / "ca.crt").read_bytes()
    _handshake_fails(secure.address, grpc.ssl_channel_credentials(root_certificates=ca))


@pytest.mark.parametrize("who", ["other", "old"], ids=["another-ca", "expired"])
def test_certificate_from_another_ca_or_expired_is_refused(
    who: str, pki: Path, secure: LocalConnector
) -> None:
    name = "coordinator" if who == "other" else "expired"
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca" / "ca.crt").read_bytes(),
        private_key=(pki / who / f"{name}.key").read_bytes(),
        certificate_chain=(pki / who / f"{name}.crt").read_bytes(),
    )
    _handshake_fails(secure.address, creds)


def test_plaintext_to_a_tls_connector_fails(secure: LocalConnector) -> None:
    with grpc.insecure_channel(secure.address) as ch, pytest.raises(grpc.RpcError) as info:
        list(pb_grpc.ConnectorStub(ch).Execute(_request("SELECT 1 AS x"), timeout=10))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_coordinator_not_in_allowed_list_is_refused(pki: Path, secure: LocalConnector) -> None:
    ch, raw = open_channel(_ref(pki, secure.address, name="stranger"))
    with raw:
        err = _refused(pb_grpc.ConnectorStub(ch), _request("SELECT n_name FROM nation"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "coordinator 'stranger' is not allowed" in str(err.details())


def test_a_connector_certificate_cannot_act_as_coordinator(
    pki: Path, secure: LocalConnector
) -> None:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca" / "ca.crt").read_bytes(),
        private_key=(pki / f"{AGENCY}.key").read_bytes(),
        certificate_chain=(pki / f"{AGENCY}.crt").read_bytes(),
    )
    opts = [("grpc.ssl_target_name_override", AGENCY)]
    with (
        grpc.secure_channel(secure.address, creds, options=opts) as ch,
        pytest.raises(grpc.RpcError) as info,
    ):
        list(pb_grpc.ConnectorStub(ch).Execute(_request("SELECT 1 AS x"), timeout=10))
    # Refused in the handshake (no clientAuth usage) or, failing that, by the gate.
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED)


def test_coordinator_checks_it_talks_to_the_named_agency(pki: Path, secure: LocalConnector) -> None:
    """A connector whose certificate names another agency is not trusted as this one."""
    ref = replace(_ref(pki, secure.address), name="registry")  # trade's address
    ch, raw = open_channel(ref)
    with raw, pytest.raises(grpc.RpcError) as info:
        _run(pb_grpc.ConnectorStub(ch), _request("SELECT 1 AS x"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # Nor under any other name it might carry ("localhost" used to be in every one).
    with pytest.raises(ConfigError, match="must name the agency"):
        open_channel(_ref(pki, secure.address, server_name="localhost"))


# -- signed principals -------------------------------------------------------


def test_unsigned_principal_is_refused(unsigned: pb_grpc.ConnectorStub) -> None:
    err = _refused(unsigned, _request("SELECT n_name FROM nation", user="root", roles=("auditor",)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not signed" in str(err.details())


def _signed(req: pb.ExecuteRequest, pki: Path, key: str = "coordinator", **kw: object):  # type: ignore[no-untyped-def]
    signer = Signer(pki / f"{key}.key", "test")
    issued = int(kw.get("issued", time.time() * 1000))  # type: ignore[call-overload]
    return stamped(req, str(kw.get("connector", AGENCY)), signer.sign, issued, os.urandom(16))


def test_modified_principal_is_refused(unsigned: pb_grpc.ConnectorStub, pki: Path) -> None:
    req = _signed(_request("SELECT n_name FROM nation"), pki)
    assert _run(unsigned, req).num_rows == 25  # the genuine request, sent by hand, works
    for change in ("user", "roles", "purpose", "sql"):
        forged = _signed(_request("SELECT n_name FROM nation"), pki)
        if change == "user":
            forged.principal.user = "bob"
        elif change == "roles":
            forged.principal.roles.append("auditor")
        elif change == "purpose":
            forged.principal.purpose = "something else"
        else:
            forged.sql = "SELECT n_comment FROM nation"
        err = _refused(unsigned, forged)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, change
        assert "does not verify" in str(err.details())


def test_replayed_stale_or_misdirected_principal_is_refused(
    unsigned: pb_grpc.ConnectorStub, pki: Path
) -> None:
    req = _signed(_request("SELECT n_name FROM nation"), pki)
    _run(unsigned, req)
    assert "replay" in str(_refused(unsigned, req).details())
    old = _signed(_request("SELECT n_name FROM nation"), pki, issued=(time.time() - 600) * 1000)
    assert "s old" in str(_refused(unsigned, old).details())
    other = _signed(_request("SELECT n_name FROM nation"), pki, connector="registry")
    assert "does not verify" in str(_refused(unsigned, other).details())
    # Signed with another coordinator's key, sent over the allowed coordinator's connection.
    wrong = _signed(_request("SELECT n_name FROM nation"), pki, key="stranger")
    assert "does not verify" in str(_refused(unsigned, wrong).details())


# -- grants and purpose ------------------------------------------------------


def test_grants_restrict_tables_per_user_and_role(stub: pb_grpc.ConnectorStub) -> None:
    err = _refused(stub, _request("SELECT r_name FROM region"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "user 'alice' (roles: analyst) may not query table region" in str(err.details())
    assert _run(stub, _request("SELECT r_name FROM region", user="bob", roles=())).num_rows == 5
    err = _refused(stub, _request("SELECT n_name FROM nation", user="bob", roles=()))
    assert "may not query table nation" in str(err.details())


def test_purpose_is_required_when_the_connector_says_so(stub: pb_grpc.ConnectorStub) -> None:
    err = _refused(stub, _request("SELECT n_name FROM nation", purpose=""))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "requires a purpose" in str(err.details())
    info = reasons.read(err)  # programs read why from ErrorInfo, never from the text
    assert info is not None and info.reason == reasons.PURPOSE_REQUIRED


def test_federation_over_tls_with_purpose(
    pki: Path, secure: LocalConnector, tmp_path: Path
) -> None:
    cfg = tmp_path / "federation.toml"
    cfg.write_text(
        f"""[[connector]]
name = "{AGENCY}"
address = "{secure.address}"

[coordinator.tls]
ca = "{pki / "ca" / "ca.crt"}"
cert = "{pki / "coordinator.crt"}"
key = "{pki / "coordinator.key"}"

[user.alice]
roles = ["analyst"]
"""
    )
    sql = "SELECT count(*) AS n FROM orders JOIN nation ON o_custkey % 25 = n_nationkey"
    with fedsql.connect(cfg, user="alice", purpose="monthly statistics") as fed:
        assert fed.sql(sql).column(0)[0].as_py() == 15000
    with fedsql.connect(cfg, user="alice") as fed, pytest.raises(PurposeRequired) as info:
        fed.sql(sql)
    assert "requires a purpose" in str(info.value)
    assert info.value.reason == reasons.PURPOSE_REQUIRED and "x-fedsql-purpose" in str(info.value)
    r = _cli("-vv", "query", "-c", str(cfg), "--user", "alice", "--purpose", "cli check", sql)
    assert r.returncode == 0, r.stderr
    assert "15000" in r.stdout
    audit = (secure.log_path.parent / "audit" / "trade-audit.jsonl").read_text()
    assert '"purpose":"cli check"' in audit and '"purpose":"monthly statistics"' in audit


# -- limits and errors -------------------------------------------------------


def test_limits_end_the_fragment_and_the_connector_stays_healthy(
    stub: pb_grpc.ConnectorStub,
) -> None:
    cases = [
        ("SELECT o_orderkey FROM orders", grpc.StatusCode.RESOURCE_EXHAUSTED, "max_rows = 5000"),
        (
            "SELECT o_comment, o_clerk, o_orderpriority FROM orders LIMIT 4900",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "max_bytes = 400000",
        ),
        (
            "SELECT count(*) FROM lineitem a, lineitem b "
            "WHERE hash(a.l_comment || b.l_comment) % 7 = 1",
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "max_seconds = 1.5",
        ),
    ]
    for sql, code, what in cases:
        t0 = time.monotonic()
        err = _refused(stub, _request(sql))
        assert err.code() == code, (sql, err.details())
        assert what in str(err.details()) and "[limits] of connector 'trade'" in str(err.details())
        assert time.monotonic() - t0 < 15
        # Still answering, right away.
        assert (
            _run(stub, _request("SELECT count(*) AS n FROM orders")).column(0)[0].as_py() == 15000
        )


def test_limit_error_reaches_the_analyst(pki: Path, secure: LocalConnector, tmp_path: Path) -> None:
    cfg = tmp_path / "federation.toml"
    cfg.write_text(
        f'[[connector]]\nname = "{AGENCY}"\naddress = "{secure.address}"\n'
        f'[connector.tls]\nca = "{pki / "ca" / "ca.crt"}"\ncert = "{pki / "coordinator.crt"}"\n'
        f'key = "{pki / "coordinator.key"}"\n\n[user.alice]\nroles = ["analyst"]\n'
    )
    with (
        fedsql.connect(cfg, user="alice", purpose=PURPOSE) as fed,
        pytest.raises(FragmentLimitExceeded) as info,
    ):
        fed.sql("SELECT * FROM orders")
    assert "agency 'trade'" in str(info.value) and "max_rows" in str(info.value)


def test_errors_sent_back_carry_no_data_or_paths(
    stub: pb_grpc.ConnectorStub, tpch_parquet: Path
) -> None:
    err = _refused(stub, _request("SELECT CAST(o_orderpriority AS INTEGER) FROM orders"))
    details = str(err.details())
    assert "URGENT" not in details and "HIGH" not in details and "…" in details
    assert str(tpch_parquet) not in details


# -- the audit log -----------------------------------------------------------


def _audit_path(secure: LocalConnector) -> Path:
    return secure.log_path.parent / "audit" / "trade-audit.jsonl"


def test_audit_has_every_executed_and_refused_fragment(
    stub: pb_grpc.ConnectorStub, unsigned: pb_grpc.ConnectorStub, secure: LocalConnector
) -> None:
    ok = _request("SELECT n_name, n_comment FROM nation WHERE n_regionkey = 1")
    _run(stub, ok)
    denied = _request("SELECT r_name FROM region", query_id="q-denied")
    _refused(stub, denied)
    bad = _request("SELECT * FROM read_csv('/etc/passwd')", query_id="q-bad")
    _refused(stub, bad)
    forged = _request("SELECT n_name FROM nation", user="eve", query_id="q-forged")
    _refused(unsigned, forged)
    lines = [json.loads(x) for x in _audit_path(secure).read_text().splitlines()]
    # start, checkpoint and peer-certificate lines carry a kind; fragment lines do not
    recs = {x["query_id"]: x for x in lines if "kind" not in x and "query_id" in x}
    assert lines[0]["kind"] == "start" and "BEGIN CERTIFICATE" in lines[0]["cert"]
    r = recs[ok.query_id]
    assert r["outcome"] == "ok" and r["rows"] == 5 and r["bytes"] > 0
    assert r["coordinator"] == "coordinator" and r["authenticated"] is True
    assert (r["user"], r["roles"], r["purpose"]) == ("alice", ["analyst"], PURPOSE)
    assert r["tables"] == ["nation"]
    assert r["columns"] == ["nation.n_comment", "nation.n_name", "nation.n_regionkey"]
    assert r["masks"] == ["nation.n_comment:hash"] and r["sql"] == ok.sql
    assert {"time", "prev", "seq", "hash", "seconds", "signer", "sig"} <= r.keys()
    # the coordinator's signed principal, kept as evidence against it
    assert {"nonce", "issued_unix_ms", "principal_sig", "coordinator_cert"} <= r.keys()
    assert recs["q-denied"]["outcome"] == "refused" and "region" in recs["q-denied"]["error"]
    assert recs["q-bad"]["outcome"] == "refused"
    forged_rec = recs["q-forged"]  # what an unauthenticated request claims, named so
    assert forged_rec["outcome"] == "refused" and forged_rec["claimed_user"] == "eve"
    assert "user" not in forged_rec
    assert recs["q-forged"]["authenticated"] is False


def test_audit_verify_names_the_broken_line(
    stub: pb_grpc.ConnectorStub,
    secure: LocalConnector,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for _ in range(3):
        _run(stub, _request("SELECT count(*) FROM nation"))
    log = _audit_path(secure)
    r = _cli("audit", "verify", str(log))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "intact" in r.stdout
    lines = log.read_text().splitlines()
    assert len(lines) >= 4
    i = next(n for n, x in enumerate(lines) if '"user":"alice"' in x and '"rows":' in x)

    def broken(new: list[str]) -> str:
        p = tmp_path / "copy.jsonl"
        p.write_text("\n".join(new) + "\n")
        capsys.readouterr()
        assert cli.main(["audit", "verify", str(p)]) == 1
        return capsys.readouterr().out

    edited = list(lines)
    edited[i] = (
        edited[i].replace('"user":"alice"', '"user":"mallory"', 1).replace('"rows":', '"rows":1', 1)
    )
    assert edited[i] != lines[i]
    assert f"chain broken at line {i + 1}" in broken(edited)
    assert "line 3" in broken(lines[:2] + lines[3:])  # deleted line 3
    assert "line 2" in broken([lines[0], lines[2], lines[1], *lines[3:]])  # swapped 2 and 3
    assert "line 1" in broken(lines[1:])  # the start removed
    # An editor who also recomputes the line's hash cannot sign it: the line itself
    # fails (without the node key it is unsigned in a signed log).
    rec = json.loads(edited[i])
    resealed = list(lines)
    resealed[i] = seal(rec, rec["prev"], rec["seq"])
    out = broken(resealed)
    assert f"chain broken at line {i + 1}" in out and "not signed" in out


def test_audit_chain_continues_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    log.write({"outcome": "ok", "query_id": "1"})
    log.close()
    log = AuditLog(path)  # a restarted connector
    log.write({"outcome": "refused", "query_id": "2"})
    log.close()
    v = verify(path)
    assert v.ok and v.lines == 2 and dict(v.outcomes) == {"ok": 1, "refused": 1}
    assert [json.loads(x)["seq"] for x in path.read_text().splitlines()] == [1, 2]


# -- secrets and configuration -----------------------------------------------


def test_secrets_never_appear_in_logs_audit_or_errors(
    pki: Path, secure: LocalConnector, stub: pb_grpc.ConnectorStub, tmp_path: Path
) -> None:
    _refused(stub, _request("SELECT CAST(n_name AS INTEGER) FROM nation"))
    cfg = tmp_path / "federation.toml"
    cfg.write_text(
        f'[[connector]]\nname = "{AGENCY}"\naddress = "{secure.address}"\n'
        f'[connector.tls]\nca = "{pki / "ca" / "ca.crt"}"\ncert = "{pki / "coordinator.crt"}"\n'
        f'key = "{pki / "coordinator.key"}"\n\n[user.alice]\nroles = ["analyst"]\n'
    )
    coordinator = _cli(
        "-vv", "query", "-c", str(cfg), "--user", "alice", "--purpose", "p",
        "SELECT CAST(n_name AS INTEGER) FROM nation",
    )  # fmt: skip
    assert coordinator.returncode == 1 and "ALGERIA" not in coordinator.stderr
    outputs = [
        coordinator.stdout + coordinator.stderr,
        secure.log_path.read_text(),
        _audit_path(secure).read_text(),
        _cli(
            "certs", "issue", "--ca", str(pki / "ca"), "coordinator", "x", "--out", str(pki / "x")
        ).stdout,
    ]
    secrets = ["5ec2e7" * 10]
    for key in ["coordinator.key", f"{AGENCY}.key", "ca/ca.key"]:
        body = (pki / key).read_text().splitlines()[1:-1]
        secrets += [line for line in body if len(line) > 20]
    for out in outputs:
        for s in secrets:
            assert s not in out


def test_config_requires_tls_or_insecure_and_allowed_coordinators(tmp_path: Path) -> None:
    base = '[backend]\nkind = "duckdb"\npath = "x.duckdb"\n'
    cases = {
        '[connector]\nname = "a"\nlisten = "127.0.0.1:1"\n': "[connector.tls]",
        '[connector]\nname = "a"\nlisten = "127.0.0.1:1"\n[connector.tls]\ncert = "c"\n'
        'key = "k"\nclient_ca = "ca"\n': "allowed_coordinators",
        '[connector]\nname = "a"\nlisten = "127.0.0.1:1"\ninsecure = true\n'
        'allowed_coordinators = ["c"]\n': "needs [connector.tls]",
        '[connector]\nname = "a"\nlisten = "127.0.0.1:1"\ninsecure = true\n'
        "[limits]\nmax_rows = 0\n": "positive",
        '[connector]\nname = "a"\nlisten = "127.0.0.1:1"\ninsecure = true\n'
        '[[grant]]\ntable = "t"\n': "name the roles and/or users",
    }
    for text, want in cases.items():
        p = tmp_path / "a.toml"
        p.write_text(text + base)
        with pytest.raises(ConfigError) as info:
            load_agency(p)
        assert want in str(info.value), text
    fed = tmp_path / "f.toml"
    fed.write_text('[[connector]]\nname = "a"\naddress = "127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match=r"\[connector.tls\] ca, cert, key"):
        load_federation(fed)


def test_plaintext_connector_warns_loudly(tmp_path: Path, tpch_parquet: Path) -> None:
    toml = tmp_path / "dev.toml"
    toml.write_text(
        f'[connector]\nname = "dev"\nlisten = "127.0.0.1:0"\ninsecure = true\n\n'
        f'[backend]\nkind = "files"\npath = "{tpch_parquet}"\ntables = ["region"]\n'
    )
    c = start_connector(toml)
    c.stop()
    text = c.log_path.read_text()
    assert "INSECURE" in text and "NOT authenticated" in text


def test_cancel_stops_a_running_fragment_only_for_its_coordinator(
    pki: Path, secure: LocalConnector, stub: pb_grpc.ConnectorStub
) -> None:
    slow = "SELECT count(*) FROM lineitem a, lineitem b WHERE hash(a.l_comment || b.l_comment) = 7"
    ch, raw = open_channel(_ref(pki, secure.address, name="stranger"))
    with raw, pytest.raises(grpc.RpcError) as info:
        pb_grpc.ConnectorStub(ch).Cancel(pb.CancelRequest(query_id="q-cancel"), timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    call = stub.Execute(_request(slow, query_id="q-cancel"), timeout=30)
    end = time.monotonic() + 1.0  # well before the connector's max_seconds
    while stub.Cancel(pb.CancelRequest(query_id="q-cancel"), timeout=5).cancelled == 0:
        assert time.monotonic() < end, "the fragment never showed up as running"
        time.sleep(0.02)
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    recs = [json.loads(x) for x in _audit_path(secure).read_text().splitlines()]
    assert [r["outcome"] for r in recs if r.get("query_id") == "q-cancel"] == ["cancelled"]


def test_readme_deploy_section_configs_load(tmp_path: Path) -> None:
    """The AGENCY.toml and FEDERATION.toml a new agency copies from the README are valid."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Deploy a connector") :]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    agency, federation = tmp_path / "agency.toml", tmp_path / "federation.toml"
    agency.write_text(blocks[0])
    cfg = load_agency(agency)
    assert cfg.tls is not None and cfg.allowed_coordinators == ("stats-office",)
    assert cfg.grants and cfg.limits.max_seconds == 300 and cfg.require_purpose
    federation.write_text(blocks[1] + '\n[[connector]]\nname = "health"\naddress = "h:1"\n')
    assert load_federation(federation).connector("health").tls is not None


def test_certs_show_names_role_and_expiry(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["certs", "show", str(pki / f"{AGENCY}.crt"), str(pki / "old/expired.crt")]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert "connector CN=trade (trade)," in out[0] and "days left" in out[0]  # no localhost
    assert "coordinator CN=expired" in out[1] and "EXPIRED" in out[1]


def test_audit_line_cut_short_by_a_crash_is_reported_not_glued(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    log.write({"outcome": "ok", "query_id": "1"})
    log.close()
    with path.open("ab") as f:
        f.write(b'{"outcome":"ok","query')  # the crash
    log = AuditLog(path)
    log.write({"outcome": "ok", "query_id": "3"})
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["query_id"] == "3"
    v = verify(path)
    assert not v.ok and v.broken_line == 2 and "not a JSON line" in v.reason
