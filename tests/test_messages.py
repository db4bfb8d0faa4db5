"""Errors that say what is wrong in the query's terms, and what to do (issue 15):
syntax errors with line, column and a caret; unknown columns with the tables
they could have been in and the closest names. No process: a static catalog."""

from __future__ import annotations

import pytest
from catalogs import load

from fedsql.errors import CatalogError, PlanError
from fedsql.planner import plan

CATALOG = load("tpch")


@pytest.mark.parametrize(
    ("sql", "want"),
    [
        (
            "SELECT a FROM orders WHERE",
            "syntax error at line 1, column 22: WHERE needs something after it\n"
            "  SELECT a FROM orders WHERE\n"
            "                       ^",
        ),
        ("SELECT (1 FROM orders", "syntax error at line 1, column 11: expected ) before 'FROM'"),
        ("SELECT a FROM\n orders WHERE x = = 1", "syntax error at line 2, column 19: = needs"),
    ],
)
def test_syntax_errors_say_where(sql: str, want: str) -> None:
    with pytest.raises(PlanError) as info:
        plan(sql, CATALOG)
    msg = str(info.value)
    assert msg.startswith(want), msg
    assert "sqlglot" not in msg and "<class" not in msg and "Required keyword" not in msg


@pytest.mark.parametrize(
    ("sql", "want"),
    [
        (
            "SELECT o_totalpric FROM orders",
            "column 'o_totalpric' is not a column of trade.orders; did you mean o_totalprice?",
        ),
        (
            "SELECT c.o_custkey FROM orders o, customer c",
            "column 'o_custkey' is not a column of registry.customer; did you mean c_custkey?",
        ),
        (
            "SELECT costt FROM orders JOIN customer ON o_custkey = c_custkey",
            "column 'costt' is not a column of registry.customer, trade.orders",
        ),
    ],
)
def test_unknown_columns_name_the_tables_and_suggest(sql: str, want: str) -> None:
    with pytest.raises(CatalogError) as info:
        plan(sql, CATALOG)
    assert str(info.value) == want
