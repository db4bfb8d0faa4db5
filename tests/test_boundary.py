"""Issue 13: the boundary between analysts and raw data, held by canaries.

A red team read raw masked values and hidden rows. Each observation of that
report is a test here, on every backend where it applies (duck, files, lite,
lite_local, pg: see tests/canary_env.py), as a raw hostile coordinator (signed
gRPC straight to a connector), as an analyst through the embedded coordinator,
and through ``fedsql serve``. A test asserts the *right* outcome: no marker in
any value, column name or error, no Python exception text, and either a clean
refusal naming the construct (``INVALID_ARGUMENT``/``PERMISSION_DENIED`` from a
connector, a ``FedSQLError`` at the coordinator) or the correct masked answer.

1. Syntax riding on a table reference (PIVOT/UNPIVOT, samples, parenthesised
   joins, time travel) must not run inside the policy view.
2. CTE names bind per scope: a CTE defined somewhere else does not make a name
   (an unexposed table, a file path, a catalog view) readable.
3. Key-set probes are checked like the rest of the fragment.
4. The coordinator's merge DuckDB reads no file and runs only allowed functions.
5. Inputs nested thousands deep are refused before any parser recurses; the
   process lives and keeps serving others.
6. What runs is what was checked; resource hogs are refused or limited.
7. Every Execute leaves exactly one audit line, and errors carry no Python text.

Fair share and default limits need a connector of their own (a few slots, slow
batches): the ``slow`` federation at the end of the file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
from canary_env import AGENCIES, Answer, CanaryEnv, canary_env  # noqa: F401

from fedsql.channels import open_channel
from fedsql.config import ClientTLS, ConnectorRef, Limits, load_agency
from fedsql.connectors.metrics import TEST_DELAY_ENV
from fedsql.local import COORDINATOR, LocalConnector, local_pki, start_connector
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import ipc_chunks_to_reader

ALL = list(AGENCIES)
SQLITE_PG = [a for a, k in AGENCIES.items() if k in ("sqlite", "postgres")]
REFUSED = ("INVALID_ARGUMENT", "PERMISSION_DENIED")
# What a Python exception looks like when it reaches a client.
PY_TEXT = re.compile(
    r"Traceback|File \"|\b(RecursionError|AttributeError|KeyError|TypeError|ValueError|"
    r"IndexError|AssertionError|NameError|RuntimeError|UnboundLocalError|ZeroDivisionError|"
    r"NotImplementedError|StopIteration)\b|maximum recursion depth|zip\(\) argument|"
    r"object has no attribute|object is not (subscriptable|iterable|callable)|"
    r"unexpected keyword argument|Exception iterating responses|Exception calling application"
)
SCOPE = ("not exposed", "scope")  # how a refused unbound name is named


# -- how an outcome is judged ------------------------------------------------------------


def judge(
    env: CanaryEnv,
    ans: Answer,
    sql: str,
    where: str,
    words: tuple[str, ...],
    correct: Callable[[pa.Table], None] | None = None,
) -> None:
    """No leak, no Python text; then a refusal naming one of ``words`` or, when
    ``correct`` is given, an answer it accepts."""
    leaked = env.leaks(ans.text, sql)
    assert not leaked, f"{where}: markers {leaked} leaked for {sql[:300]!r}:\n{ans.text[:1500]}"
    assert not PY_TEXT.search(ans.text), (
        f"{where}: Python exception text for {sql[:200]!r}:\n{ans.text[:1500]}"
    )
    if ans.ok:
        assert correct is not None, (
            f"{where}: answered {sql[:300]!r} instead of refusing it "
            f"(naming {' or '.join(words)}):\n{ans.text[:800]}"
        )
        assert ans.table is not None
        correct(ans.table)
        return
    assert ans.error is not None
    if where.startswith("connector"):
        assert ans.kind in REFUSED, (
            f"{where}: {sql[:200]!r} failed with {ans.kind}, not a refusal "
            f"({' or '.join(REFUSED)}): {ans.error[:500]}"
        )
    low = ans.error.lower()
    assert any(w.lower() in low for w in words), (
        f"{where}: the refusal of {sql[:200]!r} does not name {' or '.join(words)}: "
        f"{ans.kind}: {ans.error[:500]}"
    )


def rows(n: int) -> Callable[[pa.Table], None]:
    def check(t: pa.Table) -> None:
        assert t.num_rows == n, f"{t.num_rows} rows, the masked answer has {n}:\n{t.to_pylist()}"

    return check


def scalar(v: object) -> Callable[[pa.Table], None]:
    def check(t: pa.Table) -> None:
        got = t.column(0).to_pylist()
        assert got == [v], f"answer {got}, the masked answer is [{v!r}]"

    return check


def analyst(env: CanaryEnv, sql: str, user: str = "alice") -> Answer:
    """The embedded coordinator; an exception other than FedSQLError fails the test
    (a RecursionError or a crash is not a refusal)."""
    try:
        return env.analyst_answer(sql, user)
    except Exception as e:  # noqa: BLE001 - the point is to name it
        raised = f"{type(e).__name__}: {str(e)[:300]}"
    pytest.fail(f"the embedded coordinator raised {raised} for {sql[:200]!r}", pytrace=False)


def raw(env: CanaryEnv, agency: str, sql: str, **kw: Any) -> Answer:
    return env.coordinator_answer(agency, sql, **kw)


def keys(*values: str) -> dict[str, pa.Table]:
    return {"__fedsql_keys0": pa.table({"k": pa.array(list(values), pa.string())})}


def subqueries(depth: int) -> str:
    """``SELECT x FROM (SELECT x FROM (... SELECT 1 AS x ...))``: 16 bytes a level."""
    return "SELECT x FROM (" * depth + "SELECT 1 AS x" + ")" * depth


def parens(depth: int) -> str:
    return "SELECT " + "(" * depth + "1" + ")" * depth + " AS x"


@pytest.fixture(scope="module")
def env(canary_env: CanaryEnv) -> CanaryEnv:  # noqa: F811
    return canary_env


# -- 1. syntax riding on a table reference -----------------------------------------------

V = 5  # visible people per agency (canary_env.N_VISIBLE)
UNPIVOT_RAW = "SELECT region FROM {t} UNPIVOT (region FOR name IN (name, region))"
UNPIVOT_COUNT = "SELECT count(*) AS n FROM {t} UNPIVOT (region FOR name IN (name, region))"
UNPIVOT_HMAC = (
    "SELECT national_id FROM {t} UNPIVOT (region FOR national_id IN "
    '(national_id AS "cnry_guess_one", region AS "cnry_guess_two"))'
)
PIVOT = "SELECT * FROM {t} PIVOT (first(name) FOR region IN ('secret' AS region, 'north' AS name))"


def _guesses_only(t: pa.Table) -> None:
    """UNPIVOT applied over the masked view: the name column holds the aliases."""
    rows(2 * V)(t)
    got = t.column(0).to_pylist()
    assert set(got) <= {"cnry_guess_one", "cnry_guess_two"}, f"{got}: the UNPIVOT did not run"


def _pivot_over_masked(t: pa.Table) -> None:
    """PIVOT over the masked, filtered view: no 'secret' row is left to pivot."""
    assert t.num_rows == V, f"{t.num_rows} rows, the masked answer has {V}"
    region = t.column("region").to_pylist()
    assert set(region) == {None}, f"column region is {region}: the PIVOT did not run"


SYNTAX: list[tuple[str, str, tuple[str, ...], Callable[[pa.Table], None] | None]] = [
    ("unpivot-raw", UNPIVOT_RAW, ("UNPIVOT",), rows(2 * V)),
    ("unpivot-count", UNPIVOT_COUNT, ("UNPIVOT",), scalar(2 * V)),
    ("unpivot-hmac-oracle", UNPIVOT_HMAC, ("UNPIVOT",), _guesses_only),
    ("pivot", PIVOT, ("PIVOT",), _pivot_over_masked),
    (
        "tablesample",
        "SELECT count(*) AS n FROM {t} TABLESAMPLE 100 PERCENT (bernoulli)",
        ("SAMPLE",),
        scalar(V),
    ),
    (
        "using-sample",
        "SELECT count(*) AS n FROM {t} USING SAMPLE 100 PERCENT (bernoulli)",
        ("SAMPLE",),
        scalar(V),
    ),
    (
        "paren-join",
        "SELECT count(*) AS n FROM ({t} AS p JOIN {v} AS v ON v.person_id = p.id)",
        ("JOIN", "parenthes"),
        scalar(6),
    ),
    # The ON clause must see the masked name (it starts with '*'), not the raw one.
    (
        "paren-join-oracle",
        "SELECT count(*) AS n FROM ({t} AS p JOIN (SELECT person_id AS pid FROM {v}) AS v "
        "ON pid = id AND name LIKE 'cnry%')",
        ("JOIN", "parenthes"),
        scalar(0),
    ),
    (
        "time-travel",
        "SELECT name FROM {t} AT (VERSION => 1)",
        ("VERSION", "time travel", "historical", "AT ("),
        None,
    ),
]


@pytest.mark.parametrize("agency", ALL)
@pytest.mark.parametrize("case", SYNTAX, ids=[c[0] for c in SYNTAX])
def test_syntax_on_a_table_reference_at_the_connector(
    env: CanaryEnv, agency: str, case: tuple[Any, ...]
) -> None:
    _, template, words, correct = case
    sql = template.format(t="people", v="visits")
    judge(env, raw(env, agency, sql), sql, f"connector {agency}", words, correct)


@pytest.mark.parametrize("agency", ALL)
@pytest.mark.parametrize("case", SYNTAX, ids=[c[0] for c in SYNTAX])
def test_syntax_on_a_table_reference_at_the_coordinator(
    env: CanaryEnv, agency: str, case: tuple[Any, ...]
) -> None:
    _, template, words, correct = case
    sql = template.format(t=f"{agency}.people", v=f"{agency}.visits")
    judge(env, analyst(env, sql), sql, f"analyst ({agency})", words, correct)


@pytest.mark.parametrize("agency", ["duck", "lite_local", "pg"])
@pytest.mark.parametrize("case", SYNTAX[:4], ids=[c[0] for c in SYNTAX[:4]])
def test_syntax_on_a_table_reference_through_the_service(
    env: CanaryEnv, agency: str, case: tuple[Any, ...]
) -> None:
    _, template, words, correct = case
    sql = template.format(t=f"{agency}.people", v=f"{agency}.visits")
    judge(env, env.service_answer(sql), sql, f"service ({agency})", words, correct)


def test_the_auditor_still_gets_raw_values(env: CanaryEnv) -> None:
    """The canaries are live: the role that may see raw values does (else every
    other test here would pass vacuously)."""
    got = env.coordinator("duck", "SELECT name FROM people", roles=("auditor",), user="bob")
    assert "cnry_raw_name_duck_1" in got and "cnry_hidden_name_duck_1" in got, got
    assert env.leaks(got)
    masked = env.coordinator("duck", "SELECT * FROM people")
    assert not env.leaks(masked) and masked.count("\n") == V, masked


# -- 2. CTE names bind per scope ---------------------------------------------------------


def _nested_cte(name: str, tail: str = "") -> str:
    return f'WITH z AS (WITH "{name}" AS (SELECT 1) SELECT 1) SELECT * FROM "{name}"{tail}'


def _cte_names(env: CanaryEnv, agency: str) -> list[tuple[str, str]]:
    """(id, name) pairs: unexposed tables, host files (relative to the connector's
    working directory and absolute), the files backend's own raw Parquet, catalogs."""
    assert env.files_dir is not None
    absd = env.host_dirs["abs"]
    out = [("salaries", "salaries"), ("marker-table", f"cnry_tbl_{agency}")]
    out += [(f"host.{k}", f"host.{k}") for k in ("csv", "json", "jsonl", "parquet")]
    out += [(f"abs-host.{k}", str(absd / f"host.{k}")) for k in ("csv", "json", "jsonl", "parquet")]
    out += [("files-raw-parquet", str(env.files_dir / "people.parquet"))]
    out += [(n, n) for n in ("duckdb_settings", "duckdb_databases", "sqlite_master")]
    out += [(n, n) for n in ("pg_settings", "pg_roles")]
    return out


