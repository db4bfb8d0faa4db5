"""Rules that make a parsed query valid for planning: names resolved, shapes normalised.

Each rule takes an expression and returns one; the catalog is the explicit context.
"""

from __future__ import annotations

from sqlglot import exp

from fedsql import lang
from fedsql.catalog import Catalog, TableRef
from fedsql.errors import PlanError
from fedsql.policy.model import Policy, TablePolicy

AGENCY_META = "fedsql_table"
# The federation's own policy for this principal on this table (a TablePolicy).
COORD_POLICY_META = "fedsql_coordinator_policy"


def resolve_tables(
    tree: exp.Expr, catalog: Catalog, policy: Policy | None = None, roles: tuple[str, ...] = ()
) -> exp.Expr:
    """Name every base table as ``agency.schema.table`` (catalog.db.this), aliased.

    The original alias (or the table's own name) stays the alias, so column
    references keep working. Names are bound by scope (``fedsql.lang.bind``): a
    name that is a CTE where it stands is left alone; any other must be a table
    of the catalog.

    >>> from fedsql.catalog import Catalog
    >>> from fedsql.wire import RemoteCatalog, RemoteTable
    >>> import pyarrow as pa, sqlglot
    >>> t = RemoteTable("", "orders", pa.schema([("o_id", pa.int64())]), 10)
    >>> cat = Catalog({"trade": RemoteCatalog("trade", "0", "duckdb", (t,))})
    >>> resolve_tables(sqlglot.parse_one("SELECT o_id FROM orders"), cat).sql()
    'SELECT o_id FROM "trade"."main"."orders" AS orders'
    """

    def lookup(table: exp.Table) -> TableRef:
        parts = [p.name for p in (table.args.get("catalog"), table.args.get("db"), table.this) if p]
        return catalog.resolve(parts)

    try:
        bindings = lang.bind(tree, lookup)
    except lang.Refused as e:
        raise PlanError(str(e)) from None
    for b in bindings:
        if b.kind == "cte":
            continue
        table, ref = b.table, b.target
        assert isinstance(ref, TableRef)
        alias = table.alias or table.name
        table.set("this", exp.to_identifier(ref.name, quoted=True))
        table.set("db", exp.to_identifier(ref.schema_key, quoted=True))
        table.set("catalog", exp.to_identifier(ref.agency, quoted=True))
        if not table.args.get("alias"):
            table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
        table.meta[AGENCY_META] = ref
        if policy:
            tp = policy.for_table(ref.qualified, roles)
            if not tp and ref.schema:
                tp = policy.for_table(f"{ref.agency}.{ref.name}", roles)
            if tp:
                table.meta[COORD_POLICY_META] = tp
    return tree


def coordinator_policy(table: exp.Table) -> TablePolicy | None:
    tp = table.meta.get(COORD_POLICY_META)
    return tp if isinstance(tp, TablePolicy) else None


def table_ref(table: exp.Table) -> TableRef | None:
    ref = table.meta.get(AGENCY_META)
    return ref if isinstance(ref, TableRef) else None


def exists_select_one(tree: exp.Expr) -> exp.Expr:
    """``EXISTS (SELECT * ...)`` → ``EXISTS (SELECT 1 ...)``: no column is needed.

    >>> import sqlglot
    >>> exists_select_one(sqlglot.parse_one("SELECT 1 WHERE EXISTS (SELECT * FROM t)")).sql()
    'SELECT 1 WHERE EXISTS(SELECT 1 FROM t)'
    """
    for node in tree.find_all(exp.Exists):
        q = node.this
        if isinstance(q, exp.Subquery):
            q = q.this
        if (
            isinstance(q, exp.Select)
            and not q.args.get("group")
            and not q.args.get("distinct")
            and all(isinstance(p, exp.Star) for p in q.expressions)
        ):
            q.set("expressions", [exp.Literal.number(1)])
    return tree


def sqlglot_schema(catalog: Catalog) -> dict[str, object]:
    """The catalog as sqlglot's nested mapping (agency → schema → table → column → type)."""
    out: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for t in catalog.tables:
        cols = {f.name: "UNKNOWN" for f in t.arrow_schema}
        # DuckDB names ignore case (qualify folds them): key tables the same way
        out.setdefault(t.agency.lower(), {}).setdefault(t.schema_key.lower(), {})[
            t.name.lower()
        ] = cols
    return dict(out)
