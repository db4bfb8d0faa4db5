"""``plan()``: a tuple of small rules, applied in order to one :class:`Planning`.

Each rule takes the planning state and returns it (sqlglot's optimizer is the
model): parse and refuse what is outside the language, resolve names and
annotate policies, normalize, cut into the largest single-agency pieces (with
the per-SELECT rules of ``cut.SELECT_RULES``: eager aggregation, distinct at
the source, semi-join candidates; compute at the source inside ``push_group``),
then choose semi-joins (``cost.py`` decides), scalar values, derive duplicate
fragments, and finish the residual.

>>> import pyarrow as pa
>>> from fedsql.catalog import Catalog
>>> from fedsql.wire import RemoteCatalog, RemoteTable
>>> t = RemoteTable("", "orders", pa.schema([("o_id", pa.int64()), ("c", pa.int64())]), 10)
>>> c = RemoteTable("", "customer", pa.schema([("c_id", pa.int64())]), 10)
>>> cat = Catalog({"trade": RemoteCatalog("trade", "0", "duckdb", (t,)),
...                "registry": RemoteCatalog("registry", "0", "duckdb", (c,))})
>>> p = plan("SELECT count(*) FROM orders JOIN customer ON c = c_id", cat)
>>> [(f.agency, f.kind) for f in p.fragments]
[('trade', 'table'), ('registry', 'table')]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import build_scope
from sqlglot.schema import MappingSchema

from fedsql import lang
from fedsql.catalog import Catalog
from fedsql.errors import CatalogError, PlanError
from fedsql.lang import DIALECT
from fedsql.planner.cut import cut_scope
from fedsql.planner.derive_duplicates import derive_coarser
from fedsql.planner.model import Plan
from fedsql.planner.parse import agency_of, column_error, declared_names, parse, policy_notes
from fedsql.planner.partial import push_partial_aggregates
from fedsql.planner.resolve import exists_select_one, resolve_tables, sqlglot_schema
from fedsql.planner.rules import drop_inferred, factor_or, infer_equalities
from fedsql.planner.scalar_values import scalar_values
from fedsql.planner.semi_join import choose_semi_joins
from fedsql.planner.shape import ShapeBinder
from fedsql.planner.state import CutState, drop_true
from fedsql.policy.model import Policy


@dataclass
class Planning:
    """One query on its way to a :class:`Plan` (the context every rule gets)."""

    sql: str
    catalog: Catalog
    binder: ShapeBinder | None = None
    policy: Policy | None = None
    roles: tuple[str, ...] = ()
    scan_only: frozenset[str] = frozenset()
    tree: exp.Query | None = None
    declared: tuple[str, ...] | None = None  # output names, when the query spells them
    notes: tuple[str, ...] = ()  # policies met, for explain
    cut: CutState | None = None
    residual: str | None = None

    @property
    def st(self) -> CutState:
        assert self.cut is not None, "the cut has not run"
        return self.cut


Rule = Callable[[Planning], Planning]


def parse_and_refuse(p: Planning) -> Planning:
    p.tree = parse(p.sql)  # bounded, one SELECT, in the fragment language
    p.declared = declared_names(p.tree, p.catalog)
    return p


def resolve_and_annotate(p: Planning) -> Planning:
    assert p.tree is not None
    resolve_tables(p.tree, p.catalog, p.policy, p.roles)
    p.notes = policy_notes(p.tree)
    return p


def normalize(p: Planning) -> Planning:
    """Qualify every name, and the rewrites that only make cutting easier or
    cheaper: EXISTS (SELECT 1 ...), partial aggregates through UNION ALL of
    agencies, common factors of ORs, implied equalities."""
    assert p.tree is not None
    exists_select_one(p.tree)
    before = p.tree.copy()  # for a column error's suggestions
    schema = MappingSchema(sqlglot_schema(p.catalog), dialect=DIALECT, normalize=False)
    try:
        tree = qualify(
            p.tree,
            schema=schema,
            dialect=DIALECT,
            validate_qualify_columns=True,
            quote_identifiers=True,
            identify=False,
        )
    except OptimizeError as e:
        raise CatalogError(column_error(str(e), before)) from None
    assert isinstance(tree, exp.Query)
    push_partial_aggregates(tree, agency_of)
    factor_or(tree)
    infer_equalities(tree)
    p.tree = tree
    return p


def cut(p: Planning) -> Planning:
    assert p.tree is not None
    caps = {a: c.capabilities for a, c in p.catalog.catalogs.items()}
    p.cut = CutState(p.tree, caps, p.scan_only)
    root = build_scope(p.tree)
    if root is None:
        raise PlanError("cannot plan this query")
    cut_scope(p.cut, root)
    return p


def semi_joins(p: Planning) -> Planning:
    choose_semi_joins(p.st)
    return p


def scalars(p: Planning) -> Planning:
    scalar_values(p.st)
    return p


def duplicates(p: Planning) -> Planning:
    if not p.st.whole_query:
        assert p.tree is not None
        p.st.fragments = derive_coarser(p.st.fragments, p.tree)
    return p


def finish(p: Planning) -> Planning:
    """The residual, checked to read only this query's fragments."""
    if not p.st.whole_query:
        assert p.tree is not None
        residual = drop_true(drop_inferred(p.tree))
        reads_only_fragments(residual, {f.id for f in p.st.fragments})
        p.residual = residual.sql(dialect=DIALECT, copy=False)
    return p


RULES: tuple[Rule, ...] = (
    parse_and_refuse,
    resolve_and_annotate,
    normalize,
    cut,
    semi_joins,
    scalars,
    duplicates,
    finish,
)


def plan(
    sql: str,
    catalog: Catalog,
    binder: ShapeBinder | None = None,
    policy: Policy | None = None,
    roles: tuple[str, ...] = (),
    scan_only: frozenset[str] = frozenset(),
) -> Plan:
    """Plan one query against the federation's catalog.

    ``binder`` (built from the same catalog) supplies the result's column names;
    ``policy`` is the federation's own masks and row filters, for ``roles``;
    ``scan_only``: agencies that get plain table scans (their backend could not
    run what they were sent).
    """
    p = Planning(sql, catalog, binder, policy, roles, scan_only)
    for rule in RULES:
        p = rule(p)
    if p.declared is not None:
        names = p.declared
    else:
        names = tuple(binder.output_names(sql)) if binder is not None else ()
    return Plan(tuple(f.written() for f in p.st.fragments), p.residual, names, p.notes)


def reads_only_fragments(residual: exp.Expr, fragment_ids: set[str]) -> None:
    """The merge engine sees only this query's fragment results: every table the
    residual reads binds, by scope, to one of them (or to its own CTEs)."""

    def lookup(table: exp.Table) -> object:
        if table.args.get("db") is None and table.name in fragment_ids:
            return table.name
        raise PlanError(f"internal error: the residual would read {table.sql(dialect=DIALECT)}")

    try:
        lang.bind(residual, lookup)
    except lang.Refused as e:
        raise PlanError(f"internal error: the residual does not bind: {e}") from None


__all__ = ["RULES", "Planning", "parse", "plan"]