CTE_IDS = [
    "salaries",
    "marker-table",
    "host.csv",
    "host.json",
    "host.jsonl",
    "host.parquet",
    "abs-host.csv",
    "abs-host.json",
    "abs-host.jsonl",
    "abs-host.parquet",
    "files-raw-parquet",
    "duckdb_settings",
    "duckdb_databases",
    "sqlite_master",
    "pg_settings",
    "pg_roles",
]


@pytest.mark.parametrize("agency", ALL)
@pytest.mark.parametrize("target", CTE_IDS)
def test_a_cte_in_another_scope_binds_nothing_at_the_connector(
    env: CanaryEnv, agency: str, target: str
) -> None:
    name = dict(_cte_names(env, agency))[target]
    # Alone, and beside an exposed table (so that a SQLite/PostgreSQL agency
    # computes it in the node's own DuckDB, where a path names a file).
    for sql in (_nested_cte(name), _nested_cte(name, ", people")):
        judge(env, raw(env, agency, sql), sql, f"connector {agency}", SCOPE)


SCOPE_TRICKS = [
    # a CTE inside a derived table, the name used outside it
    "SELECT * FROM (WITH salaries AS (SELECT 1 AS x) SELECT x FROM salaries) AS t, salaries",
    # a CTE defined after the sibling that uses it (not visible there in DuckDB)
    "WITH a AS (SELECT * FROM salaries), salaries AS (SELECT 1 AS x) SELECT * FROM a",
    # a CTE inside a scalar subquery
    "SELECT (WITH salaries AS (SELECT 1 AS x) SELECT max(x) FROM salaries) AS one, * FROM salaries",
    # inside an IN subquery
    "SELECT * FROM salaries WHERE 1 IN (WITH salaries AS (SELECT 1 AS x) SELECT x FROM salaries)",
]


