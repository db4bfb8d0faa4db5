"""Static catalogs for planner tests: what connectors answer to GetCatalog, kept in
JSON files (tests/fixtures/catalogs/), so that planner rules are tested without a
single process. ``python tests/catalogs.py`` rewrites tpch.json from a live
TPC-H SF 0.01 federation."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pyarrow as pa

from fedsql.capabilities import Capabilities
from fedsql.catalog import Catalog
from fedsql.wire import RemoteCatalog, RemoteTable

CATALOGS = Path(__file__).parent / "fixtures" / "catalogs"


def load(name: str) -> Catalog:
    raw = json.loads((CATALOGS / f"{name}.json").read_text())
    cats = {}
    for agency, c in raw.items():
        tables = tuple(
            RemoteTable(
                t["schema"],
                t["name"],
                pa.ipc.read_schema(pa.py_buffer(base64.b64decode(t["arrow_schema"]))),
                t["row_count_estimate"],
            )
            for t in c["tables"]
        )
        caps = Capabilities(frozenset(c["capabilities"]))
        cats[agency] = RemoteCatalog(agency, "0", c["backend"], tables, c["dialect"], caps)
    return Catalog(cats)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dump(catalog: Catalog) -> dict[str, object]:
    out: dict[str, object] = {}
    for agency, c in catalog.catalogs.items():
        out[agency] = {
            "backend": c.backend,
            "dialect": c.dialect,
            "capabilities": sorted(c.capabilities.features),
            "tables": [
                {
                    "schema": t.schema,
                    "name": t.name,
                    "row_count_estimate": t.row_count_estimate,
                    "arrow_schema": base64.b64encode(
                        t.arrow_schema.serialize().to_pybytes()
                    ).decode(),
                }
                for t in c.tables
            ],
        }
    return out


if __name__ == "__main__":  # pragma: no cover - regenerates the fixture
    import tempfile

    import fedsql
    from fedsql.local import tpch_federation

    with tempfile.TemporaryDirectory() as d:
        local, _ = tpch_federation(Path(d), 0.01)
        with local, fedsql.connect(local.config_path) as fed:
            (CATALOGS / "tpch.json").write_text(json.dumps(dump(fed.catalog), indent=1) + "\n")
