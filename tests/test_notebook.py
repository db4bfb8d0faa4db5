"""Notebook use: HTML display, pandas/Arrow interop, and the example script."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import fedsql
from fedsql.errors import FedSQLError
from fedsql.local import LocalFederation
from fedsql.notebook import (
    Result,
    html_table,
    load_ipython_extension,
    register_ipython,
    set_purpose,
)

EXAMPLE = Path(__file__).parent.parent / "examples" / "analyst_tour.py"


def test_query_result_displays_as_html_and_converts(fed: fedsql.Federation) -> None:
    sql = "SELECT n_name, r_name FROM nation JOIN region ON n_regionkey = r_regionkey ORDER BY 1"
    result = fed.query(sql)
    assert isinstance(result, Result) and len(result) == 25
    page = result._repr_html_()
    assert page.count("<tr>") == 26 and "<th title='string'>n_name</th>" in page
    assert "25 rows × 2 columns" in page and "registry: 25 rows" in page
    plain = fed.sql(sql)
    assert isinstance(plain, pa.Table)  # fed.sql keeps returning a pyarrow.Table
    assert result.to_pandas().equals(plain.to_pandas())
    assert pa.table(result).equals(plain)  # any Arrow consumer, via __arrow_c_stream__
    assert "ALGERIA" in repr(result) and "(25 rows" in repr(result)


def test_html_escapes_and_truncates() -> None:
    t = pa.table({"x": [f"<b>{i}</b>" for i in range(60)], "n": list(range(60))})
    page = html_table(t)
    assert "&lt;b&gt;0&lt;/b&gt;" in page and "(10 not shown)" in page
    assert page.count("<tr>") == 51


def test_registers_an_html_view_for_arrow_tables_in_ipython(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered = {}

    class Formatter:
        def for_type(self, cls: type, fn: object) -> None:
            registered[cls] = fn

    shell = types.SimpleNamespace(
        display_formatter=types.SimpleNamespace(formatters={"text/html": Formatter()})
    )
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert register_ipython()
    assert registered[pa.Table] is html_table
    monkeypatch.setitem(sys.modules, "IPython", None)
    assert not register_ipython()


def test_example_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "visits per region" in done.stdout
    assert "health:" in done.stdout and "registry:" in done.stdout
    assert "masked (hash)" in done.stdout


def _purpose_at(local: LocalFederation, agency: str, result: Result) -> set[str]:
    """The purposes the agency's audit log holds for the query of ``result``."""
    assert result.stats is not None
    qid = result.stats.query_id
    lines = (local.work / f"{agency}-audit.jsonl").read_text().splitlines()
    return {r["purpose"] for r in map(json.loads, lines) if r.get("query_id") == qid}


def test_purpose_reaches_the_agencies_from_python(tpch_local: LocalFederation) -> None:
    with fedsql.connect(tpch_local.config_path, user="alice", purpose="first look") as fed:
        first = fed.query("SELECT count(*) AS n FROM region")
        set_purpose(fed, "  quarterly review ")
        second = fed.query("SELECT count(*) AS n FROM region")
    assert _purpose_at(tpch_local, "registry", first) == {"first look"}
    assert _purpose_at(tpch_local, "registry", second) == {"quarterly review"}


def test_magics_connect_with_a_purpose_and_change_it(tpch_local: LocalFederation) -> None:
    magics: dict[tuple[str, str], Callable[..., Any]] = {}

    def register_magic_function(fn: Callable[..., Any], magic_kind: str, magic_name: str) -> None:
        magics[(magic_kind, magic_name)] = fn

    load_ipython_extension(types.SimpleNamespace(register_magic_function=register_magic_function))
    line, cell = magics[("line", "fedsql")], magics[("cell", "fedsql")]
    with pytest.raises(FedSQLError, match="not connected: %fedsql connect"):
        line("SELECT 1")
    line(f"connect {tpch_local.config_path} --user alice --purpose 'regional statistics'")
    first = line("SELECT count(*) AS n FROM nation")
    assert isinstance(first, Result) and first.table.column("n").to_pylist() == [25]
    assert line("purpose") == "regional statistics"
    line('purpose "audit of 2025, sample"')
    second = cell("", "SELECT count(*) AS n\nFROM region")
    assert isinstance(second, Result) and len(second) == 1
    third = cell("purpose it's the last one", "SELECT count(*) AS n FROM region")
    assert _purpose_at(tpch_local, "registry", first) == {"regional statistics"}
    assert _purpose_at(tpch_local, "registry", second) == {"audit of 2025, sample"}
    assert _purpose_at(tpch_local, "registry", third) == {"it's the last one"}
    with pytest.raises(FedSQLError, match="%fedsql connect: the following arguments"):
        line("connect")
    line.__self__.fed.close()
