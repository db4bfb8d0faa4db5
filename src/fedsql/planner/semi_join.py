"""Filter a fragment to the join keys another fragment returned (semi-join reduction).

While the cut runs, :func:`find_semi_joins` records each equality between two
fragments' columns in one SELECT as a candidate (an inner join: either side may
filter the other; a correlated subquery: the outer side filters the inner).
After it, :func:`choose_semi_joins` keeps those worth it — the cost model
(``cost.py``) says whether a build side is small enough for its keys to cut
the probe side — acyclic by construction, and gives each probe fragment its
:class:`~fedsql.planner.model.KeySlot`.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from fedsql.planner import cost
from fedsql.planner.model import KeySlot
from fedsql.planner.state import CutState, caps_of, conjuncts


def find_semi_joins(st: CutState, scope: Scope, select: exp.Select) -> None:
    """Equalities between two fragments' columns: semi-join reduction candidates."""
    conds = conjuncts(select.args.get("where"))
    for j in select.args.get("joins") or []:
        conds += conjuncts(j.args.get("on"))
    for c in conds:
        if not (
            isinstance(c, exp.EQ)
            and isinstance(c.left, exp.Column)
            and isinstance(c.right, exp.Column)
        ):
            continue
        a = resolve_column(st, scope, c.left)
        b = resolve_column(st, scope, c.right)
        if a is None or b is None or a[0] == b[0]:
            continue
        (fa, ca, local_a), (fb, cb, local_b) = a, b
        if local_a and local_b:  # an inner join here: either side may filter the other
            add_edge(st, fa, ca, fb, cb, forced=False)
            add_edge(st, fb, cb, fa, ca, forced=False)
        elif local_a:  # b is an outer query's column: its keys may filter us, not back
            add_edge(st, fb, cb, fa, ca, forced=True)
        elif local_b:
            add_edge(st, fa, ca, fb, cb, forced=True)


def resolve_column(st: CutState, scope: Scope, col: exp.Column) -> tuple[str, str, bool] | None:
    """(fragment, its output column, whether it is read in ``scope`` itself)."""
    s: Scope | None = scope
    while s is not None:
        frags = st.scope_frags.get(id(s), {})
        if col.table in frags:
            fid = frags[col.table]
            return (fid, col.name, s is scope) if col.name in st.outputs[fid] else None
        if col.table in s.sources or col.table in s.selected_sources:
            return None  # a source that is not a fragment (derived table, CTE)
        s = s.parent
    return None


def add_edge(st: CutState, build: str, bcol: str, probe: str, pcol: str, forced: bool) -> None:
    if next(f.kind for f in st.fragments if f.id == probe) not in ("table", "join"):
        return
    slot = KeySlot(build=build, build_column=bcol, probe=st.outputs[probe][pcol])
    st.edges.append((build, probe, slot, forced))


def choose_semi_joins(st: CutState) -> None:
    """Keep the candidates worth it (a smaller build side); set each fragment's key
    slots and how its agency takes key sets."""
    keep: dict[str, list[KeySlot]] = {}
    # A small fragment is still worth reducing when its keys go on to reduce a
    # large one (TPC-H Q21: nation -> supplier -> lineitem).
    relays = {b for b, p, _, _ in st.edges if cost.worth_probing(st.est.get(p, 0.0))}
    # Smallest builds first, so a build's own reductions are known before its keys
    # are used: a whole, unfiltered table's keys (all parts, all suppliers) filter
    # nothing and would only cost a wave (TPC-H Q14, Q21 before its nation filter).
    for build, probe, slot, forced in sorted(st.edges, key=lambda e: st.est.get(e[0], 0)):
        eb, ep = st.est.get(build, 0.0), st.est.get(probe, 0.0)
        if not cost.worth_probing(ep) and probe not in relays:
            continue
        if not forced and (eb, build) >= (ep, probe):
            continue
        if not forced and build in st.whole and not keep.get(build):
            continue
        if slot not in keep.setdefault(probe, []):
            keep[probe].append(slot)
    st.fragments = [
        replace(
            f,
            keys=tuple(keep.get(f.id, ())),
            arrow_keys=caps_of(st, f.agency).has("arrow_key_sets"),
        )
        for f in st.fragments
    ]