@pytest.mark.parametrize("agency", ALL)
@pytest.mark.parametrize("sql", SCOPE_TRICKS, ids=["derived", "sibling-later", "scalar", "in"])
def test_cte_scope_variants_at_the_connector(env: CanaryEnv, agency: str, sql: str) -> None:
    judge(env, raw(env, agency, sql), sql, f"connector {agency}", SCOPE)


def test_unexposed_schema_and_table_are_refused(env: CanaryEnv) -> None:
    for agency in ALL:
        for sql in (
            "SELECT * FROM salaries",
            "SELECT * FROM hr.salaries",
            f"SELECT * FROM cnry_tbl_{agency}",
            "SELECT * FROM main.salaries",
            "SELECT * FROM information_schema.tables",
        ):
            judge(env, raw(env, agency, sql), sql, f"connector {agency}", SCOPE)


def _coordinator_paths(env: CanaryEnv) -> list[str]:
    assert env.files_dir is not None
    absd = env.host_dirs["abs"]
    return [str(absd / f"host.{k}") for k in ("csv", "json", "jsonl", "parquet")] + [
        str(env.files_dir / "people.parquet")
    ]


def test_the_coordinator_reads_no_file_through_a_cte_name(env: CanaryEnv) -> None:
    for path in _coordinator_paths(env) + ["host.csv", "salaries", "duckdb_settings"]:
        sql = _nested_cte(path)
        judge(env, analyst(env, sql), sql, "analyst", SCOPE + ("unknown table",))


def test_the_service_reads_no_file_through_a_cte_name(env: CanaryEnv) -> None:
    # Relative names resolve in the service's working directory, which holds host files.
    names = [f"host.{k}" for k in ("csv", "json", "jsonl", "parquet")] + _coordinator_paths(env)
    for path in names:
        sql = _nested_cte(path)
        judge(env, env.service_answer(sql), sql, "service", SCOPE + ("unknown table",))


# -- 3. key-set probes -------------------------------------------------------------------

