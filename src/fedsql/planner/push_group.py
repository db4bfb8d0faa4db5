"""Fragments for a SELECT's base tables: co-located groups of one agency, or single tables.

Tables of one agency that join each other (by conditions it can evaluate) go
as one fragment; each fragment carries the conjuncts of WHERE and inner-join ON
that touch only its tables, conditions an OR implies about them (TPC-H Q7,
Q19), correlated subqueries it can run with them (absorbed), and the columns
the rest of the query needs. Pushed conjuncts are done exactly at the agency
and leave the residual (so their columns need not travel); the residual reads
the fragment instead of the tables.
"""

from __future__ import annotations

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from fedsql import names
from fedsql.catalog import TableRef
from fedsql.lang import DIALECT
from fedsql.planner import cost
from fedsql.planner.agency import pushable_to, runnable
from fedsql.planner.compute_at_source import compute_at_source, occurrences
from fedsql.planner.model import RemoteQuery
from fedsql.planner.resolve import coordinator_policy
from fedsql.planner.rules import NOT_PUSHABLE, implied_by_or, is_within, null_supplying, reads_only
from fedsql.planner.scalar_values import scalar_candidate
from fedsql.planner.state import (
    CutState,
    caps_of,
    conjuncts,
    new_id,
    rename_to_remote,
    tables_of,
    to_remote,
    unparen,
)
from fedsql.policy import view_for


