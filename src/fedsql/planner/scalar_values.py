"""Values of uncorrelated scalar subqueries answered by one agency, written into another's fragment.

``o_totalprice > (SELECT max(c_acctbal) * 30 FROM customer)``: the subquery runs
whole at registry (a one-column fragment); its value reaches trade's fragment as
an exact typed literal in a :class:`~fedsql.planner.model.ScalarSlot`
(``render.bind``), so 3.6k rows travel instead of 1.5M. The condition stays in
the residual, and the slot is left out unless exactly one non-NULL value came
back.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from fedsql import names
from fedsql.planner.agency import pushable_to, runnable
from fedsql.planner.model import ScalarSlot
from fedsql.planner.rules import NOT_PUSHABLE
from fedsql.planner.state import CutState, rename_to_remote


def scalar_candidate(
    st: CutState, scope: Scope, conj: exp.Expr, aliases: frozenset[str], agency: str
) -> tuple[exp.Expr, list[exp.Subquery]] | None:
    """A conjunct over these tables and uncorrelated scalar subqueries that each
    run whole at one agency: (it with subquery i as column __fedsql_scalar_i,
    the subqueries)."""
    subs = top_subqueries(conj)
    if not subs:
        return None
    for q in subs:
        up = q.parent
        while up is not None and up is not conj.parent:
            if isinstance(up, (exp.In, exp.Exists, exp.Any, exp.All, exp.AggFunc)):
                return None
            up = up.parent
        sub_scope = next((s for s in scope.subquery_scopes if s.expression is q.this), None)
        if sub_scope is None or pushable_to(st, sub_scope) is None:
            return None
    template = conj.copy()
    for i, q in enumerate(top_subqueries(template)):
        q.replace(exp.column(f"{names.SCALAR}{i}", quoted=True))
    cols = [c for c in template.find_all(exp.Column) if not c.name.startswith(names.SCALAR)]
    if not cols or any(c.table not in aliases for c in cols):
        return None
    if template.find(*NOT_PUSHABLE) is not None or not runnable(st, template, agency):
        return None
    rename_to_remote(template)
    return template, subs


def top_subqueries(node: exp.Expr) -> list[exp.Subquery]:
    """The subqueries in ``node`` that are not inside another of its subqueries."""
    out = []
    for q in node.find_all(exp.Subquery):
        up = q.parent
        while up is not None and up is not node and not isinstance(up, exp.Subquery):
            up = up.parent
        if up is None or up is node:
            out.append(q)
    return out


def scalar_fragment(sub: exp.Subquery) -> str | None:
    """The fragment a (cut) scalar subquery reads whole: ``(SELECT * FROM __fedsql_fN)``."""
    inner = sub.this
    if not isinstance(inner, exp.Select) or len(inner.expressions) != 1:
        return None
    if not isinstance(inner.expressions[0], exp.Star) or inner.args.get("where"):
        return None
    if inner.args.get("joins") or inner.args.get("group") or inner.args.get("limit"):
        return None
    from_ = inner.args.get("from_")
    if from_ is None or not isinstance(from_.this, exp.Table):
        return None
    name = from_.this.name
    return name if names.is_fragment(name) else None


# Expression kinds an agency's DuckDB computes exactly as the coordinator's would,
# without raising errors on rows the coordinator's joins would have dropped.


def scalar_values(st: CutState) -> None:
    """Give each fragment its scalar slots, once every scope is cut (the subqueries
    are fragments by then)."""
    slots: dict[str, list[ScalarSlot]] = {}
    for fid, template, subs in st.scalars:
        found = [scalar_fragment(sub) for sub in subs]
        builds = [b for b in found if b is not None]
        if len(builds) != len(found):
            continue  # a subquery that is not one agency's fragment
        cond = template.copy()
        for col in list(cond.find_all(exp.Column)):
            if col.name.startswith(names.SCALAR):
                build = builds[int(col.name.removeprefix(names.SCALAR))]
                col.replace(exp.column(f"{names.SCALAR}{build}", quoted=True))
        slots.setdefault(fid, []).append(ScalarSlot(cond, tuple(builds)))
    st.fragments = [replace(f, scalars=tuple(slots.get(f.id, ()))) for f in st.fragments]