TRICK = "WITH z AS (WITH {n} AS (SELECT 1) SELECT 1) "
PROBE = (
    "SELECT id FROM {outer} WHERE EXISTS "
    "(SELECT 1 FROM __fedsql_keys0 WHERE __fedsql_keys0.k = ({probe}))"
)


def _probes(agency: str) -> list[tuple[str, str, str]]:
    """(id, fragment, the value the probe yields when it reads what it must not)."""
    # People is scanned (as __fedsql_scan1, after visits) but never read by the query:
    # the probe alone consumes that scan.
    scan = (
        "WITH z AS (WITH __fedsql_scan1 AS (SELECT 1) SELECT 1), unused AS (SELECT id FROM people) "
    )
    out = [
        (
            "raw-scan",
            scan + PROBE.format(outer="visits", probe="SELECT max(name) FROM __fedsql_scan1"),
            f"cnry_raw_name_{agency}_5",
        ),
        (
            "raw-scan-direct",
            PROBE.format(outer="visits", probe="SELECT max(name) FROM __fedsql_scan0"),
            f"cnry_raw_name_{agency}_5",
        ),
        (
            "unexposed",
            TRICK.format(n="salaries")
            + PROBE.format(outer="visits", probe="SELECT max(person) FROM salaries"),
            f"cnry_unexposed_{agency}_2",
        ),
        (
            "unexposed-direct",
            PROBE.format(outer="visits", probe="SELECT max(person) FROM salaries"),
            f"cnry_unexposed_{agency}_2",
        ),
        (
            "hidden-rows",
            PROBE.format(
                outer="visits", probe="SELECT max(name) FROM people WHERE region = 'secret'"
            ),
            f"cnry_hidden_name_{agency}_3",
        ),
    ]
    if agency == "pg":
        out += [
            (
                "pg_settings",
                TRICK.format(n="pg_settings")
                + PROBE.format(
                    outer="visits",
                    probe="SELECT max(setting) FROM pg_settings WHERE name = 'application_name'",
                ),
                "cnry_pgappname",
            ),
            (
                "pg_roles",
                TRICK.format(n="pg_roles")
                + PROBE.format(
                    outer="visits",
                    probe="SELECT max(rolname) FROM pg_roles WHERE rolname LIKE 'cnry%'",
                ),
                "cnry_pgrole_marker",
            ),
        ]
    return out


PROBE_IDS = ["raw-scan", "raw-scan-direct", "unexposed", "unexposed-direct", "hidden-rows"]
PROBE_CASES = [(a, p) for a in ALL for p in PROBE_IDS] + [("pg", "pg_settings"), ("pg", "pg_roles")]


@pytest.mark.parametrize(("agency", "probe"), PROBE_CASES, ids=[f"{a}-{p}" for a, p in PROBE_CASES])
def test_key_set_probes_are_checked(env: CanaryEnv, agency: str, probe: str) -> None:
    """A raw coordinator ships a key set holding a guess and probes with a subquery;
    whether rows come back must not depend on what the subquery reads (on SQLite and
    PostgreSQL agencies the node's DuckDB names its raw scans ``__fedsql_scanN``)."""
    _, sql, truth = {p[0]: p for p in _probes(agency)}[probe]
    right = raw(env, agency, sql, key_sets=keys(truth))
    wrong = raw(env, agency, sql, key_sets=keys("cnry_no_such_value"))
    if probe == "hidden-rows":  # reads people: masked and filtered, so never a match
        for a in (right, wrong):
            if a.kind == "FAILED_PRECONDITION":  # declined as unsupported: fine, if clean
                a.kind = "INVALID_ARGUMENT"
                a.error = f"key set: {a.error}"
            judge(env, a, sql, f"connector {agency}", SCOPE + ("key set",), rows(0))
        return
    for a in (right, wrong):
        judge(env, a, sql, f"connector {agency}", SCOPE + ("key set", "probe", "reserved"))
    assert right.text == wrong.text, (
        f"connector {agency}: the answer depends on a value the fragment may not read\n"
        f"guessed right: {right.text[:300]}\nguessed wrong: {wrong.text[:300]}"
    )


def test_key_sets_with_wrong_names_or_shapes_are_refused(env: CanaryEnv) -> None:
    ok = "SELECT id FROM visits WHERE EXISTS (SELECT 1 FROM {n} WHERE {n}.k = visits.person_id)"
    for agency in ALL:
        for name in ("salaries", "people", "__fedsql_scan0", "__fedsql_keys0; DROP"):
            sql = ok.format(n='"' + name + '"')
            a = raw(env, agency, sql, key_sets={name: pa.table({"k": [1, 2]})})
            judge(env, a, sql, f"connector {agency}", ("key set",))
        two = {"__fedsql_keys0": pa.table({"k": [1], "x": [2]})}
        sql = ok.format(n="__fedsql_keys0")
        judge(env, raw(env, agency, sql, key_sets=two), sql, f"connector {agency}", ("key set",))


# -- 4. the coordinator's merge engine ---------------------------------------------------

