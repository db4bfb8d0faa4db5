"""One meaning for a policy on every backend (issue 17: "the same filter means
something else on PostgreSQL").

Filters are written in DuckDB's SQL. Transpiled naively, ``substr(x, -4)``
returns the whole string on PostgreSQL, ``LIKE 'Small\\_%'`` escapes with a
backslash there only, ``lower()`` of non-ASCII text depends on the server's
locale. Each filter and mask below is evaluated by every backend's connector
(DuckDB, files, SQLite, PostgreSQL at initdb's default locale) and must keep
exactly the rows and values a single DuckDB keeps with the same policy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fedsql
from fedsql.local import LocalFederation, write_agency_toml
from fedsql.pgserver import PostgresServer

ROWS = [
    (1, "NID-0001-5555", "Small_box", "Ärger"),
    (2, "NID-0002-1234", "Small\\_box", "ärger"),
    (3, "NID-0003-5555", "Smallxbox", "Arger"),
    (4, "5555", "small_box", "ÉCOLE"),
    (5, "555", "Large_box", "école"),
    (6, None, None, None),
    (7, "NID-0007-0007", "Small%", "straße"),
    (8, "NID-0008-9999", "", "STRASSE"),
]
SCHEMA = pa.schema(
    [("id", pa.int32()), ("nid", pa.string()), ("code", pa.string()), ("name", pa.string())]
)
# table → (row filter, masks): each a policy whose meaning a transpiler could change
POLICIES = {
    "neg_substr": ("substr(nid, -4) <> '5555'", {}),
    "like_escape": ("code LIKE 'Small\\_%'", {}),  # DuckDB: no escape character
    "like_escape_explicit": ("code LIKE 'Small!_%' ESCAPE '!'", {}),
    "unicode_lower": ("lower(name) <> 'ärger'", {}),
    "unicode_upper": ("upper(name) LIKE 'É%' OR upper(name) = 'STRASSE'", {}),
    "nulls": ("NOT (code = 'Small_box')", {}),  # NULL code: hidden on both
    "masked": ("id > 0", {"nid": "partial", "name": "redact", "code": "hash"}),
}
AGENCIES = ["duck", "files", "lite", "pg"]
HASH_KEY = "0123456789abcdef0123456789abcdef"


def _policy_toml(table: str) -> str:
    where, masks = POLICIES[table]
    q = "'''"  # a TOML literal string: the filter's backslashes stay as written
    out = f'\n[[row_filter]]\ntable = "{table}"\nwhere = {q}{where}{q}\n'
    for col, rule in masks.items():
        out += f'\n[[mask]]\ntable = "{table}"\ncolumn = "{col}"\nrule = "{rule}"\n'
    return out


def _table() -> pa.Table:
    return pa.Table.from_pylist([dict(zip(SCHEMA.names, r, strict=True)) for r in ROWS], SCHEMA)


@pytest.fixture(scope="module")
def meaning(
    tmp_path_factory: pytest.TempPathFactory, pg_server_default_locale: PostgresServer
) -> Iterator[fedsql.Federation]:
    work = tmp_path_factory.mktemp("meaning")
    data = _table()
    policy = "".join(_policy_toml(t) for t in POLICIES)
    key = work / "hash.key"
    key.write_text(HASH_KEY + "\n")
    extra = policy
    db = work / "duck.duckdb"
    con = duckdb.connect(str(db))
    con.register("d", data)
    for t in POLICIES:
        con.execute(f"CREATE TABLE {t} AS SELECT * FROM d")
    con.close()
    (work / "files").mkdir()
    for t in POLICIES:
        pq.write_table(data, work / "files" / f"{t}.parquet")
    lite = work / "lite.sqlite"
    s = sqlite3.connect(lite)
    for t in POLICIES:
        s.execute(f"CREATE TABLE {t} (id INTEGER, nid TEXT, code TEXT, name TEXT)")
        s.executemany(f"INSERT INTO {t} VALUES (?, ?, ?, ?)", ROWS)
    s.commit()
    s.close()
    dsn = pg_server_default_locale.create_database("meaning")
    import adbc_driver_postgresql.dbapi as pgdb

    with pgdb.connect(dsn) as c:
        with c.cursor() as cur:
            for t in POLICIES:
                cur.execute(f"CREATE TABLE {t} (id INTEGER, nid TEXT, code TEXT, name TEXT)")
                cur.adbc_ingest(t, data, mode="append")
        c.commit()
    pg_extra = extra.replace("[[row_filter]]", "allow_writable_role = true\n\n[[row_filter]]", 1)
    tomls = [
        write_agency_toml(work / "duck.toml", "duck", "duckdb", db, extra),
        write_agency_toml(work / "files.toml", "files", "files", work / "files", extra),
        write_agency_toml(work / "lite.toml", "lite", "sqlite", lite, extra),
        write_agency_toml(work / "pg.toml", "pg", "postgres", dsn, pg_extra),
    ]
    for toml in tomls:  # [connector] hash_key_file: the federation's key, for hash masks
        toml.write_text(
            toml.read_text().replace("[backend]", f'hash_key_file = "{key}"\n\n[backend]')
        )
    with LocalFederation(work, tomls) as local, fedsql.connect(local.config_path) as fed:
        yield fed


def _oracle(table: str) -> list[tuple[object, ...]]:
    """What one DuckDB keeps of the rows under the filter (masks compared apart)."""
    con = duckdb.connect()
    con.register("d", _table())
    where, _ = POLICIES[table]
    return sorted(con.sql(f"SELECT id FROM d WHERE {where}").fetchall())


@pytest.mark.parametrize("table", list(POLICIES))
def test_a_filter_keeps_the_same_rows_on_every_backend(
    meaning: fedsql.Federation, table: str
) -> None:
    want = _oracle(table)
    for agency in AGENCIES:
        got = sorted(meaning.sql(f"SELECT id FROM {agency}.{table}").to_pylist(), key=str)
        assert [(r["id"],) for r in sorted(got, key=lambda r: r["id"])] == want, agency


def test_masks_give_the_same_values_on_every_backend(meaning: fedsql.Federation) -> None:
    sql = "SELECT id, nid, code, name FROM {}.masked ORDER BY id"
    want = meaning.sql(sql.format("duck")).to_pylist()
    assert want and all(r["name"] != ROWS[r["id"] - 1][3] or r["name"] is None for r in want)
    for agency in AGENCIES[1:]:
        assert meaning.sql(sql.format(agency)).to_pylist() == want, agency
    # and pushed conditions over masked values agree too
    for cond in ("nid LIKE '%5555'", "length(code) > 10", "name = '***'"):
        q = f"SELECT count(*) AS n FROM {{}}.masked WHERE {cond}"
        counts = {a: meaning.sql(q.format(a)).to_pylist()[0]["n"] for a in AGENCIES}
        assert len(set(counts.values())) == 1, (cond, counts)
