"""The agency scenario: a population registry, a health agency and a tax agency.

People are keyed by national ID in all three. Each agency hashes the ID with the
federation's shared key (so analysts can join across agencies without seeing
an ID), generalises or hides what analysts may not see, and suppresses a small
region; an ``auditor`` role sees raw values. Data is synthetic and
deterministic.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import duckdb

REGIONS = ("North", "South", "East", "West", "Central", "Smallville")
SMALL_REGION = "Smallville"  # few people: suppressed for analysts

_PEOPLE = f"""
CREATE TABLE people AS
SELECT
    printf('NID%09d', i * 7919 % 1000000007) AS national_id,
    (['Anna','Ben','Chloe','David','Emma','Farid','Grace','Hugo','Ines','Jon'])[i % 10 + 1]
        || ' ' || (['Smith','Okafor','Larsen','Novak','Silva','Tanaka'])[i % 6 + 1] AS name,
    DATE '1940-01-01' + CAST((i * 2654435761) % 25000 AS INTEGER) AS birth_date,
    lower((['anna','ben','chloe','david','emma'])[i % 5 + 1]) || i || '@mail.example.org' AS email,
    (i * 31 % 900 + 1) || ' ' || (['Elm','Oak','Pine','Birch'])[i % 4 + 1] || ' Street' AS address,
    CASE WHEN i % 97 = 0 THEN '{SMALL_REGION}'
         ELSE (['North','South','East','West','Central'])[i % 5 + 1] END AS region
FROM range(1, {{n}} + 1) t(i)
"""

_VISITS = f"""
CREATE TABLE visits AS
SELECT
    v AS visit_id,
    printf('NID%09d', (v * 13 % {{n}} + 1) * 7919 % 1000000007) AS national_id,
    DATE '2023-01-01' + CAST(v * 37 % 730 AS INTEGER) AS visit_date,
    (['flu','fracture','checkup','diabetes','asthma','migraine'])[v % 6 + 1] AS diagnosis,
    CAST(40 + (v * 7717 % 5000) / 10.0 AS DECIMAL(10, 2)) AS cost,
    CASE WHEN (v * 13 % {{n}} + 1) % 97 = 0 THEN '{SMALL_REGION}'
         ELSE (['North','South','East','West','Central'])[(v * 13 % {{n}} + 1) % 5 + 1] END
        AS region
FROM range(1, {{n}} * 3 + 1) t(v)
"""

_RETURNS = """
CREATE TABLE tax_returns AS
SELECT
    printf('NID%09d', i * 7919 % 1000000007) AS national_id,
    2024 AS tax_year,
    CAST(12000 + (i * 104729 % 150000) AS DECIMAL(12, 2)) AS income,
    (['Acme Ltd','Globex','Initech','Umbrella','Hooli'])[i % 5 + 1] AS employer
FROM range(1, {n} + 1) t(i)
WHERE i % 4 <> 0
"""

_POLICIES = {
    "registry": """
[[mask]]
table = "people"
column = "national_id"
rule = "hash"
unless_role = ["auditor"]

[[mask]]
table = "people"
column = "name"
rule = "partial"
keep_first = 1
keep_last = 0
unless_role = ["auditor"]

[[mask]]
table = "people"
column = "birth_date"
rule = "year"
unless_role = ["auditor"]

[[mask]]
table = "people"
column = "email"
rule = "email"
unless_role = ["auditor"]

[[mask]]
table = "people"
column = "address"
rule = "redact"
unless_role = ["auditor"]

[[row_filter]]
table = "people"
where = "region <> 'Smallville'"
unless_role = ["auditor"]
""",
    "health": """
[[mask]]
table = "visits"
column = "national_id"
rule = "hash"
unless_role = ["auditor"]

[[mask]]
table = "visits"
column = "visit_date"
rule = "year"
role = ["public"]

[[row_filter]]
table = "visits"
where = "region <> 'Smallville'"
unless_role = ["auditor"]
""",
    "tax": """
[[mask]]
table = "tax_returns"
column = "national_id"
rule = "hash"
unless_role = ["auditor"]

[[mask]]
table = "tax_returns"
column = "income"
rule = "bucket"
width = 10000
unless_role = ["auditor"]

[[mask]]
table = "tax_returns"
column = "employer"
rule = "null"
unless_role = ["auditor"]
""",
}

USERS = """
[user.alice]
roles = ["analyst"]

[user.audrey]
roles = ["auditor"]

[user.pat]
roles = ["public"]
"""


def build(work: Path, people: int = 5000, policies: bool = True) -> list[Path]:
    """Write the three agencies' databases and AGENCY.toml files; returns the tomls.

    ``policies=False`` writes the same agencies without masks or row filters
    (plain federation, the baseline of ``fedsql bench scenario``)."""
    work.mkdir(parents=True, exist_ok=True)
    key = work / "federation.key"
    if not key.exists():
        key.write_text(secrets.token_hex(32) + "\n")
        key.chmod(0o600)
    sql = {"registry": _PEOPLE, "health": _VISITS, "tax": _RETURNS}
    tomls = []
    for agency, create in sql.items():
        db = work / f"{agency}.duckdb"
        if not db.exists():
            con = duckdb.connect(str(db))
            con.execute(create.format(n=people))
            con.close()
        toml = work / (f"{agency}.toml" if policies else f"{agency}-plain.toml")
        toml.write_text(
            f"""[connector]
name = "{agency}"
listen = "127.0.0.1:0"
insecure = true
audit_log = "{agency}{"" if policies else "-plain"}-audit.jsonl"
hash_key_file = "{key.name}"

[backend]
kind = "duckdb"
path = "{db.name}"
{_POLICIES[agency] if policies else ""}"""
        )
        tomls.append(toml)
    return tomls


def raw(work: Path, sql: str) -> list[tuple[object, ...]]:
    """Run ``sql`` on the agencies' raw data (for tests and the demo's explanations)."""
    con = duckdb.connect()
    try:
        for agency in ("registry", "health", "tax"):
            con.execute(f"ATTACH '{work / (agency + '.duckdb')}' AS {agency} (READ_ONLY)")
        con.execute("SET search_path = 'registry,health,tax'")
        return con.execute(sql).fetchall()
    finally:
        con.close()
