"""`fedsql shell` in a pseudo-terminal (pexpect): embedded and against `fedsql serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from helpers import LocalService

import fedsql
from fedsql.local import LocalFederation
from fedsql.shell import EmbeddedBackend, statements

FEDSQL = str(Path(sys.executable).parent / "fedsql")
PROMPT = r"fedsql>"  # prompt_toolkit draws the space as a cursor move


def spawn(args: list[str], home: Path) -> pexpect.spawn:
    env = dict(os.environ, HOME=str(home), PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", COLUMNS="200")
    child = pexpect.spawn(FEDSQL, args, env=env, encoding="utf-8", timeout=60, dimensions=(50, 200))
    child.expect(PROMPT)
    return child


@pytest.fixture
def embedded(tpch_local: LocalFederation, tmp_path: Path) -> Iterator[pexpect.spawn]:
    child = spawn(["shell", "-c", str(tpch_local.config_path), "--user", "alice"], tmp_path)
    yield child
    child.close(force=True)


def test_query_spanning_lines_prints_a_table_with_rows_and_time(
    embedded: pexpect.spawn, tmp_path: Path
) -> None:
    embedded.sendline("SELECT n_name, r_name FROM nation JOIN region")
    embedded.expect(r"\.\.\.>")
    embedded.sendline("  ON n_regionkey = r_regionkey ORDER BY n_name LIMIT 3;")
    embedded.expect(r"n_name\s+\| r_name")
    embedded.expect(r"ALGERIA\s+\| AFRICA")
    embedded.expect_exact("(3 rows)")
    embedded.expect(r"Time: \d+\.\d+ s \(registry: \d+ rows")
    embedded.expect(PROMPT)
    embedded.sendline(".quit")
    embedded.expect(pexpect.EOF)
    history = (tmp_path / ".fedsql_history").read_text()
    assert "ORDER BY n_name LIMIT 3;" in history


def test_tables_describe_explain_and_help(embedded: pexpect.spawn) -> None:
    embedded.sendline(".tables")
    embedded.expect(r"trade\.lineitem\s+\| main")
    embedded.expect_exact("(8 rows)")
    embedded.expect(PROMPT)
    embedded.sendline(".describe trade.orders")
    embedded.expect(r"o_orderdate\s+\| date32")
    embedded.expect(PROMPT)
    embedded.sendline(".explain SELECT count(*) FROM orders JOIN customer ON o_custkey = c_custkey")
    embedded.expect("trade")
    embedded.expect(PROMPT)
    embedded.sendline(".help")
    embedded.expect_exact(".describe TABLE")
    embedded.expect(PROMPT)


def test_tab_completes_tables_and_columns(embedded: pexpect.spawn) -> None:
    # Wait for each completion to be drawn before typing on: prompt_toolkit completes
    # asynchronously, and keys typed meanwhile would land first.
    embedded.send("SELECT o_orderpri")
    embedded.send("\t")
    embedded.expect("ority")
    embedded.send(" FROM trade.ord")
    embedded.send("\t")
    embedded.expect("ers")
    embedded.send(" ORDER BY 1 LIMIT 1;\r")
    embedded.expect(r"o_orderpriority\s*\r?\n")
    embedded.expect_exact("1-URGENT")
    embedded.expect_exact("(1 row)")
    embedded.expect(PROMPT)


def test_a_bad_query_is_one_error_line_and_the_shell_goes_on(embedded: pexpect.spawn) -> None:
    embedded.sendline("SELECT nope FROM nation;")
    embedded.expect(r"error: [^\r\n]*nope")
    embedded.expect(PROMPT)
    embedded.sendline("SELECT * FROM nowhere;")
    embedded.expect(r"error: unknown table 'nowhere'")
    embedded.expect(PROMPT)
    embedded.sendline(".describe nowhere")
    embedded.expect_exact("error: unknown table 'nowhere'; .tables lists them")
    embedded.expect(PROMPT)
    embedded.sendline("SELECT count(*) AS n FROM region;")
    embedded.expect(r"\b5\b")
    embedded.expect_exact("(1 row)")
    assert "Traceback" not in (embedded.before or "")


def test_remote_shell_against_the_service(service: LocalService, tmp_path: Path) -> None:
    password = service.config.parent / "alice.password"
    args = ["shell", "--url", service.url, "--user", "alice", "--password-file", str(password)]
    child = spawn([*args, "--ca", str(service.ca)], tmp_path)
    try:
        child.sendline("SELECT r_name FROM region ORDER BY r_name;")
        child.expect_exact("AFRICA")
        child.expect_exact("(5 rows)")
        child.expect(r"Time: \d+\.\d+ s \(registry: 5 rows")
        child.expect(PROMPT)
        child.sendline(".tables")
        child.expect(r"industry\.partsupp")
        child.expect(PROMPT)
        child.send("SELECT count(*) AS n FROM custo")
        child.send("\t")
        child.expect("mer")  # the rest of "customer", drawn after "custo"
        child.send(";\r")
        child.expect_exact("1500")
        child.expect(PROMPT)
        child.sendline("SELECT x FROM nowhere;")
        child.expect(r"error: unknown table 'nowhere'\r?\n")
        child.expect(PROMPT)
        child.sendline(".quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_wrong_password_at_the_remote_shell(service: LocalService, tmp_path: Path) -> None:
    bad = tmp_path / "bad.password"
    bad.write_text("not the password\n")
    done = subprocess.run(
        [FEDSQL, "shell", "--url", service.url, "--user", "alice", "--password-file", str(bad)]
        + ["--ca", str(service.ca)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "sign-in refused for user 'alice'" in done.stderr
    assert "Traceback" not in done.stderr


def test_piped_statements(tpch_local: LocalFederation) -> None:
    done = subprocess.run(
        [FEDSQL, "shell", "-c", str(tpch_local.config_path)],
        input="SELECT count(*) AS n\nFROM nation;\n.tables\nSELECT x FROM nowhere;\n",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "25" in done.stdout and "trade.orders" in done.stdout
    assert "error: unknown table 'nowhere'" in done.stderr


def test_statement_splitting() -> None:
    assert list(statements(["select 1", "from t;", "", ".tables", "  ", "select 2;"])) == [
        "select 1\nfrom t;",
        ".tables",
        "select 2;",
    ]


def test_progress_reports_rows_and_bytes_per_agency_while_fragments_stream(
    fed: fedsql.Federation,
) -> None:
    seen: list[dict[str, tuple[int, int]]] = []
    backend = EmbeddedBackend(fed)
    table = backend.run(
        "SELECT o_orderkey, c_name FROM orders JOIN customer ON o_custkey = c_custkey",
        lambda by_agency: seen.append(dict(by_agency)),
    )
    assert seen, "no progress was reported"
    last = seen[-1]
    assert set(last) == {"trade", "registry"}
    stats = fed.last_stats
    assert stats is not None and table.num_rows == 15000
    for agency, (rows, nbytes) in last.items():
        assert (rows, nbytes) == (stats[agency].rows, stats[agency].bytes)
    assert "trade: 15000 rows" in backend.stats()