def push_group(
    st: CutState,
    scope: Scope,
    select: exp.Select,
    group: list[tuple[str, exp.Table, TableRef]],
    where: list[exp.Expr],
    inner_only: bool,
) -> None:
    aliases = frozenset(a for a, _, _ in group)
    agency = group[0][2].agency
    preds: list[exp.Expr] = []
    absorbed: list[tuple[exp.Expr, list[Scope]]] = []
    scalars: list[tuple[exp.Expr, list[exp.Subquery]]] = []
    coord = coordinator_policy(group[0][1]) if len(group) == 1 else None
    if coord is not None:
        inner_only = False  # no subquery absorption under the federation's view
    if inner_only:
        for j in select.args.get("joins") or []:
            preds += [c for c in conjuncts(j.args.get("on")) if reads_only(c, aliases)]
        for c in where:
            if reads_only(c, aliases):
                preds.append(c)
            elif (subs := absorbable(st, scope, select, c, aliases, agency)) is not None:
                preds.append(c)
                absorbed.append((c, subs))
            elif (scalar := scalar_candidate(st, scope, c, aliases, agency)) is not None:
                scalars.append(scalar)
    else:
        ((alias, node, _),) = group
        if alias not in null_supplying(select):
            preds += [c for c in where if reads_only(c, aliases)]
        join = node.parent if isinstance(node.parent, exp.Join) else None
        if join is not None and join.args.get("on") is not None:
            side = (join.side or "").upper()
            if side in ("", "LEFT") and (join.kind or "").upper() not in ("SEMI", "ANTI"):
                preds += [c for c in conjuncts(join.args["on"]) if reads_only(c, aliases)]
    preds = [p for p in preds if runnable(st, p, agency)]
    absorbed = [(c, subs) for c, subs in absorbed if any(p is c for p in preds)]
    if coord is not None:
        # Predicates must see masked values: only those on unmasked columns go
        # down (below the federation's row filter, which commutes with them).
        preds = [
            p
            for p in preds
            if not any(c.name.lower() in coord.masks for c in p.find_all(exp.Column))
        ]

    # Conditions an OR implies about these tables alone (TPC-H Q7, Q19) filter
    # the fragment too; the OR itself stays in the residual.
    implied: list[exp.Expr] = []
    if inner_only or coord is not None:
        for c in where:
            if reads_only(c, aliases) or not isinstance(unparen(c), exp.Or):
                continue
            imp = implied_by_or(unparen(c), set(aliases))
            if imp is None or not runnable(st, imp, agency):
                continue
            if coord is not None and any(
                col.name.lower() in coord.masks for col in imp.find_all(exp.Column)
            ):
                continue
            implied.append(imp)
    fid = new_id(st)
    single = len(group) == 1
    residual_alias = group[0][0] if single else f"{names.GROUP}{fid[len(names.FRAGMENT) :]}"
    computed: list[tuple[str, exp.Expr]] = []  # (output name, expression) computed there
    if inner_only and coord is None and caps_of(st, agency).has("exact_expressions"):
        computed = compute_at_source(st, scope, select, aliases, preds, agency)
        for name, e in computed:
            for occ in occurrences(select, e):
                if not any(is_within(occ, p) for p in preds):
                    occ.replace(exp.column(name, table=residual_alias, quoted=True))
        if computed:
            scope.clear_cache()  # its columns now include the computed ones

    # Pushed conjuncts are done exactly at the agency: the residual drops them,
    # so columns that only they read need not travel.
    wanted: dict[str, dict[str, None]] = {a: {} for a in aliases}
    for col in scope.columns:
        if col.table in wanted and not any(is_within(col, p) for p in preds):
            wanted[col.table][col.name] = None
    if coord is not None:
        for f in coord.filters:  # the federation's row filters read these too
            for c in sqlglot.parse_one(f.sql, read=DIALECT).find_all(exp.Column):
                wanted[group[0][0]][c.name] = None
        lowered = {k.lower(): None for k in wanted[group[0][0]]}
        wanted[group[0][0]] = {
            f.name: None for f in group[0][2].arrow_schema if f.name.lower() in lowered
        }
    projs: list[exp.Expr] = []
    for alias, _, ref in group:
        for f in ref.arrow_schema:
            if f.name in wanted[alias]:
                col = exp.column(f.name, table=alias, quoted=True)
                projs.append(col if single else exp.alias_(col, f"{alias}.{f.name}", quoted=True))
    for name, e in computed:
        remote = e.copy()
        rename_to_remote(remote)
        projs.append(exp.alias_(remote, name, quoted=True))
    if not projs:
        projs = [exp.alias_(exp.Literal.number(1), names.ROW, quoted=True)]
    remotes = [node.copy() for _, node, _ in group]
    for r, (_, _, ref) in zip(remotes, group, strict=True):
        to_remote(r, ref)
    frag = exp.select(*projs).from_(remotes[0])
    for r in remotes[1:]:
        frag = frag.join(r)
    if preds or implied:
        copies = [p.copy() for p in preds] + implied
        for c in copies:
            rename_to_remote(c)
        frag = frag.where(exp.and_(*copies, copy=False), copy=False)
    read = [ref.qualified for _, _, ref in group]
    for _, subs in absorbed:
        for sub in subs:
            for s in sub.traverse():
                read += [ref.qualified for _, _, ref in tables_of(s)]
    row_est = max(ref.row_count_estimate for _, _, ref in group)
    st.fragments.append(
        RemoteQuery(
            id=fid,
            agency=agency,
            query=frag,
            kind="table" if single and not absorbed else "join",
            tables=tuple(dict.fromkeys(read)),
            row_estimate=row_est,
        )
    )
    filters = sum(1 for p in preds + implied if len({c.table for c in p.find_all(exp.Column)}) == 1)
    st.est[fid] = cost.filtered(row_est, filters + len(scalars))
    st.scalars += [(fid, template, subs) for template, subs in scalars]
    if single and not absorbed and not preds and not implied:
        st.whole.add(fid)
    if coord is None:  # a federation view changes values: no keys from/into it
        st.scope_frags.setdefault(id(scope), {})[residual_alias] = fid
        st.types[fid] = {
            (f.name if single else f"{a}.{f.name}"): f.type
            for a, _, ref in group
            for f in ref.arrow_schema
            if f.name in wanted[a]
        }
        st.outputs[fid] = {
            (f.name if single else f"{a}.{f.name}"): exp.column(f.name, table=a, quoted=True)
            for a, _, ref in group
            for f in ref.arrow_schema
            if f.name in wanted[a]
        }
        for name, e in computed:
            remote = e.copy()
            rename_to_remote(remote)
            st.outputs[fid][name] = remote

    # The residual: pushed conjuncts are done at the agency ...
    for conj in preds:
        conj.replace(exp.true())
    for _, subs in absorbed:
        st.consumed.update(id(s) for sub in subs for s in sub.traverse())
    if single:
        ((alias, node, ref),) = group
        scan = exp.Table(this=exp.to_identifier(fid))
        shipped = pa.schema([f for f in ref.arrow_schema if f.name in wanted[alias]])
        view = view_for(coord, fid, shipped, source=scan) if coord and len(shipped) else None
        talias = exp.TableAlias(this=exp.to_identifier(alias, quoted=True))
        if view is not None:  # the federation's own masks, at the coordinator
            node.replace(exp.Subquery(this=view, alias=talias))
        else:
            scan.set("alias", talias)
            node.replace(scan)
        return
    # ... and the group's tables become one scan, its columns renamed.
    galias = f"{names.GROUP}{fid[len(names.FRAGMENT) :]}"
    for col in scope.columns:
        if col.table in aliases:
            col.set("this", exp.to_identifier(f"{col.table}.{col.name}", quoted=True))
            col.set("table", exp.to_identifier(galias, quoted=True))
    first, *rest = group
    first[1].replace(
        exp.Table(
            this=exp.to_identifier(fid),
            alias=exp.TableAlias(this=exp.to_identifier(galias, quoted=True)),
        )
    )
    moved: list[exp.Expr] = []
    for _, node, _ in rest:
        parent = node.parent
        assert isinstance(parent, exp.Join)
        if parent.args.get("on") is not None:
            moved.append(parent.args["on"])
        parent.pop()
    if moved:
        old = select.args.get("where")
        conds = ([old.this] if old is not None else []) + moved
        # the same nodes, not copies: the scopes of subqueries in them are cut later
        select.set("where", exp.Where(this=exp.and_(*conds, copy=False)))


