"""Audit that holds up (issue 16): signed logs on both sides, receipts each side keeps
of the other, rotation, and the tools an auditor checks them with.

Two connector processes over mutual TLS (trade rotates its log every 4 KiB,
registry checkpoints every second) and an embedded coordinator with its own
audit log; then every attack on the logs, each named by ``fedsql audit verify``
or ``fedsql audit reconcile``."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import fedsql
from fedsql import certs, cli
from fedsql.audit import report
from fedsql.audit.chain import ChainWriter, Rotation, body_hash, canonical, seal
from fedsql.audit.coordinator import Call
from fedsql.audit.receipts import Expected, Receipt, check, sign
from fedsql.audit.signing import Authority, KeyFiles, NodeKey, load_cert
from fedsql.audit.verify import chains, describe, verify, verify_chain
from fedsql.channels import open_channel
from fedsql.config import load_federation
from fedsql.connectors.audit import AuditLog
from fedsql.errors import CatalogError, ConfigError, FragmentRefused
from fedsql.local import LocalFederation, split_agencies, write_agency_toml
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import receipt_from_metadata

SPLIT = {"trade": ("orders", "lineitem"), "registry": ("customer", "nation", "region")}
JOIN = (
    "SELECT n_name, count(*) AS n FROM orders JOIN customer ON o_custkey = c_custkey "
    "JOIN nation ON c_nationkey = n_nationkey GROUP BY n_name ORDER BY n DESC LIMIT 3"
)
PURPOSE = "quarterly trade statistics"


@pytest.fixture(scope="module")
def local(
    tpch_parquet: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalFederation]:
    work = tmp_path_factory.mktemp("audit")
    data = split_agencies(tpch_parquet, work, "files", SPLIT)
    extra = {"trade": "audit_rotate_bytes = 4096", "registry": "audit_checkpoint_seconds = 1"}
    tomls = []
    for agency, (kind, where) in data.items():
        toml = write_agency_toml(work / f"{agency}.toml", agency, kind, where)
        text = toml.read_text().replace(
            f'audit_log = "{agency}-audit.jsonl"',
            f'audit_log = "logs/{agency}-audit.jsonl"\n{extra[agency]}',
        )
        toml.write_text(text)
        tomls.append(toml)
    users = '[user.alice]\nroles = ["analyst"]\n\n[user.bob]\nroles = ["analyst"]\n'
    with LocalFederation(work, tomls, users=users) as fedn:
        cfg = fedn.config_path
        cfg.write_text(
            '[coordinator]\naudit_log = "logs/coordinator-audit.jsonl"\n\n' + cfg.read_text()
        )
        yield fedn


@pytest.fixture(scope="module")
def fed(local: LocalFederation) -> Iterator[fedsql.Federation]:
    with fedsql.connect(local.config_path, user="alice", purpose=PURPOSE) as f:
        yield f


@pytest.fixture(scope="module")
def traffic(fed: fedsql.Federation, local: LocalFederation) -> dict[str, Any]:
    """Some queries (ok, refused at the agency, streamed) by alice, and one by bob."""
    out: dict[str, Any] = {}
    fed.sql(JOIN)
    out["join"] = fed.last_stats
    for _ in range(3):
        fed.sql("SELECT count(*) AS n FROM lineitem WHERE l_quantity > 10")
    with pytest.raises(FragmentRefused):
        fed.sql("SELECT CAST(c_name AS INTEGER) FROM customer")
    out["streamed"] = sum(b.num_rows for b in fed.stream("SELECT o_orderkey FROM orders"))
    with fedsql.connect(local.config_path, user="bob", purpose="audit sample") as bob:
        bob.sql("SELECT count(*) FROM region")
    time.sleep(1.5)  # registry's checkpoint interval passes
    return out


def logs(local: LocalFederation) -> Path:
    return local.work / "logs"


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def copy_logs(local: LocalFederation, dst: Path) -> Path:
    shutil.copytree(logs(local), dst)
    return dst


def verify_out(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["audit", "verify", *args])
    return code, capsys.readouterr().out


def reconcile_out(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["audit", "reconcile", *args])
    return code, capsys.readouterr().out


def resign(path: Path, key: NodeKey, change: Any = None) -> None:
    """Rewrite a log the way an insider with the node's key would: apply ``change``
    to each record (it may return None to drop it), then re-chain and re-sign all."""
    prev, seq, out = None, 0, []
    for rec in lines_of(path):
        had_cert = "cert" in rec
        rec = change(rec) if change else rec
        if rec is None:
            continue
        prev = rec["prev"] if prev is None else prev
        seq = rec["seq"] if seq == 0 else seq + 1
        line = seal(rec, prev, seq, key, with_cert=had_cert or seq == 1)
        prev = json.loads(line)["hash"]
        out.append(line)
    path.write_text("".join(x + "\n" for x in out))


def node_key(local: LocalFederation, name: str) -> NodeKey:
    assert local.pki is not None
    return NodeKey.load(local.pki / f"{name}.key", local.pki / f"{name}.crt", "test")


# -- receipts, end to end ------------------------------------------------------------


def test_every_fragment_has_a_checked_receipt_naming_its_line(
    traffic: dict[str, Any], local: LocalFederation
) -> None:
    stats = traffic["join"]
    assert {r.fragment.agency for r in stats.fragments} == {"trade", "registry"}
    for run in stats.fragments:
        r = run.receipt
        assert r is not None and r.algorithm == "ecdsa-sha256" and r.signature
        assert (r.connector, r.query_id, r.outcome) == (run.fragment.agency, stats.query_id, "ok")
        assert (r.rows, r.ipc_bytes) == (run.stats.rows, run.stats.bytes)
        assert r.user == "alice" and r.coordinator == "coordinator"
        # The line it names is in the agency's log, with that hash.
        files = next(c for c in chains([logs(local)]) if run.fragment.agency in c[0].name)
        line = next(x for f in files for x in lines_of(f) if x["seq"] == r.audit_seq)
        assert line["hash"] == r.audit_hash and line["query_id"] == stats.query_id
        # ... and keeps the coordinator's signed principal.
        assert line["nonce"] == r.nonce and line["principal_sig"] and line["purpose"] == PURPOSE


def test_the_coordinator_log_keeps_who_what_why_and_every_receipt(
    traffic: dict[str, Any], local: LocalFederation
) -> None:
    recs = lines_of(logs(local) / "coordinator-audit.jsonl")
    assert recs[0]["cert"].startswith("-----BEGIN CERTIFICATE")  # the signer, once
    assert all(r["sig"] and r["signer"] == recs[0]["signer"] for r in recs)
    q = next(r for r in recs if r.get("query_id") == traffic["join"].query_id)
    assert (q["kind"], q["user"], q["purpose"], q["outcome"]) == ("query", "alice", PURPOSE, "ok")
    assert q["sql"] == JOIN and q["agencies"] == ["registry", "trade"]
    assert q["tables"] == ["registry.customer", "registry.nation", "trade.orders"]
    assert all(f["receipt"]["sig"] and f["outcome"] == "ok" for f in q["fragments"])
    # The agencies' certificates are in the log, so receipts can be checked from it alone.
    peers = {r["name"] for r in recs if r.get("kind") == "peer"}
    assert {"trade", "registry"} <= peers
    # A refused fragment's receipt came in the call's trailers.
    refused = next(r for r in recs if r.get("outcome") == "refused")
    (call,) = refused["fragments"]
    assert call["outcome"] == "error" and call["receipt"]["audit_seq"] > 0
    assert "receipt_problem" not in call
    # A stream: its line before the first batch, its receipts when it ended.
    started = next(r for r in recs if r.get("outcome") == "streaming")
    end = next(r for r in recs if r.get("kind") == "query_end")
    assert end["query_id"] == started["query_id"] and end["outcome"] == "ok"
    assert end["rows"] == traffic["streamed"] and end["fragments"][0]["receipt"]["rows"] > 0


def test_replayed_or_foreign_or_altered_receipts_are_rejected(
    traffic: dict[str, Any], fed: fedsql.Federation, local: LocalFederation
) -> None:
    runs = {r.fragment.agency: r for r in traffic["join"].fragments}
    old = runs["trade"].receipt
    assert old is not None
    checker = fed._links["trade"].receipts
    call = Call("trade", "f0", nonce=old.nonce, sql_sha256=old.sql_sha256)
    assert checker.accept(call, old, old.query_id) == ""  # the genuine one
    # Replayed into a later query, or into a retry of the same one (new nonce):
    for qid, nonce in (("q-later", old.nonce), (old.query_id, "ab" * 16)):
        call = Call("trade", "f0", nonce=nonce, sql_sha256=old.sql_sha256)
        assert "replayed or misdirected" in checker.accept(call, old, qid)
    # Registry's receipt offered as trade's:
    other = runs["registry"].receipt
    assert other is not None
    call = Call("trade", "f0", nonce=other.nonce, sql_sha256=other.sql_sha256)
    assert "not by agency 'trade'" in checker.accept(call, other, other.query_id)
    # Altered numbers:
    from dataclasses import replace

    call = Call("trade", "f0", nonce=old.nonce, sql_sha256=old.sql_sha256)
    assert "does not verify" in checker.accept(call, replace(old, rows=1), old.query_id)
    # Signed by a key of another federation:
    other_ca = local.work / "other-ca"
    certs.init_ca(other_ca)
    certs.issue(other_ca, "connector", "trade", other_ca)
    forged = sign(old, NodeKey.load(other_ca / "trade.key", other_ca / "trade.crt", "test"))
    assert "not issued by the federation CA" in checker.accept(call, forged, old.query_id)


def test_receipts_add_little_to_each_response(traffic: dict[str, Any]) -> None:
    from fedsql.wire import receipt_to_proto

    for run in traffic["join"].fragments:
        assert run.receipt is not None
        assert len(receipt_to_proto(run.receipt).SerializeToString()) < 1200


# -- verify: intact logs and every tampering ------------------------------------------


def test_verify_intact_signed_logs_and_the_ca(
    traffic: dict[str, Any], local: LocalFederation, capsys: pytest.CaptureFixture[str]
) -> None:
    assert local.pki is not None
    code, out = verify_out(capsys, str(logs(local)), "--ca", str(local.pki / "ca.crt"))
    assert code == 0, out
    assert out.count(": intact,") == 3  # coordinator, registry, trade (rotated: one chain)
    assert out.count("signed: every line") == 3 and "issued by the federation CA" in out
    assert "last signed checkpoint: seq" in out
    # Trade rotated: several files, one chain, its first line continuing the old head.
    (trade,) = [c for c in chains([logs(local)]) if c[0].name.startswith("trade")]
    assert len(trade) >= 2 and trade[-1].name == "trade-audit.jsonl"
    first = lines_of(trade[-1])[0]
    assert first["kind"] == "rotate" and first["prev_file"] == trade[-2].name
    assert first["prev_head"] == lines_of(trade[-2])[-1]["hash"] and "cert" in first
    # Registry wrote a checkpoint while quiet; its node is running.
    reg = lines_of(logs(local) / "registry-audit.jsonl")
    assert any(r.get("kind") == "checkpoint" for r in reg)
    # Another federation's CA does not vouch for these signers.
    other = local.work / "another-ca"
    certs.init_ca(other)
    code, out = verify_out(capsys, str(logs(local)), "--ca", str(other / "ca.crt"))
    assert code == 1 and "not issued by the federation CA" in out


def test_verify_rotated_files_given_in_any_order(
    traffic: dict[str, Any], local: LocalFederation, tmp_path: Path
) -> None:
    (trade,) = [c for c in chains([logs(local)]) if c[0].name.startswith("trade")]
    v = verify_chain(chains(list(reversed(trade)))[0])
    assert v.ok and v.files == tuple(trade) and v.first_seq == 1
    # The newest file alone: intact, and it says what it continues.
    alone = verify(trade[-1])
    assert alone.ok and alone.continues == trade[-2].name
    # A middle file cut short: the next file no longer continues it.
    d = tmp_path / "cut"
    d.mkdir()
    for f in trade:
        shutil.copy(f, d / f.name)
    text = (d / trade[-2].name).read_text().splitlines()
    (d / trade[-2].name).write_text("\n".join(text[:-1]) + "\n")
    v = verify_chain(chains([d])[0])
    assert not v.ok and v.broken_file is not None and v.broken_file.name == trade[-1].name
    assert "was cut or changed" in v.reason


@pytest.fixture
def registry_log(traffic: dict[str, Any], local: LocalFederation, tmp_path: Path) -> Path:
    p = tmp_path / "registry-audit.jsonl"
    shutil.copy(logs(local) / "registry-audit.jsonl", p)
    return p


def _fragment_index(lines: list[str]) -> int:
    return next(i for i, x in enumerate(lines) if '"outcome":"ok"' in x and '"kind"' not in x)


def test_each_tampering_is_named(registry_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = registry_log.read_text().splitlines()
    i = _fragment_index(lines)

    def broken(new: list[str]) -> str:
        registry_log.write_text("\n".join(new) + "\n")
        code, out = verify_out(capsys, str(registry_log))
        assert code == 1, out
        return out

    edited = list(lines)
    edited[i] = edited[i].replace('"user":"alice"', '"user":"mallory"')
    out = broken(edited)
    assert f"chain broken at line {i + 1}" in out and "the line was edited" in out
    out = broken(lines[:i] + lines[i + 1 :])  # deleted
    assert f"chain broken at line {i + 1}" in out and "does not follow" in out
    out = broken([*lines[: i + 1], lines[i], *lines[i + 1 :]])  # inserted (a copy)
    assert f"chain broken at line {i + 2}" in out
    out = broken([*lines[:i], lines[i + 1], lines[i], *lines[i + 2 :]])  # reordered
    assert f"chain broken at line {i + 1}" in out
    # The whole chain rewritten with recomputed hashes, without the key: the
    # first changed line's signature fails.
    rewritten, prev = list(lines[:i]), json.loads(lines[i])["prev"]
    for n, x in enumerate(lines[i:]):
        r = json.loads(x)
        if n == 0:
            r["rows"] += 1
        r["prev"] = prev
        r["hash"] = body_hash(r)  # recomputed; the old signature kept
        rewritten.append(canonical(r))
        prev = r["hash"]
    out = broken(rewritten)
    assert f"chain broken at line {i + 1}" in out and "signature does not verify" in out


def test_a_rewritten_unsigned_chain_says_unsigned_and_fails_with_the_ca(
    registry_log: Path, local: LocalFederation, capsys: pytest.CaptureFixture[str]
) -> None:
    recs = lines_of(registry_log)
    prev, out = None, []
    for r in recs:
        prev = r["prev"] if prev is None else prev
        line = seal(r, prev, r["seq"])  # no key: the signatures and certificates go
        prev = json.loads(line)["hash"]
        out.append(line)
    registry_log.write_text("\n".join(out) + "\n")
    code, text = verify_out(capsys, str(registry_log))
    assert code == 0 and "UNSIGNED" in text
    assert local.pki is not None
    code, text = verify_out(capsys, str(registry_log), "--ca", str(local.pki / "ca.crt"))
    assert code == 1 and "chain broken at line 1" in text and "not signed" in text


def test_truncation_shows_in_the_last_checkpoint_and_the_receipts(
    traffic: dict[str, Any], local: LocalFederation, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    d = copy_logs(local, tmp_path / "logs")
    reg = d / "registry-audit.jsonl"
    lines = reg.read_text().splitlines()
    # Cut everything from the join's registry line on.
    seq = next(
        r.receipt.audit_seq for r in traffic["join"].fragments if r.fragment.agency == "registry"
    )
    reg.write_text("\n".join(lines[: seq - 1]) + "\n")
    v = verify(reg)
    assert v.ok and v.last_signed is not None and v.last_signed.seq == seq - 1
    later = dt.datetime.fromisoformat(v.last_time) + dt.timedelta(hours=2)
    text = "\n".join(describe(v, later))
    assert f"last signed checkpoint: seq {seq - 1}" in text
    assert "without a stop line" in text and "cut off" in text
    code, out = reconcile_out(capsys, str(d))
    assert code == 1 and "PROBLEM truncated" in out
    assert f"seq {seq}" in out and "lines were cut off" in out


def test_a_stolen_node_key_cannot_rewrite_what_the_coordinator_holds(
    traffic: dict[str, Any], local: LocalFederation, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    d = copy_logs(local, tmp_path / "logs")
    reg = d / "registry-audit.jsonl"
    seq = next(
        r.receipt.audit_seq for r in traffic["join"].fragments if r.fragment.agency == "registry"
    )

    def fewer_rows(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["seq"] == seq:
            rec["rows"] = 1
        return rec

    resign(reg, node_key(local, "registry"), fewer_rows)
    assert local.pki is not None
    ca = str(local.pki / "ca.crt")
    assert verify(reg, Authority.load(local.pki / "ca.crt")).ok  # the log alone looks fine
    code, out = reconcile_out(capsys, str(d), "--ca", ca)
    assert code == 1, out
    assert f"(seq {seq}) differs from the receipt" in out and "rows 1 (receipt:" in out
    assert "PROBLEM rewritten" in out  # every later line's history changed too


def test_a_changed_principal_does_not_verify_against_the_coordinator(
    traffic: dict[str, Any], local: LocalFederation, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The agency (with its own key) claims bob asked what alice asked."""
    d = copy_logs(local, tmp_path / "logs")
    (d / "coordinator-audit.jsonl").unlink()
    reg = d / "registry-audit.jsonl"
    seq = next(
        r.receipt.audit_seq for r in traffic["join"].fragments if r.fragment.agency == "registry"
    )

    def as_bob(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["seq"] == seq:
            rec["user"] = "bob"
        return rec

    resign(reg, node_key(local, "registry"), as_bob)
    code, out = reconcile_out(capsys, str(d))
    assert code == 1 and "PROBLEM forged principal" in out and f"(seq {seq})" in out


def test_reconcile_finds_a_fragment_the_coordinator_log_lacks(
    traffic: dict[str, Any], local: LocalFederation, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code, out = reconcile_out(capsys, str(logs(local)))
    assert code == 0, out
    assert "reconciled: both sides agree" in out
    # Someone uses the coordinator's certificate outside the coordinator (no line in
    # its log): the agency's line has no counterpart.
    ref = load_federation(local.config_path).connector("registry")
    ch, raw = open_channel(ref)
    with raw:
        req = pb.ExecuteRequest(
            query_id="q-bypass",
            sql="SELECT count(*) FROM nation",
            principal=pb.Principal(user="alice", roles=["analyst"], purpose="none of yours"),
        )
        list(pb_grpc.ConnectorStub(ch).Execute(req, timeout=10))
    with fedsql.connect(local.config_path, user="alice", purpose=PURPOSE) as f:
        f.sql("SELECT count(*) FROM region")  # the coordinator's log goes on after it
    code, out = reconcile_out(capsys, str(logs(local)))
    assert code == 1 and "PROBLEM dropped" in out and "q-bypass" in out
    # A query line removed from the coordinator's log breaks its chain.
    d = copy_logs(local, tmp_path / "logs")
    coord = d / "coordinator-audit.jsonl"
    kept = [x for x in coord.read_text().splitlines() if traffic["join"].query_id not in x]
    coord.write_text("\n".join(kept) + "\n")
    code, out = reconcile_out(capsys, str(d))
    assert code == 1 and "PROBLEM broken: coordinator-audit.jsonl line" in out


# -- keys, certificates, expiry ------------------------------------------------------


def _issue(
    pki: Path, name: str, key: Any, days: float = 30, start: dt.datetime | None = None
) -> NodeKey:
    """A connector certificate for ``key`` from the CA in ``pki`` (any key type)."""
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    start = start or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return NodeKey(key, cert)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    certs.init_ca(d)
    return d


@pytest.mark.parametrize(
    "kind", ["p256", "p384", "rsa2048-pss", "rsa2048-pkcs1v15", "rsa3072-pss", "ed25519"]
)
def test_every_supported_key_type_signs_lines_and_receipts(
    kind: str, pki: Path, tmp_path: Path
) -> None:
    key: Any = {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }.get(kind, lambda: rsa.generate_private_key(65537, int(kind[3:7])))()
    node = _issue(pki, "trade", key)
    if kind.endswith("pkcs1v15"):
        node = NodeKey(key, node.cert, rsa_padding="pkcs1v15")
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, node, name="trade")
    log.start()
    log.write({"time": "2099-01-01T00:00:00+00:00", "query_id": "x", "outcome": "ok"})
    log.close()
    v = verify(path, Authority.load(pki / "ca.crt"))
    assert not v.ok and "after certificate 'trade' expired" in v.reason  # 2099 is too late
    path.unlink()
    log = AuditLog(path, node, name="trade")
    log.start()
    sealed = log.write(
        {"time": dt.datetime.now(dt.UTC).isoformat(), "query_id": "y", "outcome": "ok"}
    )
    log.close()
    v = verify(path, Authority.load(pki / "ca.crt"))
    assert v.ok and v.signed and v.signers == ("trade",) and v.stopped, v.reason
    r = sign(
        Receipt("trade", "y", "00", "ok", 1, 2, sealed.seq, sealed.hash, int(time.time() * 1000),
                "coordinator", "alice", "ab" * 16),
        node,
    )  # fmt: skip
    assert r.algorithm == node.alg
    want = Expected("trade", "trade", "y", "00", "ab" * 16)
    assert check(r, want, Authority.load(pki / "ca.crt")) == ""


def test_keys_that_cannot_sign_are_refused(pki: Path) -> None:
    weak = rsa.generate_private_key(65537, 1024)
    with pytest.raises(ConfigError, match="too short"):
        _issue(pki, "trade", weak)
    with pytest.raises(ConfigError, match="P-256 or P-384"):
        _issue(pki, "trade", ec.generate_private_key(ec.SECP521R1()))


def test_a_line_signed_after_its_key_expired_is_named(pki: Path, tmp_path: Path) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    old = _issue(pki, "trade", ec.generate_private_key(ec.SECP256R1()), days=2, start=past)
    path = tmp_path / "a.jsonl"
    w = ChainWriter(path, old)
    w.write({"time": (past + dt.timedelta(days=1)).isoformat(), "query_id": "1", "outcome": "ok"})
    w.write({"time": dt.datetime.now(dt.UTC).isoformat(), "query_id": "2", "outcome": "ok"})
    w.close()
    v = verify(path)
    assert not v.ok and v.broken_line == 2 and "after certificate 'trade' expired" in v.reason
    assert v.last_signed is not None and v.last_signed.seq == 1


def test_a_new_key_is_recorded_where_it_starts(pki: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    for _ in range(2):  # a connector restarted with a renewed certificate
        log = AuditLog(
            path, _issue(pki, "trade", ec.generate_private_key(ec.SECP256R1())), name="trade"
        )
        log.start()
        log.write({"time": dt.datetime.now(dt.UTC).isoformat(), "query_id": "q", "outcome": "ok"})
        log.close()
    recs = lines_of(path)
    starts = [r for r in recs if r.get("kind") == "start"]
    assert len(starts) == 2 and all("cert" in r for r in starts)
    assert starts[0]["signer"] != starts[1]["signer"]
    v = verify(path, Authority.load(pki / "ca.crt"))
    assert v.ok and len(recs) == 6


def test_a_renewed_key_signs_from_where_its_certificate_enters_the_log(
    pki: Path, tmp_path: Path
) -> None:
    """A running node whose certificate is renewed on disk (issue 17) signs on with it."""
    keys = tmp_path / "keys"
    certs.issue(pki, "connector", "trade", keys)
    files = KeyFiles(keys / "trade.key", keys / "trade.crt", "test", check_seconds=0)
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, files, name="trade")
    log.start()
    log.write({"time": dt.datetime.now(dt.UTC).isoformat(), "query_id": "1", "outcome": "ok"})
    certs.issue(pki, "connector", "trade", keys)  # renewed: a new key and certificate
    log.write({"time": dt.datetime.now(dt.UTC).isoformat(), "query_id": "2", "outcome": "ok"})
    log.close()
    recs = lines_of(path)
    assert "cert" in recs[0] and "cert" not in recs[1] and "cert" in recs[2]
    assert recs[0]["signer"] != recs[2]["signer"] == recs[3]["signer"]
    assert verify(path, Authority.load(pki / "ca.crt")).ok


def test_an_unsigned_log_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dev-audit.jsonl"
    log = AuditLog(path, name="dev")
    log.start()
    log.write({"time": dt.datetime.now(dt.UTC).isoformat(), "query_id": "q", "outcome": "ok"})
    log.close()
    code, out = verify_out(capsys, str(path))
    assert code == 0 and "UNSIGNED" in out and "1 ok" in out


# -- rotation and sharing -------------------------------------------------------------


def test_daily_rotation_chains_the_new_file_to_the_old(pki: Path, tmp_path: Path) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    node = _issue(pki, "trade", ec.generate_private_key(ec.SECP256R1()), start=since)
    path = tmp_path / "t-audit.jsonl"
    w = ChainWriter(path, node, Rotation(daily=True), {"role": "connector", "name": "trade"})
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    w.write({"time": yesterday, "query_id": "1", "outcome": "ok"})
    w.write({"time": dt.datetime.now(dt.UTC).isoformat(), "query_id": "2", "outcome": "ok"})
    w.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2
    (chain,) = chains(files)
    assert chain[-1] == path
    v = verify_chain(chain)  # (the test CA itself is younger than "yesterday")
    assert v.ok and v.last_seq == 3 and v.first_seq == 1, v.reason  # line, rotate, line


def test_writers_sharing_a_log_keep_one_chain(pki: Path, tmp_path: Path) -> None:
    """Two writers (as two coordinator processes would) alternate on one file."""
    node = _issue(pki, "coordinator", ec.generate_private_key(ec.SECP256R1()))
    other = _issue(pki, "coordinator2", ec.generate_private_key(ec.SECP256R1()))
    path = tmp_path / "c.jsonl"
    a, b = ChainWriter(path, node), ChainWriter(path, other, Rotation(rotate_bytes=6000))
    for i in range(12):
        (a if i % 2 else b).write(
            {"time": dt.datetime.now(dt.UTC).isoformat(), "kind": "query", "i": i}
        )
    a.write({"time": dt.datetime.now(dt.UTC).isoformat(), "kind": "query", "i": 99})
    a.close()
    b.close()
    (chain,) = chains([tmp_path])
    v = verify_chain(chain, Authority.load(pki / "ca.crt"))
    assert v.ok and v.last_seq >= 13 and len(chain) >= 2, v.reason
    assert set(v.signers) == {"coordinator", "coordinator2"}


# -- the auditor's report ------------------------------------------------------------


def test_report_table_csv_json_and_chart(
    traffic: dict[str, Any], local: LocalFederation, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    d = str(logs(local))
    capsys.readouterr()
    assert cli.main(["audit", "report", d]) == 0
    out = capsys.readouterr().out
    assert "alice | registry | customer" in out and PURPOSE in out
    assert "accesses per hour (UTC)" in out and report.BAR in out
    assert cli.main(["audit", "report", d, "--format", "json", "--user", "alice"]) == 0
    got = capsys.readouterr()
    rows = json.loads(got.out)
    assert rows and all(r["user"] == "alice" for r in rows)
    lineitem = next(r for r in rows if r["table"] == "lineitem")
    assert lineitem["accesses"] == 3 and lineitem["agency"] == "trade"
    customer = next(r for r in rows if r["table"] == "customer")
    assert customer["refused"] == 1 and customer["purposes"] == PURPOSE
    assert "accesses per" in got.err  # the chart goes to stderr beside JSON
    assert cli.main(["audit", "report", d, "--format", "csv", "--agency", "registry"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("user,agency,table,accesses")
    assert all(",registry," in x for x in text[1:]) and any("bob" in x for x in text[1:])
    assert cli.main(["audit", "report", d, "--format", "json", "--table", "registry.region"]) == 0
    assert {r["user"] for r in json.loads(capsys.readouterr().out)} == {"alice", "bob"}
    assert cli.main(["audit", "report", d, "--format", "json", "--since", "2999-01-01"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    png = tmp_path / "access.png"
    assert cli.main(["audit", "report", d, "--chart", str(png)]) == 0
    err = capsys.readouterr().err
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in err
    else:
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_report_from_the_coordinator_log_alone(
    traffic: dict[str, Any], local: LocalFederation
) -> None:
    items = report.accesses([logs(local) / "coordinator-audit.jsonl"])
    rows = report.summary(items)
    trade = {(r["user"], r["table"]): r for r in rows if r["agency"] == "trade"}
    assert trade[("alice", "lineitem")]["accesses"] == 3
    assert trade[("alice", "orders")]["rows"] >= traffic["streamed"]


def test_principal_signature_is_kept_as_sent(
    traffic: dict[str, Any], local: LocalFederation
) -> None:
    """Each side holds the other's signature: the line's principal_sig verifies."""
    from fedsql.audit.reconcile import _principal_problem

    reg = lines_of(logs(local) / "registry-audit.jsonl")
    certs_ = {
        r["peer_sha256"]: load_cert(r["peer_cert"]).public_bytes(serialization.Encoding.DER)
        for r in reg
        if r.get("kind") == "peer"
    }
    line = next(r for r in reg if r.get("authenticated"))
    assert _principal_problem(line, "registry", certs_) == ""
    assert base64.b64decode(line["principal_sig"])


# Last: raw calls with the coordinator's certificate leave lines its log lacks.
def test_receipt_of_a_refused_call_is_in_its_trailers(local: LocalFederation) -> None:
    ref = load_federation(local.config_path).connector("trade")
    ch, raw = open_channel(ref)
    with raw:
        req = pb.ExecuteRequest(
            query_id="q-trailer",
            sql="SELECT * FROM read_csv('/etc/passwd')",
            principal=pb.Principal(user="alice", roles=["analyst"], nonce=b"n" * 16),
        )
        with pytest.raises(grpc.RpcError) as info:
            list(pb_grpc.ConnectorStub(ch).Execute(req, timeout=10))
    r = receipt_from_metadata(info.value.trailing_metadata())
    assert r is not None and r.outcome == "refused" and r.query_id == "q-trailer"
    assert r.nonce == (b"n" * 16).hex() and r.signature
    # The ErrorInfo still rides along.
    keys = [k for k, _ in info.value.trailing_metadata()]
    assert "fedsql-receipt-bin" in keys and len(keys) >= 2


def test_a_stream_dropped_early_is_logged_abandoned(
    fed: fedsql.Federation, local: LocalFederation
) -> None:
    import gc

    reader = fed.stream("SELECT * FROM lineitem")
    next(iter(reader))  # one batch, then the analyst goes away
    del reader
    gc.collect()
    recs = lines_of(logs(local) / "coordinator-audit.jsonl")
    start = [r for r in recs if r.get("outcome") == "streaming"][-1]
    end = next(
        r for r in recs if r.get("kind") == "query_end" and r["query_id"] == start["query_id"]
    )
    assert end["outcome"] == "abandoned" and end["fragments"][0]["agency"] == "trade"


def test_a_v1_log_continues_signed_after_an_upgrade(pki: Path, tmp_path: Path) -> None:
    """Lines of the unsigned v1 format (hash of the whole line chains) stay verifiable,
    and an upgraded connector signs on from them."""
    from fedsql.audit.chain import GENESIS, digest

    path, prev, out = tmp_path / "old-audit.jsonl", GENESIS, []
    for seq in (1, 2):
        body = {"outcome": "ok", "query_id": str(seq), "prev": prev, "seq": seq}
        body["hash"] = digest(canonical(body))
        out.append(canonical(body))
        prev = digest(out[-1])
    path.write_text("".join(x + "\n" for x in out))
    assert verify(path).ok and not verify(path).signed_lines
    log = AuditLog(
        path, _issue(pki, "trade", ec.generate_private_key(ec.SECP256R1())), name="trade"
    )
    log.start()
    log.close()
    v = verify(path)
    assert v.ok and v.signed_lines == 2 and v.unsigned_lines == 2 and v.last_seq == 4
    assert "partly signed" in "\n".join(describe(v))


def test_metadata_statements_leave_their_line_too(
    traffic: dict[str, Any],
    fed: fedsql.Federation,
    local: LocalFederation,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SHOW, DESCRIBE and information_schema are answered at the coordinator from
    the catalog; what an analyst asked of it is in the coordinator's log all the same,
    and the logs still verify."""
    shown = fed.sql("SHOW TABLES").num_rows
    fed.sql("SELECT table_name FROM information_schema.tables")
    with pytest.raises(CatalogError):
        fed.sql("DESCRIBE nosuch")
    recs = lines_of(logs(local) / "coordinator-audit.jsonl")
    by_sql = {r.get("sql"): r for r in recs if r.get("kind") == "query"}
    show = by_sql["SHOW TABLES"]
    assert (show["outcome"], show["rows"], show["user"]) == ("ok", shown, "alice")
    assert show["purpose"] == PURPOSE and show["fragments"] == []
    assert by_sql["SELECT table_name FROM information_schema.tables"]["outcome"] == "ok"
    assert by_sql["DESCRIBE nosuch"]["outcome"] != "ok"
    assert local.pki is not None
    code, out = verify_out(capsys, str(logs(local)), "--ca", str(local.pki / "ca.crt"))
    assert code == 0, out
