"""`fedsql shell` in a pseudo-terminal (pexpect): embedded and against `fedsql serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pexpect
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from helpers import LocalService

import fedsql
from fedsql.local import LocalFederation, write_agency_toml
from fedsql.service.remote import PURPOSE_HEADER
from fedsql.shell import EmbeddedBackend, Shell, TableInfo, statements

FEDSQL = str(Path(sys.executable).parent / "fedsql")
PROMPT = r"fedsql>"  # prompt_toolkit draws the space as a cursor move


def spawn(args: list[str], home: Path) -> pexpect.spawn:
    env = dict(os.environ, HOME=str(home), PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", COLUMNS="200")
    child = pexpect.spawn(FEDSQL, args, env=env, encoding="utf-8", timeout=60, dimensions=(50, 200))
    try:
        child.expect(PROMPT)
    except pexpect.EOF:  # say all it printed: pexpect's message keeps the last 100 characters
        child.close()
        raise AssertionError(
            f"fedsql {' '.join(args)} ended before its prompt (exit {child.exitstatus}, "
            f"signal {child.signalstatus}):\n{child.before}"
        ) from None
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
    embedded.expect(r"o_orderdate\s+\| DATE")
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
    child = spawn([*args, "--ca", str(service.ca), "--purpose", "service smoke test"], tmp_path)
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
    assert "check the user name and the password" in done.stderr
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
    stats = backend.last_stats  # the query ran in a worker thread (Ctrl-C cancels it)
    assert stats is not None and table.num_rows == 15000
    for agency, (rows, nbytes) in last.items():
        assert (rows, nbytes) == (stats[agency].rows, stats[agency].bytes)
    assert "trade: 15000 rows" in backend.stats()


# -- issue 15: the shell behaves like the tools analysts already use -----------------


def test_help_lists_every_command(embedded: pexpect.spawn) -> None:
    embedded.sendline(".help")
    for command in (".tables", ".describe TABLE", ".explain SQL", ".mode MODE"):
        embedded.expect_exact(command)
    for command in (".output FILE", ".timer on|off", ".maxrows N", ".purpose TEXT", ".quit"):
        embedded.expect_exact(command)
    embedded.expect(PROMPT)


def test_maxrows_says_when_rows_were_cut(embedded: pexpect.spawn) -> None:
    embedded.sendline("SELECT n_name FROM nation ORDER BY n_name;")
    embedded.expect_exact("(25 rows)")  # under the default 50
    embedded.expect(PROMPT)
    embedded.sendline(".maxrows 3")
    embedded.expect(PROMPT)
    embedded.sendline("SELECT n_name FROM nation ORDER BY n_name;")
    embedded.expect_exact("ARGENTINA")
    embedded.expect_exact("… 3 of 25 rows shown; .maxrows N (0: all) or .output FILE for all")
    assert "CANADA" not in (embedded.before or "")  # the fourth row
    embedded.expect(PROMPT)
    embedded.sendline(".maxrows")
    embedded.expect_exact("maxrows: 3")
    embedded.expect(PROMPT)
    embedded.sendline(".maxrows 0")
    embedded.expect(PROMPT)
    embedded.sendline("SELECT n_name FROM nation ORDER BY n_name;")
    embedded.expect_exact("VIETNAM")
    embedded.expect_exact("(25 rows)")
    embedded.expect(PROMPT)
    embedded.sendline(".maxrows many")
    embedded.expect_exact("error: usage: .maxrows N")
    embedded.expect(PROMPT)


def test_modes_csv_json_markdown(embedded: pexpect.spawn) -> None:
    sql = "SELECT r_regionkey, r_name FROM region ORDER BY 1 LIMIT 2;"
    embedded.sendline(".mode csv")
    embedded.expect(PROMPT)
    embedded.sendline(sql)
    embedded.expect_exact('"r_regionkey","r_name"')
    embedded.expect_exact('1,"AMERICA"')
    embedded.expect_exact("(2 rows)")
    embedded.expect(PROMPT)
    embedded.sendline(".mode json")
    embedded.expect(PROMPT)
    embedded.sendline("SELECT o_orderkey, o_totalprice FROM orders ORDER BY 1 LIMIT 1;")
    embedded.expect(r'\{"o_orderkey": 1, "o_totalprice": \d+\.\d\d\}')  # a decimal: a number
    embedded.expect(PROMPT)
    embedded.sendline(".mode markdown")
    embedded.expect(PROMPT)
    embedded.sendline(sql)
    embedded.expect_exact("| r_regionkey | r_name |")
    embedded.expect_exact("|---:|---|")
    embedded.expect_exact("| 0 | AFRICA |")
    embedded.expect(PROMPT)
    embedded.sendline(".mode")
    embedded.expect_exact("mode: markdown (choices: table, csv, json, markdown)")
    embedded.expect(PROMPT)
    embedded.sendline(".mode xml")
    embedded.expect_exact("error: unknown mode 'xml'; choose from table, csv, json, markdown")
    embedded.expect(PROMPT)


def test_output_to_a_file_and_back_and_the_timer(embedded: pexpect.spawn, tmp_path: Path) -> None:
    out = tmp_path / "regions.csv"
    embedded.sendline(".mode csv")
    embedded.expect(PROMPT)
    embedded.sendline(".maxrows 2")  # the terminal's cap; a file gets every row
    embedded.expect(PROMPT)
    embedded.sendline(f".output {out}")
    embedded.expect_exact(f"results: to {out}")
    embedded.expect(PROMPT)
    embedded.sendline("SELECT r_name FROM region ORDER BY 1;")
    embedded.expect_exact(f"(5 rows written to {out})")
    embedded.expect(r"Time: \d+\.\d+ s")
    embedded.expect(PROMPT)
    embedded.sendline(".output")
    embedded.expect_exact("results: back to the terminal")
    embedded.expect(PROMPT)
    assert out.read_text().splitlines() == [
        '"r_name"',
        '"AFRICA"',
        '"AMERICA"',
        '"ASIA"',
        '"EUROPE"',
        '"MIDDLE EAST"',
    ]
    embedded.sendline(".timer off")
    embedded.expect(PROMPT)
    embedded.sendline("SELECT count(*) AS n FROM region;")
    embedded.expect_exact("(1 row)")
    embedded.expect(PROMPT)
    assert "Time:" not in (embedded.before or "")
    embedded.sendline(".timer on")
    embedded.expect(PROMPT)
    embedded.sendline("SELECT count(*) AS n FROM region;")
    embedded.expect(r"Time: \d+\.\d+ s")
    embedded.expect(PROMPT)


def test_completion_knows_where_the_cursor_is(embedded: pexpect.spawn) -> None:
    embedded.send(".ti")  # a command
    embedded.send("\t")
    embedded.expect("mer")
    embedded.send(" of")  # its argument
    embedded.send("\t")
    embedded.expect("f")
    embedded.send("\r")
    embedded.expect(PROMPT)
    # after FROM only tables: "ord" is orders, not the keyword ORDER
    embedded.send("SELECT count(*) AS n FROM ord")
    embedded.send("\t")
    embedded.expect("ers")
    embedded.send(" o\r")
    embedded.expect(r"\.\.\.>")
    # the alias of the line before: its table's columns
    embedded.send("WHERE o.o_orderpri")
    embedded.send("\t")
    embedded.expect("ority")
    embedded.send(" = '1-URGENT';\r")
    embedded.expect(r"\b\d{4}\b")  # 1-URGENT orders among 15,000
    embedded.expect_exact("(1 row)")
    embedded.expect(PROMPT)
    assert "Time:" not in (embedded.before or "")  # .timer off, completed above


def _catalog_shell() -> Shell:
    def table(agency: str, name: str, *cols: str) -> TableInfo:
        return TableInfo(agency, "main", name, pa.schema([(c, pa.int64()) for c in cols]))

    tables = [
        table("trade", "orders", "o_orderkey", "o_custkey"),
        table("registry", "customer", "c_custkey", "c_name"),
        table("registry", "nation", "n_nationkey", "n_name"),
    ]
    return Shell(None, str, _tables=tables)  # type: ignore[arg-type]


def test_completion_candidates() -> None:
    sh = _catalog_shell()
    # only the columns of the tables the statement names (text after the cursor too)
    assert sh.complete("SELECT c_", after=" FROM customer") == ("c_", ["c_custkey", "c_name"])
    assert sh.complete("SELECT n_", after=" FROM customer") == ("n_", [])
    assert "n_name" in sh.complete("SELECT n_")[1]  # no FROM yet: every table's columns
    assert sh.complete("SELECT * FROM orders o JOIN cu") == ("cu", ["customer"])
    assert sh.complete("SELECT * FROM nation, reg")[1] == ["registry.customer", "registry.nation"]
    assert sh.complete("WHERE c.c_n", earlier="SELECT * FROM customer c") == (
        "c.c_n",
        ["c.c_name"],
    )
    assert sh.complete("SELECT * FROM orders WHERE o_c") == ("o_c", ["o_custkey"])
    assert sh.complete("select * from orders wh") == ("wh", ["when", "where"])
    assert sh.complete(".describe registry.n") == ("registry.n", ["registry.nation"])
    assert sh.complete(".explain SELECT * FROM ord") == ("ord", ["orders"])


# -- the purpose ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """One agency that refuses queries without a purpose (require_purpose = true)."""
    work = tmp_path_factory.mktemp("strict")
    (work / "data").mkdir()
    (work / "data" / "visits.csv").write_text("region,visits\nnorth,3\nsouth,4\n")
    toml = write_agency_toml(work / "health.toml", "health", "files", work / "data")
    toml.write_text(toml.read_text().replace("[backend]", "require_purpose = true\n\n[backend]"))
    with LocalFederation(work, [toml], users='[user.alice]\nroles = ["analyst"]\n') as local:
        yield local


def _purposes(local: LocalFederation) -> list[str]:
    log = local.work / "health-audit.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [r["purpose"] for r in lines if r.get("outcome") == "ok" and "purpose" in r]


def test_purpose_unlocks_an_agency_that_requires_one(
    strict: LocalFederation, tmp_path: Path
) -> None:
    child = spawn(["shell", "-c", str(strict.config_path), "--user", "alice"], tmp_path)
    try:
        child.sendline("SELECT sum(visits) AS v FROM visits;")
        child.expect(r"error: [^\r\n]*requires a purpose[^\r\n]*\(in the shell: \.purpose TEXT\)")
        child.expect(PROMPT)
        child.sendline(".purpose")
        child.expect_exact("no purpose set; .purpose TEXT sets one")
        child.expect(PROMPT)
        child.sendline(".purpose regional statistics, 2025")
        child.expect_exact("purpose: regional statistics, 2025 (sent with every query)")
        child.expect(PROMPT)
        child.sendline("SELECT sum(visits) AS v FROM visits;")
        child.expect(r"\b7\b")
        child.expect_exact("(1 row)")
        child.expect(PROMPT)
        child.sendline(".purpose")
        child.expect_exact("purpose: regional statistics, 2025")
        child.expect(PROMPT)
    finally:
        child.close(force=True)
    # --purpose, here with piped statements
    done = subprocess.run(
        [FEDSQL, "shell", "-c", str(strict.config_path), "--purpose", "from the flag"],
        input="SELECT count(*) AS n FROM visits;\n",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "(1 row)" in done.stdout, done.stderr
    assert _purposes(strict)[-2:] == ["regional statistics, 2025", "from the flag"]


class _Bearer(flight.ServerMiddleware):  # type: ignore[misc]
    def sending_headers(self) -> dict[str, str]:
        return {"authorization": "Bearer token"}


class _Recorder(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Every call's method and x-fedsql-purpose header."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> _Bearer:
        self.calls.append((info.method.name, (headers.get(PURPOSE_HEADER) or [None])[0]))
        return _Bearer()


class _SignIn(flight.ServerAuthHandler):  # type: ignore[misc]
    def authenticate(self, outgoing: object, incoming: object) -> None:
        pass

    def is_valid(self, token: bytes) -> str:
        return ""


class FakeService(flight.FlightServerBase):  # type: ignore[misc]
    """A plaintext Flight SQL stand-in that answers every query with 42."""

    ANSWER = pa.table({"answer": [42]})

    def __init__(self) -> None:
        self.recorder = _Recorder()
        super().__init__(
            "grpc+tcp://127.0.0.1:0", auth_handler=_SignIn(), middleware={"rec": self.recorder}
        )

    def list_actions(self, context: object) -> list[tuple[str, str]]:
        return []

    def get_flight_info(self, context: object, descriptor: flight.FlightDescriptor) -> object:
        ep = flight.FlightEndpoint(b"answer", [])
        return flight.FlightInfo(self.ANSWER.schema, descriptor, [ep], 1, -1)

    def do_get(self, context: object, ticket: flight.Ticket) -> object:
        return flight.RecordBatchStream(self.ANSWER)

    def do_action(self, context: object, action: flight.Action) -> list[bytes]:
        return [b"[]"]  # fedsql.list_queries: none


@pytest.fixture
def fake_service() -> Iterator[FakeService]:
    server = FakeService()
    yield server
    server.shutdown()


def test_remote_shell_sends_the_purpose_with_every_call(
    fake_service: FakeService, tmp_path: Path
) -> None:
    password = tmp_path / "pw"
    password.write_text("secret\n")
    url = f"grpc+tcp://127.0.0.1:{fake_service.port}"
    args = ["shell", "--url", url, "--user", "alice", "--password-file", str(password)]
    child = spawn([*args, "--purpose", "first purpose"], tmp_path)
    try:
        child.sendline("SELECT answer FROM anywhere;")
        child.expect_exact("42")
        child.expect(PROMPT)
        before = len(fake_service.recorder.calls)
        child.sendline(".purpose zweite Prüfung, 5%")
        child.expect(PROMPT)
        child.sendline("SELECT answer FROM anywhere;")
        child.expect_exact("42")
        child.expect(PROMPT)
        child.sendline(".quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    calls = fake_service.recorder.calls
    methods = {m for m, _ in calls}
    assert {"HANDSHAKE", "LIST_ACTIONS", "GET_FLIGHT_INFO", "DO_GET", "DO_ACTION"} <= methods
    # The service records a call when it ends, possibly after the shell's prompt: so
    # the first purpose is on every call up to some point at or past ``before``, and
    # the second on every call after it.
    purposes = [p for _, p in calls]
    new = "zweite Pr%C3%BCfung, 5%25"
    assert new in purposes, calls
    switch = purposes.index(new)
    assert switch >= before and before > 0, (before, calls)
    assert all(p == "first purpose" for p in purposes[:switch]), calls
    assert all(p == new for p in purposes[switch:]), calls
    assert unquote(new) == "zweite Prüfung, 5%"


# -- `fedsql shell --url` problems, told apart ----------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_problems_say_what_is_wrong(
    service: LocalService, fake_service: FakeService, tmp_path: Path
) -> None:
    password = service.config.parent / "alice.password"
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    ca = ["--ca", str(service.ca)]
    cases = {
        f"grpc+tcp://127.0.0.1:{_free_port()}": (
            [],
            "nothing is listening at 127.0.0.1:",
        ),
        f"grpc+tcp://127.0.0.1:{service.port}": (
            [],
            "closed the plaintext connection: it speaks TLS (the default): use grpc+tls://",
        ),
        f"grpc+tls://127.0.0.1:{fake_service.port}": (
            ca,
            "does not speak TLS (it runs with [service] insecure = true?): use grpc+tcp://",
        ),
        service.url: (
            [],
            "TLS certificate is not trusted (unable to get local issuer certificate): "
            "give --ca FILE",
        ),
        f"grpc+tcp://127.0.0.1:{silent.getsockname()[1]}": (
            ["--connect-timeout", "1"],
            "within 1 s: the host is unreachable, or a firewall drops the traffic",
        ),
        "grpc+tls://no-such-host.invalid:8815": (
            ["--connect-timeout", "5"],
            "unknown host 'no-such-host.invalid'",
        ),
    }
    procs = {
        url: subprocess.Popen(
            [FEDSQL, "shell", "--url", url, "--user", "alice", "--password-file", str(password)]
            + extra,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for url, (extra, _) in cases.items()
    }
    try:
        for url, proc in procs.items():
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 1, (url, err)
            assert err.startswith(f"error: {url}: cannot connect: "), err
            assert cases[url][1] in err, err
            assert "Could not finish writing" not in err and "Traceback" not in err
    finally:
        silent.close()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_connector_only_install_says_which_extra_the_shell_needs(
    tpch_local: LocalFederation, tmp_path: Path
) -> None:
    """Without prompt_toolkit (``pip install fedsql[connector]`` alone), the shell on a
    terminal says what to install in one line, not a traceback."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['prompt_toolkit'] = None\n")
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(site), TERM="xterm")
    args = ["shell", "-c", str(tpch_local.config_path), "--user", "alice"]
    child = pexpect.spawn(FEDSQL, args, env=env, encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    child.close()
    out = child.before or ""
    assert "pip install 'fedsql[coordinator]'" in out and "prompt_toolkit" in out, out
    assert "Traceback" not in out and child.exitstatus == 1
