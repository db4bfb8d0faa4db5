"""What runs is what was checked: policy views on bound tables, then the SQL checked again.

After the guard (``guard.py``) has checked and bound a fragment, the connector
replaces each bound reference to an exposed table that has a policy for the
caller by that policy's view; the view reads the *bare* table (nothing that
was attached to the reference comes along: the language has nothing to attach
anyway). The SQL a backend then receives is generated from that tree, and
:func:`verified` parses it back and checks it as if it came from outside:

- it parses back to the very same tree (DuckDB; SQL transpiled to another
  dialect is parsed back with that dialect's parser); a fragment's own
  construct that does not is refused (:class:`fedsql.lang.NotInLanguage`);
- outside the connector's own policy views it is in the fragment language;
- every table it reads binds by scope; an exposed table with a policy for this
  caller is read only as the source of one of its policy views.

So no rewrite after the check (policy views, key sets, local scans) can add a
function, a table or a scan that was not checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlglot import exp

from fedsql import lang
from fedsql.connectors.backend import BackendError
from fedsql.connectors.guard import EXPOSED_META
from fedsql.errors import RefusedFragment
from fedsql.lang.compare import first_difference, same
from fedsql.policy import view_for
from fedsql.policy.model import TablePolicy

log = logging.getLogger(__name__)

# On each Subquery the connector made from a policy: the exposed table's name.
POLICY_VIEW_META = "fedsql_policy_view"
_GENERATED_BYTES = 4 * lang.bounds.MAX_SQL_BYTES  # checked fragments plus policy views


class NotWhatWasChecked(Exception):
    """The SQL about to run is not what was checked (a bug in a rewrite): refuse."""


def apply_policies(
    tree: exp.Expr,
    policy_for: Callable[[str], TablePolicy],
    schema_of: Callable[[str], pa.Schema],
    source_of: Callable[[str], exp.Table],
) -> list[str]:
    """Replace each bound exposed table that has a policy by its view (in place).

    ``source_of(name)``: a fresh, bare table node for the exposed table. Returns
    what was applied ("table.column:rule", "table:row_filter") for the audit log.
    """
    applied: list[str] = []
    for table in list(tree.find_all(exp.Table)):
        name = table.meta.get(EXPOSED_META)
        if name is None:
            continue
        tp = policy_for(name)
        if not tp:
            continue
        applied.extend(f"{name}.{c}:{m.rule}" for c, m in tp.masks.items())
        applied.extend(f"{name}:row_filter" for _ in tp.filters)
        source = source_of(name)
        source.meta[EXPOSED_META] = name
        view = view_for(tp, name, schema_of(name), source=source)
        assert view is not None
        alias = table.args.get("alias")
        alias = (
            alias.copy()
            if alias is not None
            else exp.TableAlias(this=exp.to_identifier(table.name))
        )
        sub = exp.Subquery(this=view, alias=alias.copy())
        sub.meta[POLICY_VIEW_META] = name
        table.replace(sub)
    return applied


def policy_views(tree: exp.Expr) -> list[exp.Select]:
    """The connector's own policy views in ``tree``, as it wrote them."""
    return [s.this for s in tree.find_all(exp.Subquery) if s.meta.get(POLICY_VIEW_META)]


@dataclass(frozen=True, slots=True)
class Target:
    """What the SQL that runs may read."""

    lookup: Callable[[exp.Table], object]  # a table name -> what it is, or raise
    covered: Callable[[object], bool]  # a looked-up table that must be read through a view
    reserved: Callable[[str], bool] = lambda name: False  # names CTEs may not take


def verified(
    tree: exp.Expr,
    target: Target,
    dialect: str | None = None,
    views: Iterable[exp.Select] | None = None,
    kinds: Kinds | None = None,
) -> str:
    """The SQL of ``tree`` in ``dialect``, after checking it as described above.

    ``dialect``: the backend's, for SQL transpiled to it; None: the fragment
    language itself (DuckDB's SQL), which must parse back to the very same tree.
    ``views``: the policy views ``tree`` holds, in ``dialect``'s own parsed form
    when transpiled (default: :func:`policy_views` of ``tree``).
    ``kinds``: for SQL transpiled to another dialect, the node kinds it may hold
    (those of the checked tree it was transpiled from, and what the transpiler
    writes for them) instead of the fragment language, which is DuckDB's.
    """
    written = dialect or lang.DIALECT
    sql = tree.sql(dialect=written)
    try:
        again = lang.parse(sql, "generated fragment", dialect=written, max_bytes=_GENERATED_BYTES)
    except lang.Refused as e:
        raise NotWhatWasChecked(f"the SQL to run does not parse back: {e}") from None
    if dialect is None:
        where = first_difference(tree, again)
        if where is not None:
            _not_the_same(where)
    trusted = list(views if views is not None else policy_views(tree))
    sources: set[int] = set()

    def is_view(sub: exp.Subquery) -> bool:
        if any(same(sub.this, v) for v in trusted):
            from_ = sub.this.args.get("from_")
            if from_ is not None:
                sources.add(id(from_.this))
            return True
        return False

    try:
        if kinds is None:
            lang.check(again, trusted=is_view)
        else:
            _only_kinds(again, kinds, is_view)
        bindings = lang.bind(again, target.lookup, target.reserved)
    except lang.Refused as e:
        raise NotWhatWasChecked(f"the SQL to run fails its check: {e}") from None
    for b in bindings:
        if b.kind == "table" and target.covered(b.target) and id(b.table) not in sources:
            raise NotWhatWasChecked(f"the SQL to run reads {b.table.name} around its policy")
    return sql


