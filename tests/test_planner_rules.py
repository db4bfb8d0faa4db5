"""Golden fixtures per planner rule, without a single process: each
``tests/fixtures/rules/<rule>/<case>.sql`` (its first lines may name a static
catalog, ``-- catalog: tpch-mixed``; default tpch) is planned and its
``explain()`` compared with ``<case>.plan`` beside it. A new case is two files;
``FEDSQL_REGOLD=1`` writes the .plan files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from catalogs import load

from fedsql.planner import plan

RULES = Path(__file__).parent / "fixtures" / "rules"
CASES = sorted(p.relative_to(RULES).with_suffix("").as_posix() for p in RULES.glob("*/*.sql"))


@pytest.mark.parametrize("case", CASES)
def test_rule_fixture(case: str) -> None:
    sql = (RULES / f"{case}.sql").read_text()
    m = re.search(r"^-- catalog: (\S+)", sql, re.M)
    got = plan(sql, load(m.group(1) if m else "tpch")).explain() + "\n"
    path = RULES / f"{case}.plan"
    if os.environ.get("FEDSQL_REGOLD") or not path.exists():
        path.write_text(got)
    assert got == path.read_text()


def test_every_rule_has_fixtures() -> None:
    rules = {p.name for p in RULES.iterdir() if p.is_dir()}
    assert all(any((RULES / r).glob("*.plan")) for r in rules)
    assert {"cut", "eager_aggregate", "semi_join", "scalar_values", "derive_duplicates"} <= rules
