"""Self-test of the hostile SQL generator (tests/hostile.py), without any federation.

It must speak DuckDB (most queries parse in DuckDB's own parser, so they reach the
guard and the engines rather than dying at the first token), replay exactly for a
seed (also under another PYTHONHASHSEED), cover every construct family it claims,
and keep a share of benign queries that a plain DuckDB answers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from hostile import FAMILIES, cases, demo_schema, queries

GUESSES = ("cnry_guess_one", "123-45-6789", "o'brien\"x")  # quotes must be escaped
SCHEMAS = {"connector": demo_schema(), "analyst": demo_schema(("duck", "pg", "lite"))}


def _parses(con: duckdb.DuckDBPyConnection, sql: str) -> bool:
    try:
        return len(con.extract_statements(sql)) == 1
    except duckdb.Error:
        return False


@pytest.mark.parametrize("target", sorted(SCHEMAS))
def test_most_queries_parse_in_duckdb(target: str) -> None:
    con = duckdb.connect(":memory:")
    sample = queries(11, 600, SCHEMAS[target], GUESSES)
    bad = [q for q in sample if not _parses(con, q)]
    rate = 1 - len(bad) / len(sample)
    shortest = "\n".join(sorted(bad, key=len)[:5])
    assert rate >= 0.9, f"only {rate:.0%} parse in DuckDB; e.g.\n{shortest}"


@pytest.mark.parametrize("target", sorted(SCHEMAS))
def test_every_family_appears_in_the_first_few_hundred(target: str) -> None:
    seen = Counter(f for c in cases(0, 400, SCHEMAS[target], GUESSES) for f in c.families)
    missing = [f for f in FAMILIES if f not in seen]
    assert not missing, f"families never generated: {missing}"


def test_deterministic_for_a_seed() -> None:
    schema = SCHEMAS["analyst"]
    assert queries(5, 200, schema, GUESSES) == queries(5, 200, schema, GUESSES)
    assert queries(5, 50, schema, GUESSES) != queries(6, 50, schema, GUESSES)


def test_same_queries_under_another_hash_seed() -> None:
    """No set or dict-of-str iteration decides anything: a seed replays in any process."""
    here = Path(__file__).parent
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import hostile; "
        "print(json.dumps(hostile.queries(3, 60, hostile.demo_schema(('a', 'b')), ('g1', 'g2'))))"
    )
    out = [
        subprocess.run(
            [sys.executable, "-c", code, str(here)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert json.loads(out[0]) == json.loads(out[1])
    assert json.loads(out[0]) == queries(3, 60, demo_schema(("a", "b")), ("g1", "g2"))


def test_benign_share_and_benign_queries_run_on_plain_duckdb() -> None:
    """A correct guard answers the benign queries: a plain DuckDB holding the same
    tables does (so a refusal of one is the guard's doing, not the generator's)."""
    con = duckdb.connect(":memory:")
    con.execute(
        "CREATE TABLE people(id BIGINT, name VARCHAR, national_id VARCHAR, email VARCHAR,"
        " region VARCHAR, salary BIGINT, birth_date DATE)"
    )
    con.execute(
        "INSERT INTO people VALUES (1, 'Ann', 'N1', 'a@x.org', 'north', 1000, '1980-01-02'),"
        " (2, 'Bob', 'N2', 'b@x.org', 'south', 2000, '1990-03-04')"
    )
    con.execute("CREATE TABLE visits(id BIGINT, person_id BIGINT, visit_date DATE, note VARCHAR)")
    con.execute("INSERT INTO visits VALUES (1, 1, '2023-03-01', 'flu'), (2, 2, '2023-03-02', 'x')")
    got = cases(2, 400, SCHEMAS["connector"], GUESSES)
    benign = [c for c in got if c.benign]
    assert 0.15 <= len(benign) / len(got) <= 0.4
    failed = []
    for c in benign:
        try:
            con.execute(c.sql).fetchall()
        except duckdb.Error as e:
            failed.append(f"{c.sql}\n  -> {e}")
    assert not failed, "\n".join(failed[:5])


def test_guesses_are_used_and_quoted() -> None:
    got = queries(4, 300, SCHEMAS["connector"], GUESSES)
    text = "\n".join(got)
    assert "cnry_guess_one" in text and "123-45-6789" in text
    assert "'o''brien\"x'" in text or '"o\'brien""x"' in text  # escaped in both quotings


def test_queries_stay_bounded_in_size() -> None:
    got = queries(9, 500, SCHEMAS["analyst"], GUESSES)
    assert max(len(q) for q in got) < 20_000


def test_against_an_unguarded_duckdb_the_queries_do_leak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not vacuous: with no guard (masks as plain views, nothing locked down), the
    generated queries reach host files, unexposed tables and the engine's catalog."""
    import threading

    monkeypatch.chdir(tmp_path)
    (tmp_path / "host.csv").write_text("secret\ncnry_host_file\n")
    con = duckdb.connect(
        ":memory:",
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
    con.execute("CREATE SCHEMA raw")
    con.execute(
        "CREATE TABLE raw.people AS SELECT 1::BIGINT AS id, 'cnry_raw_name' AS name,"
        " 'cnry_raw_nid' AS national_id, 'x@example.org' AS email, 'north' AS region,"
        " 1000::BIGINT AS salary, DATE '1913-07-10' AS birth_date"
    )
    con.execute(
        "CREATE VIEW people AS SELECT id, left(name, 1) AS name, md5(national_id) AS"
        " national_id, email, region, salary // 1000 * 1000 AS salary, date_trunc('year',"
        " birth_date)::DATE AS birth_date FROM raw.people WHERE region <> 'secret'"
    )
    con.execute("CREATE TABLE visits(id BIGINT, person_id BIGINT, visit_date DATE, note VARCHAR)")
    con.execute("CREATE TABLE salaries AS SELECT 'cnry_unexposed' AS person")
    con.execute("CREATE TABLE cnry_named_table(x INTEGER)")  # its name is the marker
    markers = {"cnry_host_file": "host file", "cnry_unexposed": "table", "cnry_named": "catalog"}
    found: set[str] = set()
    schema = dataclasses.replace(SCHEMAS["connector"], paths=("host.csv", "/etc/passwd"))
    for c in cases(1, 1000, schema, GUESSES):
        if c.benign:
            continue
        timer = threading.Timer(2.0, con.interrupt)
        timer.start()
        try:
            text = str(con.execute(c.sql).fetchmany(100))
        except duckdb.Error as e:
            text = str(e)
        finally:
            timer.cancel()
        found.update(kind for m, kind in markers.items() if m in text and m not in c.sql)
    assert found == set(markers.values()), f"only {sorted(found)} leaked without a guard"
