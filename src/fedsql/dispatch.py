"""Which statement a Federation was given, and the answer to a metadata one.

``Federation.sql`` sends every statement here first: a metadata statement
(metadata.py) is answered from the analyst's catalog at the coordinator; any
other goes on to the planner. The fragment language the connectors accept does
not change: no metadata statement ever reaches an agency (``EXPLAIN ANALYZE``
runs its query as an ordinary one).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import pyarrow as pa

from fedsql import metadata
from fedsql.catalog import TableRef
from fedsql.execute import QueryWatch
from fedsql.metadata import Statement
from fedsql.policy.shown import federation_rules, table_names
from fedsql.stats import query_stats

if TYPE_CHECKING:
    from fedsql.client import Federation

MERGE_SECONDS = 30.0  # DESCRIBE SELECT runs its residual over empty inputs: never long


def run(fed: Federation, sql: str, st: Statement, watch: QueryWatch | None) -> pa.Table:
    """A metadata statement's answer, from the catalog alone; it leaves a line in the
    coordinator's audit log like any query (EXPLAIN ANALYZE: its query's line) and
    its stats as ``last_stats`` (EXPLAIN ANALYZE: its query's)."""
    t0 = time.perf_counter()
    if st.kind == "explain" and st.analyze:
        return answer(fed, st, watch)
    entry = fed._entry(sql, uuid.uuid4().hex[:16])
    try:
        table = answer(fed, st, watch)
    except BaseException as e:
        entry.failed(e)
        raise
    entry.finished(table.num_rows)
    stats = fed._record(query_stats(uuid.uuid4().hex[:16], (), t0, table.num_rows, ()))
    if watch is not None:
        watch.stats = stats
    return table


def answer(fed: Federation, st: Statement, watch: QueryWatch | None = None) -> pa.Table:
    """The answer to a metadata statement, as the signed-in analyst sees things."""
    if st.kind == "explain":
        return metadata.explain_table(fed.explain(st.sql, analyze=st.analyze, watch=watch))
    engine = fed._info_engine()
    if st.kind == "show":
        return metadata.show(st, fed.catalog, engine)
    if st.kind == "info":
        return metadata.info_query(st.sql, fed.catalog, engine)
    if st.kind == "describe":
        table = fed.catalog.resolve(list(st.scope))
        return metadata.describe(table, masks_you_get(fed, table))
    assert st.kind == "describe_query", st.kind
    p = fed.plan(st.sql)
    return metadata.describe_schema(metadata.query_schema(p, fed._fragment_schema, _runner(fed)))


def masks_you_get(fed: Federation, table: TableRef) -> dict[str, str]:
    """column -> the mask this analyst gets on it: the agency's, then the federation's."""
    masks = dict(table.masks)
    names = table_names(table.agency, table.schema, table.name, table.default_schema)
    federation_rules(
        fed.config.policy, fed.principal.roles, names, table.arrow_schema.names, masks, {}
    )
    return {c: m for c, m in masks.items() if m not in ("", "-")}


def _runner(fed: Federation):  # type: ignore[no-untyped-def]
    def run_empty(residual: str, empties: dict[str, pa.Table]) -> pa.Table:
        with fed._merger.session() as session:
            for name, table in empties.items():
                session.put(name, table)
            return session.run(residual, time.monotonic() + MERGE_SECONDS)

    return run_empty


__all__ = ["answer", "masks_you_get"]
