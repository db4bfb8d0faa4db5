"""The one rewrite: each table reference becomes a view applying the caller's policy.

>>> import sqlglot, pyarrow as pa
>>> from fedsql.policy.model import Mask, Policy, RowFilter
>>> pol = Policy((Mask("p", "ssn", "redact"),), (RowFilter("p", "region <> 'x'"),))
>>> schema = pa.schema([("id", pa.int64()), ("ssn", pa.string()), ("region", pa.string())])
>>> tree = sqlglot.parse_one("SELECT ssn FROM p WHERE ssn LIKE '1%'")
>>> view = lambda t: view_for(pol.for_table("p", ()), t.name, schema)
>>> print(apply_views(tree, view).sql(pretty=True))
SELECT
  ssn
FROM (
  SELECT
    id,
    CASE WHEN ssn IS NULL THEN NULL ELSE '***' END AS ssn,
    region
  FROM p
  WHERE
    region <> 'x'
  OFFSET 0
) AS p
WHERE
  ssn LIKE '1%'

``OFFSET 0`` is the barrier: no engine may move a condition of the outer query
below a LIMIT/OFFSET (it would change the result), so nothing the analyst wrote
runs on a row before the row filter has removed it or a value before its mask
(PostgreSQL's planner documents this as its optimization fence, allpaths.c
``subquery_is_pushdown_safe``; DuckDB keeps the streaming limit). Without it, a
condition that fails on some values (an overflow, a failed cast) could be
evaluated on hidden rows first, and its error would tell that they exist.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import sqlglot
from sqlglot import exp

from fedsql.policy.masks import mask_sql
from fedsql.policy.model import TablePolicy


def view_for(
    policy: TablePolicy, table_sql: str, schema: pa.Schema, source: exp.Expr | None = None
) -> exp.Select | None:
    """``SELECT <masked columns> FROM <source> WHERE <filters>`` or None when no rule applies.

    Column names and order stay those of the table, so the view drops in for it.
    """
    if not policy:
        return None
    projs: list[exp.Expr] = []
    for f in schema:
        col = exp.column(f.name, quoted=not f.name.islower() or not f.name.isidentifier())
        m = policy.masks.get(f.name.lower())
        projs.append(exp.alias_(mask_sql(m, col, f.type), col.this.copy()) if m else col)
    src = source if source is not None else exp.to_table(table_sql)
    view = exp.select(*projs).from_(src)
    if policy.filters:
        conds = [sqlglot.parse_one(f.sql, read="duckdb") for f in policy.filters]
        view = view.where(exp.and_(*conds))
    return view.offset(0)  # the barrier (see above)


def apply_views(tree: exp.Expr, view: Callable[[exp.Table], exp.Select | None]) -> exp.Expr:
    """Replace every table for which ``view`` returns a query by that query, aliased
    as the table was (or by its name), so the rest of the query reads masked values."""
    for table in list(tree.find_all(exp.Table)):
        v = view(table)
        if v is None:
            continue
        alias = table.args.get("alias")
        alias = (
            alias.copy()
            if alias is not None
            else exp.TableAlias(this=exp.to_identifier(table.name))
        )
        table.replace(exp.Subquery(this=v, alias=alias))
    return tree