COORDINATOR_REFUSALS = [
    ("current_setting", "SELECT current_setting('threads') AS s", ("current_setting",)),
    ("current_setting-path", "SELECT current_setting('temp_directory') AS s", ("current_setting",)),
    ("range-scalar", "SELECT range(3) AS r", ("range", "generate_series")),
    ("range-table", "SELECT * FROM range(3)", ("range", "generate_series", "table function")),
    ("generator", "SELECT generator(5) AS g", ("generator", "range")),
    ("getvariable", "SELECT getvariable('x') AS v", ("getvariable",)),
    (
        "duckdb_settings()",
        "SELECT count(*) AS n FROM duckdb_settings()",
        ("duckdb_settings", "table function"),
    ),
    ("read_csv", "SELECT * FROM read_csv('{abs}/host.csv')", ("read_csv", "table function")),
    (
        "read_csv-subquery",
        "SELECT (SELECT count(*) FROM read_csv('{abs}/host.csv')) AS n",
        ("read_csv", "table function"),
    ),
    ("path-identifier", 'SELECT * FROM "{abs}/host.csv"', SCOPE + ("unknown table",)),
    ("path-string", "SELECT * FROM '{abs}/host.parquet'", SCOPE + ("unknown table",)),
    ("relative-path", 'SELECT * FROM "host.csv"', SCOPE + ("unknown table",)),
    (
        "path-beside-a-table",
        "SELECT count(*) AS n FROM duck.people, '{abs}/host.jsonl'",
        SCOPE + ("unknown table",),
    ),
]


@pytest.mark.parametrize(
    "case", [c[1:] for c in COORDINATOR_REFUSALS], ids=[c[0] for c in COORDINATOR_REFUSALS]
)
def test_the_coordinator_refuses_functions_and_paths(env: CanaryEnv, case: tuple[Any, ...]) -> None:
    template, words = case
    sql = template.format(abs=env.host_dirs["abs"])
    judge(env, analyst(env, sql), sql, "analyst", words)
    judge(env, env.service_answer(sql), sql, "service", words)


# -- 6. what runs is what was checked; resource hogs -------------------------------------

HOGS = [
    ("generator", "SELECT generator(5) AS g", ("generator", "range")),
    ("repeat", "SELECT length(repeat('x', 400000000)) AS n", ("repeat", "limit", "max_")),
    (
        "recursive",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT count(*) AS c FROM r",
        ("RECURSIVE",),
    ),
]


@pytest.mark.parametrize("agency", ALL)
@pytest.mark.parametrize("case", HOGS, ids=[c[0] for c in HOGS])
def test_resource_hogs_are_refused_at_the_connector(
    env: CanaryEnv, agency: str, case: tuple[Any, ...]
) -> None:
    _, sql, words = case
    a = raw(env, agency, sql)
    if case[0] == "repeat" and a.kind == "RESOURCE_EXHAUSTED":
        a.kind = "INVALID_ARGUMENT"  # stopped by a [limits] memory/bytes limit: fine too
    judge(env, a, sql, f"connector {agency}", words)


@pytest.mark.parametrize("case", HOGS, ids=[c[0] for c in HOGS])
def test_resource_hogs_are_refused_at_the_coordinator(
    env: CanaryEnv, case: tuple[Any, ...]
) -> None:
    _, sql, words = case
    judge(env, analyst(env, sql), sql, "analyst", words)
    judge(env, env.service_answer(sql), sql, "service", words)


# -- 7. audit lines and error text -------------------------------------------------------


def _audit_once(env: CanaryEnv, agency: str, qid: str, wait: float = 3.0) -> dict[str, Any]:
    end = time.monotonic() + wait
    while True:
        lines = env.audit_for(agency, qid)
        if lines or time.monotonic() > end:
            break
        time.sleep(0.05)
    assert len(lines) == 1, f"{agency}: {len(lines)} audit lines for query {qid}, not one: {lines}"
    return lines[0]


AUDITED = [
    ("ok", "SELECT count(*) AS n FROM people", ("ok",)),
    ("refused", "SELECT * FROM salaries", ("refused",)),
    ("error", "SELECT CAST(name AS INTEGER) AS x FROM people", ("error", "refused")),
    ("deep", subqueries(1000), ("refused",)),
    ("pivot", PIVOT.format(t="people"), ("refused", "ok")),
]


@pytest.mark.parametrize("agency", ALL)
def test_every_execute_leaves_exactly_one_audit_line(env: CanaryEnv, agency: str) -> None:
    for label, sql, outcomes in AUDITED:
        a = raw(env, agency, sql)
        assert a.kind != "UNKNOWN", f"{agency} {label}: gRPC UNKNOWN: {a.error}"
        line = _audit_once(env, agency, a.query_id)
        assert line.get("outcome") in outcomes, f"{agency} {label}: audited {line.get('outcome')}"
        assert not PY_TEXT.search(str(line.get("error", ""))), line
        assert line.get("user") == "alice" and line.get("sql") == sql
    # a refused key set, too
    sql = "SELECT id FROM visits"
    a = raw(env, agency, sql, key_sets={"salaries": pa.table({"k": [1]})})
    assert a.kind in REFUSED
    assert _audit_once(env, agency, a.query_id).get("outcome") == "refused"


@pytest.mark.parametrize("agency", ALL)
def test_depth_1000_is_a_clean_refusal_at_the_connector(env: CanaryEnv, agency: str) -> None:
    for sql in (subqueries(1000), parens(1000)):
        a = raw(env, agency, sql)
        judge(env, a, sql[:60], f"connector {agency}", ("depth", "deep", "nest"))
        assert a.kind == "INVALID_ARGUMENT", a.text[:300]


