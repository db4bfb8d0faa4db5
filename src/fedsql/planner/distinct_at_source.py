"""Drop duplicate rows at the agency where they could only make duplicates (distinct at the source).

Under ``SELECT DISTINCT``, or in the body of an EXISTS or IN subquery (no
aggregates, windows or subqueries), a fragment of an inner join may drop its
duplicate rows at the agency: they could only make duplicate rows, which
DISTINCT removes and existence does not count (TPC-H Q22's orders: 190k rows
become 12.6k).
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from fedsql import names
from fedsql.planner.state import CutState, index_of


def distinct_at_source(st: CutState, scope: Scope, select: exp.Select) -> None:
    """Under ``SELECT DISTINCT``, or in the body of an EXISTS or IN subquery (no
    aggregates, windows or subqueries), a fragment of an inner join may
    drop its duplicate rows at the agency: they could only make duplicate rows,
    which DISTINCT removes and existence does not count (TPC-H Q22's orders)."""
    distinct = select.args.get("distinct")
    in_list = isinstance(select.parent, exp.Subquery) and isinstance(select.parent.parent, exp.In)
    if distinct is None and not (in_list or isinstance(select.parent, exp.Exists)):
        return
    if distinct is not None and distinct.args.get("on") is not None:
        return
    if select.args.get("group") or (
        in_list and (select.args.get("limit") or select.args.get("offset"))
    ):
        return  # which rows a LIMIT keeps for IN would depend on the duplicates
    if any(n is not select for n in select.find_all(exp.AggFunc, exp.Window, exp.Query)):
        return
    for fid in st.scope_frags.get(id(scope), {}).values():
        index = index_of(st, fid)
        assert index is not None
        f = st.fragments[index]
        if f.kind not in ("table", "join") or f.wrap is not None or f.agency in st.scan_only:
            continue
        inner = exp.to_identifier(names.DISTINCT, quoted=True)
        cols = [exp.column(name, table=inner, quoted=True) for name in st.outputs[fid]]
        if not cols:
            continue
        source = exp.Table(this=exp.to_identifier(names.INNER), alias=exp.TableAlias(this=inner))
        wrap = exp.select(*cols).distinct().from_(source)
        st.fragments[index] = replace(f, wrap=wrap)
