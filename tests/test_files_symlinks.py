"""Files backend with symlinks the agency placed (issue 15, item 9).

The node follows exactly the links of exposed tables, resolved once at start:
the view reads the resolved target, and the node's locked DuckDB allows those
targets alone — never an unexposed link's target, nor a file beside a target. A link
that dangles, loops or ends at something other than a Parquet/CSV file stops
the connector at start with a message naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedsql.connectors.config import load_agency
from fedsql.connectors.files import open_files
from fedsql.connectors.node import build_server
from fedsql.errors import ConfigError
from fedsql.local import write_agency_toml


def _rows(backend: object, sql: str) -> list[tuple[object, ...]]:
    run = backend.execute(sql, 0)  # type: ignore[attr-defined]
    try:
        return [r for b in run.reader for r in zip(*b.to_pydict().values(), strict=True)]
    finally:
        run.close()


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """``exposed/`` holds a regular file and links into ``elsewhere/``, where a secret is."""
    elsewhere, exposed = tmp_path / "elsewhere", tmp_path / "exposed"
    elsewhere.mkdir()
    exposed.mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3]}), exposed / "plain.parquet")
    pq.write_table(pa.table({"v": ["public"]}), elsewhere / "shared.parquet")
    pq.write_table(pa.table({"s": ["SECRET-CANARY"]}), elsewhere / "secret.parquet")
    pq.write_table(pa.table({"s": ["OTHER-CANARY"]}), elsewhere / "other.parquet")
    (elsewhere / "notes.csv").write_text("a,b\n1,2\n")
    os.symlink(elsewhere / "shared.parquet", exposed / "shared.parquet")  # absolute
    os.symlink(Path("..") / "elsewhere" / "notes.csv", exposed / "notes.csv")  # relative
    os.symlink(elsewhere / "secret.parquet", exposed / "hidden.parquet")  # never exposed
    return {"elsewhere": elsewhere, "exposed": exposed}


def test_exposed_links_are_followed_to_exactly_their_targets(layout: dict[str, Path]) -> None:
    exposed, elsewhere = layout["exposed"], layout["elsewhere"]
    backend = open_files(exposed, ("plain", "shared", "notes"))
    try:
        assert {t.name for t in backend.tables()} == {"plain", "shared", "notes"}
        assert _rows(backend, "SELECT v FROM shared") == [("public",)]
        assert _rows(backend, "SELECT a, b FROM notes") == [(1, 2)]
        con = backend._con
        # The resolved targets are what the views read ...
        views = dict(con.execute("SELECT view_name, sql FROM duckdb_views()").fetchall())
        assert str(elsewhere / "shared.parquet") in views["shared"]
        # ... and nothing else is readable: not the unexposed link (it resolves to the
        # secret, which is not allowed), not its target, not a file beside a target.
        # (DuckDB resolves links before it checks allowed_paths, so a path that
        # resolves to an exposed target reads that target: the same exposed rows.)
        for path in (
            exposed / "hidden.parquet",
            elsewhere / "secret.parquet",
            elsewhere / "other.parquet",
        ):
            with pytest.raises(duckdb.PermissionException):
                con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall()
        link = exposed / "shared.parquet"
        assert con.execute(f"SELECT v FROM '{link}'").fetchall() == [("public",)]
        assert "hidden" not in {t.name for t in backend.tables()}
        with pytest.raises(duckdb.CatalogException):
            con.execute("SELECT * FROM hidden").fetchall()
    finally:
        backend.close()


def test_a_link_repointed_after_start_changes_nothing(layout: dict[str, Path]) -> None:
    exposed, elsewhere = layout["exposed"], layout["elsewhere"]
    backend = open_files(exposed, ("plain", "shared"))
    try:
        (exposed / "shared.parquet").unlink()
        os.symlink(elsewhere / "secret.parquet", exposed / "shared.parquet")
        assert _rows(backend, "SELECT * FROM shared") == [("public",)]
    finally:
        backend.close()


def test_all_tables_exposed_means_every_link_followed(layout: dict[str, Path]) -> None:
    """Without [backend].tables every file is a table, links included (the agency
    placed them); a file beside a link's target stays out of reach."""
    backend = open_files(layout["exposed"], None)
    try:
        assert _rows(backend, "SELECT s FROM hidden") == [("SECRET-CANARY",)]
        with pytest.raises(duckdb.PermissionException):
            path = layout["elsewhere"] / "other.parquet"
            backend._con.execute(f"SELECT * FROM '{path}'").fetchall()
    finally:
        backend.close()


@pytest.mark.parametrize("bad", ["dangling", "loop", "directory", "other-kind"])
def test_a_broken_link_stops_the_connector_at_start(tmp_path: Path, bad: str) -> None:
    d = tmp_path / "files"
    d.mkdir()
    pq.write_table(pa.table({"id": [1]}), d / "ok.parquet")
    link = d / "t.parquet"
    if bad == "dangling":
        os.symlink(tmp_path / "gone.parquet", link)
    elif bad == "loop":
        os.symlink(d / "u.parquet", link)
        os.symlink(link, d / "u.parquet")
    elif bad == "directory":
        (tmp_path / "adir.parquet").mkdir()
        os.symlink(tmp_path / "adir.parquet", link)
    else:
        (tmp_path / "x.json").write_text("{}")
        os.symlink(tmp_path / "x.json", link)
    toml = write_agency_toml(tmp_path / "a.toml", "a", "files", d)
    with pytest.raises(ConfigError) as info:
        build_server(load_agency(toml))
    msg = str(info.value)
    assert "t.parquet" in msg and "symlink" in msg