def test_depth_1000_is_a_clean_refusal_at_the_coordinator(env: CanaryEnv) -> None:
    for sql in (
        subqueries(1000),
        parens(1000),
        f"SELECT count(*) AS n FROM ({subqueries(1000)}) AS t",
    ):
        judge(env, analyst(env, sql), sql[:60], "analyst", ("depth", "deep", "nest"))
        judge(env, env.service_answer(sql), sql[:60], "service", ("depth", "deep", "nest"))


MALFORMED = [
    "",
    ";",
    "SELECT",
    "SELECT 1; SELECT 2",
    "SELECT '",
    "SELECT \x00",
    "SELECT * FROM people WHERE",
    "SELECT national_id FROM people ORDER BY 1 LIMIT -1",
    "WITH z AS (WITH pg_settings AS (SELECT 1) SELECT 1) SELECT * FROM pg_settings",
    "SELECT * FROM people, people, people, people, people, people, people USING SAMPLE 1 ROWS",
    "SELECT CAST(national_id AS DATE) AS d FROM people",
    "SELECT [1, 2][10] AS x",
    "SELECT {'a': 1}.b AS x",
]


@pytest.mark.parametrize("agency", ALL)
def test_errors_carry_no_python_exception_text(env: CanaryEnv, agency: str) -> None:
    for sql in MALFORMED:
        a = raw(env, agency, sql)
        assert a.kind != "UNKNOWN", f"{agency}: gRPC UNKNOWN for {sql!r}: {a.error}"
        assert not PY_TEXT.search(a.text), f"{agency}: Python text for {sql!r}: {a.text[:500]}"
        assert not env.leaks(a.text, sql), f"{agency}: leak for {sql!r}: {a.text[:500]}"
        _audit_once(env, agency, a.query_id)
    bad = {"__fedsql_keys0": b"not arrow"}
    req_sql = "SELECT id FROM visits"
    a = _raw_bytes_key_set(env, agency, req_sql, bad)
    assert a.kind in REFUSED and not PY_TEXT.search(a.text), a.text[:500]


def _raw_bytes_key_set(env: CanaryEnv, agency: str, sql: str, sets: dict[str, bytes]) -> Answer:
    """An Execute whose key set is not an Arrow stream at all."""
    stub, ch = env.open_stub(agency)
    req = pb.ExecuteRequest(
        query_id="cnry-badkeys-" + os.urandom(4).hex(),
        sql=sql,
        principal=pb.Principal(user="alice", roles=["analyst"]),
        key_sets=[pb.KeySet(name=n, arrow_ipc=b) for n, b in sets.items()],
    )
    try:
        list(stub.Execute(req, timeout=10))
        return Answer("ok", None, None, None)
    except grpc.RpcError as e:
        return Answer(f"{e.code().name}: {e.details()}", None, str(e.details()), e.code().name)
    finally:
        ch.close()


# -- the slow federation: fair share and default limits ----------------------------------

SLOW_DELAY = 4.0  # seconds before each record batch: a fragment holds its slot this long
SECOND = "second"  # another coordinator's certificate name


class Slow:
    def __init__(self, work: Path) -> None:
        import duckdb

        from fedsql import certs

        self.work = work
        self.pki = local_pki(work)
        certs.issue(self.pki, "coordinator", SECOND, self.pki)
        got = certs.issue(self.pki, "connector", "slow", self.pki)
        db = work / "slow.duckdb"
        con = duckdb.connect(str(db))
        con.execute("CREATE TABLE people AS SELECT range AS id FROM range(10)")
        con.close()
        self.toml = work / "slow.toml"
        self.toml.write_text(
            f"""[connector]
name = "slow"
listen = "127.0.0.1:0"
audit_log = "slow-audit.jsonl"
allowed_coordinators = ["{COORDINATOR}", "{SECOND}"]
max_concurrent_fragments = 4

[connector.tls]
cert = "{got.cert}"
key = "{got.key}"
client_ca = "{self.pki / certs.CA_CERT}"

[backend]
kind = "duckdb"
path = "{db}"
"""
        )
        self.connector: LocalConnector = start_connector(
            self.toml, env={TEST_DELAY_ENV: str(SLOW_DELAY)}
        )

    def stub(self, coordinator: str = COORDINATOR) -> tuple[pb_grpc.ConnectorStub, grpc.Channel]:
        tls = ClientTLS(
            self.pki / "ca.crt", self.pki / f"{coordinator}.crt", self.pki / f"{coordinator}.key"
        )
        ch, raw_ch = open_channel(ConnectorRef("slow", self.connector.address, False, tls))
        return pb_grpc.ConnectorStub(ch), raw_ch

    def audit(self, qid: str) -> list[dict[str, Any]]:
        path = self.work / "slow-audit.jsonl"
        if not path.exists():
            return []
        return [
            r
            for r in (json.loads(x) for x in path.read_text().splitlines() if x.strip())
            if r.get("query_id") == qid
        ]


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slow]:
    s = Slow(tmp_path_factory.mktemp("slow"))
    yield s
    s.connector.stop()


