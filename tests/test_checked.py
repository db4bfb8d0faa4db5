"""The connector keeps what it found about fragments it accepted (connectors/checked.py):
keyed by everything the check reads, bounded, never a refusal, never across roles,
key-set names or coordinators."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsql.connectors.checked import Checker
from fedsql.connectors.duckdb import open_duckdb
from fedsql.connectors.execution import FragmentRunner
from fedsql.errors import RefusedFragment
from fedsql.lockdown import open_locked
from fedsql.lru import Lru
from fedsql.policy.model import Mask, Policy, RowFilter

POLICY = Policy(
    masks=(Mask("people", "name", "redact", unless_role=("auditor",)),),
    row_filters=(RowFilter("people", "region <> 'north'", unless_role=("auditor",)),),
)
SQL = "SELECT name, count(*) AS n FROM people GROUP BY name"
NONE: frozenset[str] = frozenset()


@pytest.fixture
def checker(tmp_path: Path) -> Checker:
    db = tmp_path / "a.duckdb"

    def load(con) -> None:  # type: ignore[no-untyped-def]
        con.execute("CREATE TABLE people (id INT, name VARCHAR, region VARCHAR)")
        con.execute("INSERT INTO people VALUES (1, 'Ann', 'north'), (2, 'Bob', 'south')")

    open_locked(db, setup=load).close()
    backend = open_duckdb(db, None)
    tables = {t.full_name.lower(): t for t in backend.tables()}
    return Checker(tables, backend.default_schemas, POLICY, FragmentRunner(backend, None))


def test_a_fragment_checked_once_is_kept(checker: Checker) -> None:
    first = checker.check(SQL, NONE, (), "c")
    again = checker.check(SQL, NONE, (), "c")
    assert first.tree is not None and again.tree is None  # kept without its tree
    assert (again.sql, again.tables, again.columns, again.masks, again.covered) == (
        first.sql,
        first.tables,
        first.columns,
        first.masks,
        first.covered,
    )
    assert again.names == first.names and "people" in again.names
    assert len(checker.kept) == 1


def test_roles_choose_their_own_check(checker: Checker) -> None:
    masked = checker.check(SQL, NONE, ("analyst",), "c")
    exempt = checker.check(SQL, NONE, ("auditor",), "c")
    assert masked.sql is not None and exempt.sql is not None
    assert "north" in masked.sql and "north" not in exempt.sql
    assert masked.covered == {"people"} and exempt.covered == frozenset()
    assert checker.check(SQL, NONE, ("analyst",), "c").sql == masked.sql
    assert checker.check(SQL, NONE, ("auditor",), "c").sql == exempt.sql
    assert len(checker.kept) == 2


def test_key_set_names_are_part_of_what_is_checked(checker: Checker) -> None:
    sql = "SELECT id FROM people JOIN __fedsql_keys0 ON __fedsql_keys0.k = people.id"
    assert checker.check(sql, frozenset({"__fedsql_keys0"}), (), "c").sql is not None
    with pytest.raises(RefusedFragment, match="not exposed"):
        checker.check(sql, NONE, (), "c")  # the same text, no key set shipped


def test_kept_per_coordinator(checker: Checker) -> None:
    checker.check(SQL, NONE, (), "c1")
    checker.check(SQL, NONE, (), "c2")
    assert len(checker.kept) == 2


def test_a_refused_fragment_is_checked_every_time(checker: Checker) -> None:
    for _ in range(2):
        with pytest.raises(RefusedFragment, match="read_csv"):
            checker.check("SELECT * FROM read_csv('/etc/passwd')", NONE, (), "c")
    assert len(checker.kept) == 0


def test_a_backend_that_does_not_run_fragments_as_written_checks_every_call(
    checker: Checker,
) -> None:
    checker._runner._native = False  # SQLite, PostgreSQL: their SQL holds the keys' values
    assert checker.check(SQL, NONE, (), "c").sql is None
    assert checker.check(SQL, NONE, (), "c").tree is not None
    assert len(checker.kept) == 0


def test_what_is_kept_is_bounded() -> None:
    lru: Lru[str] = Lru(max_entries=3, max_chars=25)
    for i in range(5):
        lru.put(i, str(i), 10)
    assert len(lru) == 2 and lru.get(4) == "4" and lru.get(2) is None
    lru.put("big", "x", 26)  # more than all it may hold: nothing of it stays
    assert len(lru) == 0
