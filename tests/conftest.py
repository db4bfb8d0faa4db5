"""Shared fixtures: TPC-H SF 0.01 data, a central DuckDB oracle, real connector processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from helpers import LocalService, start_service

import fedsql
from fedsql.channels import open_channel
from fedsql.config import load_federation
from fedsql.local import (
    LocalFederation,
    central_duckdb,
    generate_tpch,
    split_agencies,
    write_agency_toml,
)
from fedsql.pgserver import PostgresServer
from fedsql.v1 import connector_pb2_grpc as pb_grpc

SF = 0.01
MIXED = {"trade": "postgres", "registry": "sqlite", "industry": "files"}


@pytest.fixture(scope="session")
def tpch_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_tpch(SF, tmp_path_factory.mktemp("tpch-sf0.01"))


@pytest.fixture(scope="session")
def central(tpch_parquet: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The oracle: one DuckDB holding all eight tables."""
    db = central_duckdb(tpch_parquet, tmp_path_factory.mktemp("central") / "central.duckdb")
    con = duckdb.connect(str(db), read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="session")
def tpch_local(
    tpch_parquet: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalFederation]:
    """Three connector processes (DuckDB backends): trade, registry, industry."""
    work = tmp_path_factory.mktemp("federation")
    data = split_agencies(tpch_parquet, work, "duckdb")
    tomls = [write_agency_toml(work / f"{a}.toml", a, k, p) for a, (k, p) in data.items()]
    users = '[user.alice]\nroles = ["analyst"]\n\n[user.bob]\nroles = ["auditor", "analyst"]\n'
    with LocalFederation(work, tomls, users=users) as local:
        yield local


@pytest.fixture(scope="session")
def fed(tpch_local: LocalFederation) -> Iterator[fedsql.Federation]:
    with fedsql.connect(tpch_local.config_path, user="alice") as f:
        yield f


@pytest.fixture(scope="session")
def trade_stub(tpch_local: LocalFederation) -> Iterator[pb_grpc.ConnectorStub]:
    """A raw gRPC client for the trade connector (no coordinator in between)."""
    ref = load_federation(tpch_local.config_path).connector("trade")
    ch, raw = open_channel(ref)  # the coordinator's certificate; principals get signed
    with raw:
        yield pb_grpc.ConnectorStub(ch)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback (fails, with how to install it, if missing)."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server_default_locale() -> Iterator[PostgresServer]:
    """A second server, with initdb's default locale (the environment's, e.g.
    C.UTF-8) rather than "C": what agencies' servers actually run."""
    server = PostgresServer(locale=None)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mixed_local(
    tpch_parquet: Path, tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer
) -> Iterator[LocalFederation]:
    """trade on PostgreSQL, registry on SQLite, industry on Parquet files."""
    work = tmp_path_factory.mktemp("mixed")
    data = split_agencies(tpch_parquet, work, MIXED, pg=pg_server)
    tomls = [write_agency_toml(work / f"{a}.toml", a, k, p) for a, (k, p) in data.items()]
    with LocalFederation(work, tomls) as local:
        yield local


@pytest.fixture(scope="session")
def mixed(mixed_local: LocalFederation) -> Iterator[fedsql.Federation]:
    with fedsql.connect(mixed_local.config_path) as f:
        yield f


PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}


@pytest.fixture(scope="session")
def service(
    tpch_local: LocalFederation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalService]:
    """`fedsql serve` over TLS in front of the TPC-H agencies; alice (analyst), bob (auditor)."""
    from fedsql import certs
    from fedsql.service.auth import hash_password

    work = tmp_path_factory.mktemp("service")
    certs.init_ca(work / "pki", name="fedsql test service CA")
    got = certs.issue(work / "pki", "connector", "localhost", work, local=True)
    roles = {"alice": '["analyst"]', "bob": '["auditor", "analyst"]'}
    # the agencies as the test federation reaches them (mutual TLS), its own users
    lines = [tpch_local.config_path.read_text().split("\n[user.")[0], ""]
    for user, pw in PASSWORDS.items():
        (work / f"{user}.hash").write_text(hash_password(pw) + "\n")
        (work / f"{user}.password").write_text(pw + "\n")
        lines += [f"[user.{user}]", f"roles = {roles[user]}"]
        lines += [f'password_hash_file = "{user}.hash"', ""]
    lines += ["[service]", 'admins = ["bob"]', "[service.tls]"]
    lines += [f'cert = "{got.cert.name}"', f'key = "{got.key.name}"', ""]
    config = work / "federation.toml"
    config.write_text("\n".join(lines))
    svc = start_service(config, ca=work / "pki" / certs.CA_CERT)
    yield svc
    svc.stop()