def _execute(stub: pb_grpc.ConnectorStub, user: str, qid: str, timeout: float = 30.0) -> str:
    req = pb.ExecuteRequest(
        query_id=qid,
        sql="SELECT count(*) AS n FROM people",
        principal=pb.Principal(user=user, roles=["analyst"]),
    )
    try:
        msgs = list(stub.Execute(req, timeout=timeout))
        ipc_chunks_to_reader(m.arrow_ipc for m in msgs if m.arrow_ipc).read_all()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def _hog_then_ask(
    slow: Slow, hogs: list[tuple[str, str]], asker: tuple[str, str]
) -> tuple[dict[str, str], str, float]:
    """``hogs`` (coordinator, user) each send one slow fragment at once; 0.7 s later
    ``asker`` sends one. Returns the hogs' outcomes by query id, the asker's, its seconds."""
    stubs: dict[str, tuple[pb_grpc.ConnectorStub, grpc.Channel]] = {}
    for coord in {c for c, _ in hogs} | {asker[0]}:
        stubs[coord] = slow.stub(coord)
    out: dict[str, str] = {}
    threads = []
    for i, (coord, user) in enumerate(hogs):
        qid = f"hog-{user}-{i}-{os.urandom(3).hex()}"

        def go(qid: str = qid, coord: str = coord, user: str = user) -> None:
            out[qid] = _execute(stubs[coord][0], user, qid)

        threads.append(threading.Thread(target=go))
    for t in threads:
        t.start()
    time.sleep(0.7)
    t0 = time.monotonic()
    mine = _execute(stubs[asker[0]][0], asker[1], f"ask-{asker[1]}-{os.urandom(3).hex()}", 20)
    took = time.monotonic() - t0
    for t in threads:
        t.join(40)
    for _, ch in stubs.values():
        ch.close()
    return out, mine, took


def test_one_user_cannot_take_every_slot(slow: Slow) -> None:
    """mallory sends 6 slow fragments at once to a connector with 4 slots; alice's
    fragment, sent after, must still run (max_fragments_per_user: half the slots by
    default), and mallory's extra ones end busy, each audited once."""
    hogs, mine, took = _hog_then_ask(slow, [(COORDINATOR, "mallory")] * 6, (COORDINATOR, "alice"))
    assert mine == "OK", (
        f"alice's fragment got {mine} after {took:.1f} s while mallory held the slots: {hogs}"
    )
    assert took < SLOW_DELAY + 4, f"alice waited {took:.1f} s"
    busy = [q for q, o in hogs.items() if o != "OK"]
    assert busy and all(hogs[q] in ("RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED") for q in busy), hogs
    for q in hogs:
        lines = slow.audit(q)
        assert len(lines) == 1, (q, lines)
        assert lines[0]["outcome"] in (("busy", "limit") if q in busy else ("ok",)), lines


def test_one_coordinator_cannot_take_every_slot(slow: Slow) -> None:
    """Six users behind one coordinator against 4 slots: another coordinator's
    fragment still runs (max_fragments_per_coordinator: three quarters by default)."""
    users = [(COORDINATOR, f"user{i}") for i in range(6)]
    hogs, mine, took = _hog_then_ask(slow, users, (SECOND, "alice"))
    assert mine == "OK", (
        f"coordinator '{SECOND}' got {mine} after {took:.1f} s while '{COORDINATOR}' "
        f"held the slots: {hogs}"
    )


def test_a_cancelled_fragment_is_audited_once(slow: Slow) -> None:
    stub, ch = slow.stub()
    qid = "cancel-" + os.urandom(4).hex()
    req = pb.ExecuteRequest(
        query_id=qid,
        sql="SELECT id FROM people",
        principal=pb.Principal(user="alice", roles=["analyst"]),
    )
    call = stub.Execute(req, timeout=30)
    time.sleep(1.0)
    call.cancel()
    with pytest.raises(grpc.RpcError):
        list(call)
    ch.close()
    end = time.monotonic() + 5
    while not slow.audit(qid) and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.3)
    lines = slow.audit(qid)
    assert len(lines) == 1 and lines[0]["outcome"] == "cancelled", lines


def test_limits_have_defaults() -> None:
    """A connector with no [limits] still stops a fragment that runs forever or
    grows without bound (14 endless fragments once took every slot)."""
    lim = Limits()
    assert lim.max_seconds is not None and lim.max_seconds <= 300, lim
    assert lim.max_bytes is not None, lim
    assert getattr(lim, "max_memory", None) is not None, lim


def test_new_limits_keys_load(tmp_path: Path) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text(
        '[connector]\nname = "a"\nlisten = "127.0.0.1:0"\ninsecure = true\n'
        "max_concurrent_fragments = 8\n\n"
        f'[backend]\nkind = "files"\npath = "{tmp_path}"\n\n'
        '[limits]\nmax_seconds = 60\nmax_bytes = 1000000\nmax_memory = "1GB"\n'
        "max_fragments_per_user = 2\nmax_fragments_per_coordinator = 5\n"
    )
    lim = load_agency(toml).limits
    assert lim.max_seconds == 60 and lim.max_bytes == 1_000_000
    assert getattr(lim, "max_memory", None) in ("1GB", 1 << 30, 10**9), lim
    assert getattr(lim, "max_fragments_per_user", None) == 2, lim
    assert getattr(lim, "max_fragments_per_coordinator", None) == 5, lim


# -- 5. crashes: deep nesting (last: a crash restarts the process for later tests) -------