Kinds = frozenset[object]  # node classes, and ("function", name) for anonymous calls


def _kind(node: exp.Expr) -> object:
    if isinstance(node, exp.Anonymous):
        return ("function", str(node.name).lower())
    return type(node)


def _not_the_same(where: exp.Expr) -> None:
    """The SQL to run does not parse back to the tree at ``where``: in the
    connector's own policy view, a bug; elsewhere, a construct of the fragment
    that sqlglot cannot write back as it read it (``generator(5)`` comes out as
    ``RANGE(5)``, which means something else): refused."""
    node: exp.Expr | None = where
    while node is not None:
        if isinstance(node, exp.Subquery) and node.meta.get(POLICY_VIEW_META):
            raise NotWhatWasChecked("a policy view does not parse back to itself")
        node = node.parent
    shown = where.sql(dialect="duckdb")
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise lang.NotInLanguage(
        f"the fragment cannot be written back exactly as it was read (at: {shown}); "
        "write it another way"
    )


def kinds_of(tree: exp.Expr, *more: type[exp.Expr]) -> Kinds:
    """The node kinds in ``tree`` (and ``more``): what SQL transpiled from it may hold."""
    return frozenset(_kind(n) for n in tree.walk()) | frozenset(more)


def _only_kinds(tree: exp.Expr, kinds: Kinds, trusted: Callable[[exp.Subquery], bool]) -> None:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, exp.Subquery) and trusted(node):
            continue
        if _kind(node) not in kinds:
            what = node.sql_name() if isinstance(node, exp.Func) else node.key.upper()
            raise lang.NotInLanguage(f"{what} appeared in the transpiled SQL")
        stack.extend(node.iter_expressions())


__all__ = [
    "POLICY_VIEW_META",
    "NotWhatWasChecked",
    "Target",
    "apply_policies",
    "kinds_of",
    "policy_views",
    "verified",
]


def target_table(t: object, kind: str) -> str:
    """The exposed table a binding's target names, if it is of ``kind``."""
    return str(t[1]) if isinstance(t, tuple) and len(t) == 2 and t[0] == kind else ""


def checked_sql(
    tree: exp.Expr,
    target: Target,
    dialect: str | None = None,
    kinds: Any = None,
    transpiled: tuple[type[exp.Expr], ...] = (),
) -> str:
    """:func:`runs.verified`, in the backend's terms (``dialect``: the backend's, for
    SQL transpiled to it; None: the fragment language as written, run by DuckDB). A
    fragment's construct that does not read back is refused; SQL as written that
    fails otherwise is the node's own bug; SQL transpiled to another dialect that
    fails it is something that dialect cannot say the way it was checked:
    unsupported, so a smaller fragment may work."""
    views: list[exp.Select] | None = None
    if dialect is not None:
        try:
            parsed = [
                lang.parse(v.sql(dialect=dialect), "policy view", dialect)
                for v in policy_views(tree)
            ]
        except lang.Refused as e:
            raise BackendError(f"cannot write a policy in {dialect}: {e}", False, True) from None
        views = [v for v in parsed if isinstance(v, exp.Select)]
        if len(views) != len(parsed):
            raise BackendError(
                f"a policy view does not read back as one SELECT in {dialect}", False, True
            )
        if kinds is None:
            kinds = kinds_of(tree, *transpiled)
    try:
        return verified(tree, target, dialect, views, kinds)
    except lang.NotInLanguage as e:  # the fragment's own construct does not read back
        raise RefusedFragment(str(e)) from None
    except NotWhatWasChecked as e:
        log.error("fragment not run (%s): %s", dialect or lang.DIALECT, e)
        if dialect is not None:
            raise BackendError(
                f"the fragment cannot be written in {dialect} as it was checked", False, True
            ) from None
        raise BackendError(
            "the connector could not check the SQL it would run for this fragment "
            "(a fedsql bug; the connector's log has details)",
            user_error=False,
        ) from None
