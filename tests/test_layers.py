"""The connector stands alone: it starts and answers with the coordinator's modules absent.

A real connector process is started through its own entry (``python -m
fedsql.connectors``, what the ``fedsql-connector`` script runs) with a
``sitecustomize`` that makes every coordinator module, the CLI, the harness and
the coordinator's own dependencies fail to import; a normal coordinator in this
process then queries it over mutual TLS (catalog, a policy, key sets, a
transpiled backend). The import-linter contracts are checked here too, so a
plain ``pytest`` guards the layers as ``make test`` does.

(``sqlglot.optimizer`` is not blocked: sqlglot's own dialects load it.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import fedsql
from fedsql.local import (
    STANDALONE,
    LocalConnector,
    local_pki,
    secure_agency,
    split_agencies,
    start_connector,
    write_agency_toml,
)

ROOT = Path(__file__).resolve().parent.parent

# What a connector must never need; each fails to import in the connector's process.
BLOCKED = (
    "fedsql.planner",
    "fedsql.execute",
    "fedsql.client",
    "fedsql.cli",
    "fedsql.shell",
    "fedsql.service",
    "fedsql.notebook",
    "fedsql.config",
    "fedsql.catalog",
    "fedsql.resilience",
    "fedsql.local",
    "fedsql.demo",
    "fedsql.scenario",
    "fedsql.bench",
    "fedsql.pgserver",
    "fedsql.audit.coordinator",
    "prompt_toolkit",
    "pandas",
    "matplotlib",
)

SITECUSTOMIZE = """
import atexit, json, os, sys

BLOCKED = {blocked!r}


class Blocked:
    '''A meta-path finder that refuses the coordinator's modules.'''

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            with open(os.environ["FEDSQL_BLOCKED_LOG"], "a") as f:
                f.write(name + "\\n")
            raise ImportError(f"{{name}} is blocked: the connector must not import it")
        return None


sys.meta_path.insert(0, Blocked())


@atexit.register
def _loaded():
    with open(os.environ["FEDSQL_LOADED_LOG"], "w") as f:
        json.dump(sorted(m for m in sys.modules if m.startswith("fedsql")), f)
"""


def _blocking_env(tmp: Path) -> dict[str, str]:
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=BLOCKED))
    return {
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "FEDSQL_BLOCKED_LOG": str(tmp / "blocked.log"),
        "FEDSQL_LOADED_LOG": str(tmp / "loaded.json"),
    }


def test_the_blocker_blocks(tmp_path: Path) -> None:
    """The environment really refuses the coordinator (else the next test proves nothing)."""
    env = {**os.environ, **_blocking_env(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-c", "import fedsql.client"], env=env, capture_output=True, text=True
    )
    assert r.returncode != 0 and "fedsql.client is blocked" in r.stderr
    assert "fedsql.client" in (tmp_path / "blocked.log").read_text()


def test_connector_starts_and_answers_with_the_coordinator_blocked(tmp_path: Path) -> None:
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    ids = list(range(500))
    pq.write_table(
        pa.table({"id": ids, "nid": [f"N{i:04d}" for i in ids], "v": [i % 7 for i in ids]}),
        parquet / "people.parquet",
    )
    pq.write_table(pa.table({"id": ids[::5], "tag": ["x", "y"] * 50}), parquet / "tags.parquet")
    data = split_agencies(
        parquet, tmp_path, {"dk": "duckdb", "lt": "sqlite"}, {"dk": ("people",), "lt": ("tags",)}
    )
    mask = '[[mask]]\ntable = "people"\ncolumn = "nid"\nrule = "redact"\n'
    pki = local_pki(tmp_path)
    env = _blocking_env(tmp_path)
    started: list[LocalConnector] = []
    try:
        for agency, (kind, where) in data.items():
            toml = write_agency_toml(
                tmp_path / f"{agency}.toml", agency, kind, where, mask if agency == "dk" else ""
            )
            secure_agency(toml, pki)
            started.append(start_connector(toml, env=env, entry=STANDALONE))
        fed_toml = tmp_path / "federation.toml"
        fed_toml.write_text(
            "".join(
                f'[[connector]]\nname = "{c.name}"\naddress = "{c.address}"\n'
                f'[connector.tls]\nca = "{pki / "ca.crt"}"\n'
                f'cert = "{pki / "coordinator.crt"}"\nkey = "{pki / "coordinator.key"}"\n\n'
                for c in started
            )
            + '[user.ana]\nroles = ["analyst"]\n'
        )
        with fedsql.connect(fed_toml, user="ana") as fed:
            assert set(fed.catalog.catalogs) == {"dk", "lt"}
            got = fed.sql(
                "SELECT p.nid, count(*) AS n FROM dk.people p JOIN lt.tags t ON p.id = t.id "
                "WHERE p.v < 3 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3"
            )
            assert got.column("nid").to_pylist() == ["***"]  # masked at the agency
            want = sum(1 for i in ids[::5] if i % 7 < 3)
            assert got.column("n").to_pylist() == [want]
    finally:
        for c in started:
            c.stop()
    log = tmp_path / "blocked.log"
    tried = set(log.read_text().split()) if log.exists() else set()
    # DuckDB and pyarrow probe for pandas and carry on without it; fedsql tries nothing.
    assert not {m for m in tried if m.startswith("fedsql")}, tried
    loaded = json.loads((tmp_path / "loaded.json").read_text())
    assert "fedsql.connectors.server" in loaded and "fedsql.connectors.sqlite" in loaded
    assert not [m for m in loaded if m.startswith(BLOCKED)]


def test_importing_fedsql_loads_no_coordinator() -> None:
    code = (
        "import sys, fedsql, fedsql.connectors.server, fedsql.connectors.config\n"
        "print(' '.join(m for m in sys.modules if m.startswith(('fedsql.client', "
        "'fedsql.planner', 'fedsql.execute', 'fedsql.config', 'prompt_toolkit'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""


def test_import_contracts_hold() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lint_imports.py")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:]
    assert "0 broken" in r.stdout