def _deep_then_other(
    env: CanaryEnv,
    where: str,
    sql: str,
    deep: Callable[[str], Answer],
    other: Callable[[], Answer],
    proc: subprocess.Popen[bytes],
    revive: Callable[[], None],
) -> None:
    """``deep(sql)`` as one client; 0.3 s later ``other()``, another client on a new
    connection, asks something small. The process must live and answer her within a
    few seconds, and the nested query must get a clean refusal."""
    crashes = len(env.crashes)
    res: dict[str, Answer] = {}
    t = threading.Thread(target=lambda: res.setdefault("a", deep(sql)), daemon=True)
    t.start()
    time.sleep(0.3)
    died_early = proc.poll() is not None
    t0 = time.monotonic()
    second = None if died_early else other()
    took = time.monotonic() - t0
    t.join(10)
    time.sleep(0.3)
    try:
        assert proc.poll() is None and not died_early and len(env.crashes) == crashes, (
            f"{where} died (exit {proc.returncode}) on a {len(sql)}-byte nested query"
        )
        assert second is not None and second.ok and took < 5, (
            f"{where} did not answer another client within 5 s ({took:.1f} s): "
            f"{second.text[:300] if second else ''}"
        )
        a = res.get("a")
        assert a is not None, f"{where}: the nested query got no answer within 10 s"
        judge(env, a, sql[:60], where, ("depth", "deep", "nest", "large", "size"))
    finally:
        revive()


def _connector_deep(env: CanaryEnv, agency: str, sql: str) -> None:
    def revive() -> None:
        if env.connector(agency).proc.poll() is not None or not env.responsive(agency):
            env.restart(agency)

    _deep_then_other(
        env,
        f"connector {agency}",
        sql,
        lambda s: env.coordinator_answer(agency, s, timeout=20),
        lambda: env.coordinator_answer(
            agency, "SELECT count(*) AS n FROM visits", user="carol", timeout=5, fresh_channel=True
        ),
        env.connector(agency).proc,
        revive,
    )


@pytest.mark.parametrize("agency", ALL)
def test_10000_deep_subqueries_do_not_crash_a_connector(env: CanaryEnv, agency: str) -> None:
    _connector_deep(env, agency, subqueries(10_000))


@pytest.mark.parametrize("agency", ALL)
def test_6000_deep_subqueries_do_not_stall_a_connector(env: CanaryEnv, agency: str) -> None:
    _connector_deep(env, agency, subqueries(6_000))


def test_10000_deep_parentheses_do_not_crash_a_connector(env: CanaryEnv) -> None:
    _connector_deep(env, "duck", parens(10_000))


@pytest.mark.parametrize("depth", [10_000, 6_000])
@pytest.mark.parametrize("shape", ["subqueries", "parens"])
def test_deep_nesting_does_not_crash_the_service(env: CanaryEnv, depth: int, shape: str) -> None:
    sql = subqueries(depth) if shape == "subqueries" else parens(depth)
    for user in ("alice", "bob", "carol"):  # signed in before: sign-in has no timeout
        assert env.service_answer("SELECT 1 AS one", user=user).ok

    def revive() -> None:
        if env.service_proc.poll() is not None or not env.service_responsive():
            env.restart("service")

    _deep_then_other(
        env,
        "fedsql serve",
        sql,
        lambda s: env.service_answer(s, timeout=20),
        lambda: env.service_answer("SELECT count(*) AS n FROM duck.visits", user="bob", timeout=5),
        env.service_proc,
        revive,
    )


def test_10000_deep_nesting_does_not_crash_the_embedded_coordinator(env: CanaryEnv) -> None:
    """In a child process: a crash there must not take the test run down."""
    code = (
        "import sys, fedsql\n"
        "from fedsql.errors import FedSQLError\n"
        f"fed = fedsql.connect({str(env.config)!r}, user='alice')\n"
        "sql = 'SELECT x FROM (' * 10000 + 'SELECT 1 AS x' + ')' * 10000\n"
        "try:\n"
        "    fed.sql(sql)\n"
        "    print('ANSWERED')\n"
        "except FedSQLError as e:\n"
        "    print('REFUSED', type(e).__name__, str(e)[:300])\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=env.work,
    )
    assert r.returncode == 0, (
        f"the embedded coordinator died (exit {r.returncode}) on 10,000 nested subqueries: "
        f"{r.stderr[-800:]}"
    )
    assert r.stdout.startswith("REFUSED"), r.stdout[-800:]
    assert not PY_TEXT.search(r.stdout), r.stdout[-800:]
    assert any(w in r.stdout.lower() for w in ("depth", "deep", "nest")), r.stdout[-500:]


def test_metadata_statements_show_no_marker_and_no_filter_condition(env: CanaryEnv) -> None:
    """SHOW, DESCRIBE, EXPLAIN and information_schema are answered at the coordinator
    from alice's catalog: no marker, no table a grant does not open, and no row
    filter's condition (alice is bound by it), through the embedded API and the service."""
    listed = env.analyst_answer(
        "SELECT table_catalog, table_schema, table_name FROM information_schema.tables"
    )
    assert listed.ok and listed.table is not None and listed.table.num_rows, listed.text
    tables = [".".join(r.values()) for r in listed.table.to_pylist()]
    statements = ["SHOW CATALOGS", "SELECT * FROM information_schema.columns"]
    for agency in AGENCIES:
        statements += [f"SHOW SCHEMAS FROM {agency}", f"SHOW TABLES FROM {agency}"]
    for t in tables:
        statements += [f"DESCRIBE {t}", f"EXPLAIN SELECT * FROM {t}"]
    for sql in statements:
        for answer in (env.analyst_answer(sql), env.service_answer(sql)):
            assert answer.ok, (sql, answer.text)
            assert not env.leaks(answer.text, sql), (sql, env.leaks(answer.text, sql))
            assert "'secret'" not in answer.text, (sql, answer.text)  # the filter's literal
