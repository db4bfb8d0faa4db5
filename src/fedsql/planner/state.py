"""What the cut knows while it works: fragments so far, and, per fragment, the facts
the rules after it need (its residual alias per scope, its outputs and their types,
a size estimate, semi-join and scalar-value candidates). One value per ``plan()``,
passed explicitly to every rule; nothing global.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from fedsql import names
from fedsql.capabilities import Capabilities, TypeOf
from fedsql.catalog import TableRef
from fedsql.planner.model import KeySlot, RemoteQuery
from fedsql.planner.resolve import table_ref
from fedsql.planner.rules import flatten

NO_CAPABILITIES = Capabilities(frozenset())  # an agency not in the catalog: nothing

TableSource = tuple[str, exp.Table, TableRef]  # (alias, node, what it is)


@dataclass
class CutState:
    tree: exp.Query  # the query being cut: it becomes the residual
    caps: dict[str, Capabilities]  # agency -> what its backend runs as DuckDB does
    scan_only: frozenset[str]  # agencies that get plain table scans only
    type_of: TypeOf = field(init=False)
    fragments: list[RemoteQuery] = field(default_factory=list)
    whole_query: bool = False  # one fragment is the whole query
    ids: Iterator[int] = field(default_factory=itertools.count)
    consumed: set[int] = field(default_factory=set)  # scopes absorbed into a fragment
    # residual alias -> fragment, per scope (id of the Scope)
    scope_frags: dict[int, dict[str, str]] = field(default_factory=dict)
    # each fragment's outputs: name -> the expression in its own tree
    outputs: dict[str, dict[str, exp.Expr]] = field(default_factory=dict)
    types: dict[str, dict[str, pa.DataType]] = field(default_factory=dict)  # output types
    est: dict[str, float] = field(default_factory=dict)  # estimated rows it returns
    whole: set[str] = field(default_factory=set)  # fragments of a whole, unfiltered table
    # semi-join candidates: (build, probe, slot, forced)
    edges: list[tuple[str, str, KeySlot, bool]] = field(default_factory=list)
    # (fragment, its conjunct with subquery i as column __fedsql_scalar_i, the
    # subqueries in the tree): scalar-value candidates, resolved once all is cut
    scalars: list[tuple[str, exp.Expr, list[exp.Subquery]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.type_of = column_types(self.tree)


def caps_of(st: CutState, agency: str) -> Capabilities:
    return st.caps.get(agency, NO_CAPABILITIES)


def new_id(st: CutState) -> str:
    return names.fragment(next(st.ids))


def index_of(st: CutState, fid: str | None) -> int | None:
    return next((i for i, f in enumerate(st.fragments) if f.id == fid), None)


def tables_of(scope: Scope) -> list[TableSource]:
    """The federated base tables a scope's FROM and JOINs read."""
    out = []
    for alias, (_node, source) in scope.selected_sources.items():
        if isinstance(source, exp.Table) and (ref := table_ref(source)) is not None:
            out.append((alias, source, ref))
    return out


def numeric(t: pa.DataType | None) -> bool:
    return t is not None and (
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    )


def home_scope(scope: Scope, col: exp.Column) -> Scope | None:
    """The scope whose FROM defines the source that ``col`` (external to ``scope``) reads."""
    s = scope.parent
    while s is not None:
        if col.table in s.selected_sources or col.table in s.sources:
            return s
        s = s.parent
    return None


def lone_left_join(select: exp.Select) -> str | None:
    """The right table's alias when the SELECT is ``FROM a LEFT JOIN b ON ...`` alone."""
    joins = select.args.get("joins") or []
    if len(joins) != 1:
        return None
    j = joins[0]
    if (j.side or "").upper() != "LEFT" or (j.kind or "").upper() not in ("", "OUTER"):
        return None
    if j.args.get("using") or not isinstance(j.this, exp.Table):
        return None
    return str(j.this.alias_or_name)


def inner_joins_only(select: exp.Select) -> bool:
    for j in select.args.get("joins") or []:
        if (j.side or "") or (j.kind or "").upper() not in ("", "INNER", "CROSS"):
            return False
        if j.args.get("using") or j.method or not isinstance(j.this, (exp.Table, exp.Subquery)):
            return False
    from_ = select.args.get("from_")
    return from_ is None or isinstance(from_.this, (exp.Table, exp.Subquery))


def column_types(tree: exp.Expr) -> TypeOf:
    """A column's Arrow type when its table alias is a federated table (for the
    capabilities that depend on types: ordering text)."""
    schemas = {
        t.alias_or_name.lower(): ref.arrow_schema
        for t in tree.find_all(exp.Table)
        if (ref := table_ref(t)) is not None
    }

    def type_of(col: exp.Column) -> pa.DataType | None:
        schema = schemas.get(col.table.lower())
        if schema is None:
            return None
        name = col.name.lower()
        return next((f.type for f in schema if f.name.lower() == name), None)

    return type_of


def drop_true(tree: exp.Expr) -> exp.Expr:
    """Remove the TRUE left where pushed conjuncts were: ``x AND TRUE`` → ``x``."""
    true = exp.true()
    changed = True
    while changed:
        changed = False
        for node in list(tree.find_all(exp.And, exp.Paren)):
            if isinstance(node, exp.Paren):
                if node.this == true:
                    node.replace(exp.true())
                    changed = True
                    break
            elif isinstance(node, exp.And) and (node.left == true or node.right == true):
                node.replace(node.right if node.left == true else node.left)
                changed = True
                break
    for where in list(tree.find_all(exp.Where)):
        if where.this == true:
            where.pop()
    return tree


def rename_to_remote(tree: exp.Expr) -> None:
    for t in tree.find_all(exp.Table):
        ref = table_ref(t)
        if ref is not None:
            to_remote(t, ref)


def to_remote(table: exp.Table, ref: TableRef) -> None:
    """Name a table as its connector exposes it (no agency; schema only if not default)."""
    table.set("catalog", None)
    table.set("db", exp.to_identifier(ref.schema, quoted=True) if ref.schema else None)
    table.set("this", exp.to_identifier(ref.name, quoted=True))


def conjuncts(node: exp.Expr | None) -> list[exp.Expr]:
    if node is None:
        return []
    return flatten(node.this if isinstance(node, exp.Where) else node, exp.And)


def unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node
