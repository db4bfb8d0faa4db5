"""The backend registry: each kind owns its [backend] keys, type mapping and sample
data; nothing outside the backend modules asks a backend's name; a mutual-TLS
connector needs an audit log (issue 15, item 12)."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedsql.connectors.config import load_agency
from fedsql.connectors.kind import Sample
from fedsql.connectors.registry import BACKENDS, kind, make_sample, open_backend
from fedsql.errors import ConfigError
from fedsql.local import write_agency_toml
from fedsql.pgserver import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
HEAD = '[connector]\nname = "a"\nlisten = "127.0.0.1:0"\ninsecure = true\n\n'


def _agency(tmp: Path, backend: str) -> Path:
    p = tmp / "a.toml"
    p.write_text(HEAD + "[backend]\n" + backend)
    return p


@pytest.mark.parametrize(
    "backend, why",
    [
        ('kind = "oracle"\npath = "x"\n', "'oracle' is not one of duckdb (a DuckDB database"),
        ('path = "x"\n', "missing required key 'kind'"),
        ('kind = "sqlite"\n', "kind 'sqlite' needs 'path'"),
        ('kind = "postgres"\npath = "x"\ndsn = "host=h"\n', "path only go with kind 'duckdb'"),
        ('kind = "duckdb"\npath = "x"\npool_size = 2\n', "pool_size only go with kind 'postgres'"),
        ('kind = "files"\npath = "x"\ncolour = 1\n', "unknown key(s) 'colour'; kind 'files'"),
        ('kind = "duckdb"\npath = 3\n', "[backend].path: expected str, got int"),
        ('kind = "sqlite"\npath = "x"\nengine = "gpu"\n', "engine = 'gpu' is not one of"),
        ('kind = "postgres"\ndsn = "postgresql://u:pw@h/db"\n', "must not contain a password"),
        ('kind = "postgres"\ndsn = "host=h"\npool_size = 0\n', "pool_size must be a positive"),
    ],
)
def test_each_kind_checks_its_own_keys(tmp_path: Path, backend: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_agency(_agency(tmp_path, backend))
    assert why in str(info.value)


def test_kind_options_are_read_by_the_kind(tmp_path: Path) -> None:
    pg = load_agency(_agency(tmp_path, 'kind = "postgres"\ndsn = "host=h"\npassword_file = "pw"\n'))
    assert pg.backend.path is None and pg.backend.options.password_file == tmp_path / "pw"
    assert pg.backend.pool_size == 4  # the kind's keys read as before (cfg.backend.dsn ...)
    assert "host=h" not in repr(pg.backend) and "host=h" not in repr(pg.backend.options)
    duck = load_agency(_agency(tmp_path, 'kind = "duckdb"\npath = "d.duckdb"\n'))
    assert duck.backend.path == tmp_path / "d.duckdb" and duck.backend.options is None
    with pytest.raises(AttributeError):
        duck.backend.dsn  # noqa: B018


def test_every_kind_makes_sample_data_that_it_opens(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    """What the demo, the benchmarks and the conformance suite rely on: each kind
    makes its own data from Parquet, and opens it with DuckDB's types."""
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "amount": pa.array([1, 2], pa.decimal128(10, 2)),
            "name": ["a", "b"],
        }
    )
    pq.write_table(table, parquet / "t.parquet")
    for name, k in BACKENDS.items():
        work = tmp_path / name
        work.mkdir()
        where = make_sample(name, Sample(parquet, ("t",), work, f"s_{name}", pg_server))
        cfg = load_agency(write_agency_toml(work / "a.toml", "a", name, where))
        assert cfg.backend.kind == name and k.sql_type(pa.int64()) == "BIGINT"
        backend = open_backend(cfg.backend, None, {})
        try:
            (t,) = backend.tables()
            assert t.name == "t" and t.arrow_schema.field("amount").type == pa.decimal128(10, 2)
            assert backend.kind == name
        finally:
            backend.close()


def test_unknown_kind_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="is not one of duckdb .*files .*sqlite .*postgres"):
        kind("mysql")


# Checks on a backend's name belong to its module. Outside them: the benchmark's
# peers (DuckDB attaching PostgreSQL, postgres_fdw) are PostgreSQL tools by nature.
_BACKEND_MODULES = {"duckdb.py", "files.py", "sqlite.py", "postgres.py", "pgrole.py"}
_ALLOWED = {"src/fedsql/bench/tpch.py", "src/fedsql/cli/bench.py"}
_NAMES = r"""['"](?:duckdb|files|sqlite|postgres)['"]"""
_CHECK = re.compile(rf"(?:==|!=|\bin)\s*\(?{_NAMES}|{_NAMES}\s*(?:==|!=)|\bdialect\s*(?:==|!=)")


def test_no_backend_name_checks_outside_the_backend_modules() -> None:
    found = []
    for path in [*(ROOT / "src" / "fedsql").rglob("*.py"), *(ROOT / "connectors").glob("*.py")]:
        rel = str(path.relative_to(ROOT))
        if (
            "v1" in path.parts
            or rel in _ALLOWED
            or (path.parent.name == "connectors" and path.name in _BACKEND_MODULES)
        ):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _CHECK.search(line.split("#")[0]):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert found == [], "ask the registry or the backend instead:\n" + "\n".join(found)


TLS = """[connector]
name = "a"
listen = "127.0.0.1:0"
allowed_coordinators = ["coordinator"]
{audit}
[connector.tls]
cert = "a.crt"
key = "a.key"
client_ca = "ca.crt"

[backend]
kind = "duckdb"
path = "a.duckdb"
"""


def test_a_mutual_tls_connector_needs_an_audit_log(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text(TLS.format(audit=""))
    with pytest.raises(ConfigError) as info:
        load_agency(p)
    assert "a mutual-TLS connector needs audit_log" in str(info.value)
    assert 'audit_log = "/var/log/fedsql/a-audit.jsonl"' in str(info.value)
    p.write_text(TLS.format(audit='audit_log = "a-audit.jsonl"'))
    assert load_agency(p).audit_log == tmp_path / "a-audit.jsonl"
    dev = _agency(tmp_path, 'kind = "duckdb"\npath = "a.duckdb"\n')  # insecure: may go without
    assert load_agency(dev).audit_log is None