def absorbable(
    st: CutState,
    scope: Scope,
    select: exp.Select,
    conj: exp.Expr,
    aliases: frozenset[str],
    agency: str,
) -> list[Scope] | None:
    """Subquery scopes of ``conj`` if the whole conjunct can run with the group."""
    subs = [s for s in scope.subquery_scopes if is_within(s.expression, conj)]
    if not subs:
        return None
    for col in conj.find_all(exp.Column):
        if col.find_ancestor(exp.Select) is select and col.table not in aliases:
            return None
    for sub in subs:
        if pushable_to(st, sub, scope, aliases) != agency:
            return None
    return subs


def colocated_groups(
    tables: list[tuple[str, exp.Table, TableRef]],
    conjuncts: list[exp.Expr],
    scan_only: frozenset[str] = frozenset(),
) -> list[list[tuple[str, exp.Table, TableRef]]]:
    """Tables of one agency connected by equi-join predicates, in order of appearance.

    Only an equality between the two tables connects them: a join by inequalities
    alone (``t8.x >= t7.x``) is nearly a cross product, and the agency would make
    and ship all of it (issue 14's fuzzer: orders joined to itself that way timed
    out on PostgreSQL). Such a condition still goes down with tables an equality
    put in one group."""
    parent = {a: a for a, _, _ in tables}
    # A table under the federation's own policy is read alone (its view is applied
    # at the coordinator), so it gets an agency of its own here.
    agency = {
        a: ref.agency
        if coordinator_policy(node) is None and ref.agency not in scan_only
        else f"\0{a}"
        for a, node, ref in tables
    }

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for c in conjuncts:
        if c.find(*NOT_PUSHABLE) is not None:
            continue
        used = {col.table for col in c.find_all(exp.Column)}
        if len(used) == 2 and used <= set(parent) and _equates(c):
            x, y = sorted(used)
            if agency[x] == agency[y]:
                parent[find(x)] = find(y)
    groups: dict[str, list[tuple[str, exp.Table, TableRef]]] = {}
    for t in tables:
        groups.setdefault(find(t[0]), []).append(t)
    return list(groups.values())


def _equates(c: exp.Expr) -> bool:
    """``c`` is ``x = y`` (or IS NOT DISTINCT FROM) with each side over one table."""
    c = unparen(c)
    if not isinstance(c, (exp.EQ, exp.NullSafeEQ)):
        return False
    sides = [{col.table for col in side.find_all(exp.Column)} for side in (c.left, c.right)]
    return all(len(t) == 1 for t in sides) and sides[0] != sides[1]
