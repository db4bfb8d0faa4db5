"""The analyst's query: bounded, parsed, held to the fragment language; and what
can be said of it before planning (its output names, the policies it meets).
"""

from __future__ import annotations

import difflib
import re

from sqlglot import exp

from fedsql import lang
from fedsql.catalog import Catalog
from fedsql.errors import PlanError
from fedsql.planner.resolve import coordinator_policy, table_ref

LANGUAGE_DOC = "docs/fragment-language.md"


def parse(sql: str) -> exp.Query:
    """The analyst's query, bounded before parsing and in the fragment language
    (tables may be named ``agency.schema.table``): what fedsql plans is what its
    connectors and its merge engine accept."""
    try:
        tree = lang.parse(sql, "the query")
    except lang.BadSyntax as e:
        raise PlanError(str(e)) from None
    except lang.Refused as e:
        raise PlanError(str(e)) from None
    if not isinstance(tree, exp.Query) or isinstance(tree, exp.Subquery):
        raise PlanError(f"only SELECT queries are supported, got {tree.key.upper()}")
    try:
        lang.check(tree, catalogs=True)
    except lang.Refused as e:
        raise PlanError(f"{e}; fedsql accepts the SQL described in {LANGUAGE_DOC}") from None
    assert isinstance(tree, exp.Query)
    return tree  # without the parser's token positions (lang.bounds.measure drops them)


def declared_names(tree: exp.Query, catalog: Catalog) -> tuple[str, ...] | None:
    """The result's column names when the query spells them out, as DuckDB would
    name them — every output an alias (named as written) or a column whose name is
    spelled as its table spells it — so binding it in DuckDB (several ms) is not
    needed; None otherwise (stars, set operations, expressions without alias)."""
    if not isinstance(tree, exp.Select):
        return None
    # Names the query itself defines (derived tables' and CTEs' outputs): a column
    # of one of them is named as the definition spells it.
    defined: dict[str, set[str]] = {}
    for node in tree.find_all(exp.Alias, exp.TableAlias):
        if isinstance(node, exp.TableAlias):
            spelled = [c.name for c in node.columns]
        else:
            spelled = [node.alias]
        for name in spelled:
            defined.setdefault(name.lower(), set()).add(name)
    names = []
    for e in tree.expressions:
        if isinstance(e, exp.Alias):
            names.append(e.alias)
        elif isinstance(e, exp.Column) and isinstance(e.this, exp.Identifier):
            # Spelled exactly one way wherever it could come from (else DuckDB decides).
            own = defined.get(e.name.lower(), set())
            if e.name in catalog.field_names:
                if own - {e.name}:
                    return None
            elif own != {e.name} or e.name.lower() in catalog.lowered_names:
                return None
            names.append(e.name)
        else:
            return None
    return tuple(names)


def agency_of(table: exp.Table) -> str | None:
    ref = table_ref(table)
    return ref.agency if ref is not None else None


def policy_notes(tree: exp.Expr) -> tuple[str, ...]:
    """Which masks and row filters apply where, for explain."""
    notes: dict[str, None] = {}
    for t in tree.find_all(exp.Table):
        ref = table_ref(t)
        if ref is None:
            continue
        for col, mask in ref.masks:
            notes[f"at agency {ref.agency}: {ref.qualified}.{col} masked ({mask})"] = None
        if ref.row_filtered:
            notes[f"at agency {ref.agency}: {ref.qualified} row filter"] = None
        tp = coordinator_policy(t)
        if tp is not None:
            for col, m in tp.masks.items():
                notes[f"at coordinator: {ref.qualified}.{col} masked ({m.describe()})"] = None
            for f in tp.filters:
                notes[f"at coordinator: {ref.qualified} row filter: {f.sql}"] = None
    return tuple(notes)


_UNRESOLVED = re.compile(r"Column '([^']+)' could not be resolved|Unknown column: (\S+)")


def column_error(msg: str, tree: exp.Expr) -> str:
    """The name the query reads that is no column of its tables, with the tables
    it could have meant and the closest names (``did you mean cost? in
    health.visits``). ``msg``: sqlglot's qualifier's message, the only place
    that names the column."""
    m = _UNRESOLVED.search(msg)
    if m is None:
        return f"cannot resolve a column: {msg.splitlines()[0]}"
    name = (m.group(1) or m.group(2)).split(".")[-1].strip('"')
    tables = {
        t.alias_or_name: ref for t in tree.find_all(exp.Table) if (ref := table_ref(t)) is not None
    }
    qualified = [c for c in tree.find_all(exp.Column) if c.name == name and c.table]
    if qualified and qualified[0].table in tables:
        tables = {qualified[0].table: tables[qualified[0].table]}
    where = ", ".join(sorted({ref.qualified for ref in tables.values()})) or "the query's tables"
    columns = sorted({f.name for ref in tables.values() for f in ref.arrow_schema})
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"column '{name}' is not a column of {where}{hint}"
