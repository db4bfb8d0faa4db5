"""The embedded coordinator: ``fedsql.connect(...)`` returns a Federation."""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

from fedsql import dispatch, metadata
from fedsql.audit.coordinator import CoordinatorAudit, QueryEntry
from fedsql.catalog import Catalog
from fedsql.catalog_load import FederationCatalog
from fedsql.config import FederationConfig, load_federation
from fedsql.errors import (
    CatalogError,
    ConfigError,
    FedSQLError,
    FragmentUnsupported,
    QueryCancelled,
)
from fedsql.execute import (
    FragmentRun,
    MergeEngine,
    QueryStats,
    QueryWatch,
    execute,
    execute_stream,
    renamed,
)
from fedsql.lru import Lru
from fedsql.planner import Fragment, Plan, plan
from fedsql.planner.render import bind
from fedsql.planner.shape import ShapeBinder
from fedsql.policy.masks import load_hash_key
from fedsql.resilience import (
    AgencyHealth,
    RunOptions,
    links_for,
    probe,
)
from fedsql.stats import query_stats
from fedsql.wire import Principal

log = logging.getLogger(__name__)

MISSING_METADATA = b"fedsql.missing_agencies"
_T = TypeVar("_T")
PLAN_CACHE_SIZE = 256
PLAN_CACHE_CHARS = 16 << 20  # of the plans' SQL text
ANONYMOUS = "anonymous"  # the principal of a Federation opened without a user


class Federation:
    """A coordinator embedded in this process, acting for one analyst."""

    def __init__(
        self, config: FederationConfig, user: str | None = None, purpose: str | None = None
    ) -> None:
        self.config = config
        if user is not None and user not in config.users:
            known = ", ".join(sorted(config.users)) or "none"
            raise ConfigError(f"unknown user '{user}' (users in the federation config: {known})")
        if user is None and ANONYMOUS in config.users:
            # Without --user the principal is 'anonymous' (no roles); a configured user of
            # that name would have their grants (users = ["anonymous"]) open to everyone.
            raise ConfigError(
                f"{config.source}: [user.{ANONYMOUS}] is configured, so leaving out the user "
                f"would act as them: give --user NAME (or user= in fedsql.connect)"
            )
        roles = config.users[user].roles if user is not None else ()
        # No user: 'anonymous', with no roles: every mask applies (no unless_role
        # exemption) and an agency with [[grant]] opens nothing to it (README, issue 15).
        self.principal = Principal(user or ANONYMOUS, roles, (purpose or "").strip())
        # One channel per connector for the Federation's life, shared by all its queries.
        self._links = links_for(
            config.connectors, config.connect_timeout_seconds, str(config.source or "federation")
        )
        self._hash_key = load_hash_key(config.hash_key_file, f"{config.source}: [coordinator]")
        self._catalogs = FederationCatalog(
            self._links, self.principal, config.policy, self._hash_key
        )
        # Plans per (SQL, agencies planned as scans only): the same catalog, policies
        # and roles give the same plan; dropped when the catalog is refreshed.
        self._plans: Lru[Plan] = Lru(PLAN_CACHE_SIZE, PLAN_CACHE_CHARS)
        self._merger = MergeEngine(self._hash_key, config.memory_limit, config.temp_directory)
        self._thread = threading.local()
        self._last_stats: QueryStats | None = None
        # [coordinator] audit_log: every query, signed, with the agencies' receipts.
        self._audit = CoordinatorAudit.open(config)
        self._info: metadata.InfoEngine | None = None  # answers information_schema queries

    def with_purpose(self, purpose: str) -> Federation:
        """This analyst's federation asking for another purpose: the same channels,
        catalog and plans; the new purpose goes with every fragment it sends."""
        p = self.principal
        if purpose.strip() == p.purpose:
            return self
        other = copy.copy(self)
        other.principal = Principal(p.user, p.roles, purpose.strip())
        other._thread = threading.local()
        return other

    @property
    def last_stats(self) -> QueryStats | None:
        """Stats of the last query this thread ran (else the last query of any thread)."""
        return getattr(self._thread, "stats", None) or self._last_stats

    def _record(self, stats: QueryStats) -> QueryStats:
        """A finished query's stats, kept as ``last_stats`` (for this thread)."""
        self._thread.stats = stats
        self._last_stats = stats
        return stats

    # -- catalog ------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        return self._catalogs.catalog

    def refresh_catalog(self) -> Catalog:
        self._catalogs.refresh()
        self._plans.clear()
        return self.catalog

    @property
    def binder(self) -> ShapeBinder:
        return self._catalogs.binder

    # -- queries ------------------------------------------------------------
    def plan(self, sql: str, scan_only: frozenset[str] = frozenset()) -> Plan:
        """The plan for ``sql``; plans are cached per Federation (same catalog,
        policies and roles give the same plan) until the catalog is refreshed."""
        if self._catalogs.stale():
            self.refresh_catalog()  # an agency was down: is it back?
        key = (sql, scan_only)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        try:
            p = plan(
                sql, self.catalog, self.binder, self.config.policy, self.principal.roles, scan_only
            )
        except CatalogError as e:
            err = self._catalogs.unknown_name(e)
            if err is e:
                raise
            raise err from None
        self._plans.put(key, p, len(sql))
        return p

    def explain(
        self,
        sql: str,
        analyze: bool = False,
        pretty: bool = True,
        watch: QueryWatch | None = None,
    ) -> str:
        """The fragments per connector and the residual query (with ``analyze``: run it
        and add rows, bytes and seconds per fragment and per agency)."""
        p = self.plan(sql)
        text = p.explain(pretty=pretty)
        if not analyze:
            return text
        self.sql(sql, watch=watch)
        st = self.last_stats
        assert st is not None
        return "\n".join([text, "", *st.analyze_lines()])

    def _info_engine(self) -> metadata.InfoEngine:
        with self._catalogs.lock:
            if self._info is None:
                self._info = metadata.InfoEngine()
            return self._info

    def _options(self, timeout: float | None, allow_partial: bool | None) -> RunOptions:
        c = self.config
        return RunOptions(
            timeout=timeout or c.timeout_seconds,
            compression=c.compression,
            allow_partial=c.allow_partial if allow_partial is None else allow_partial,
            retries=c.retries,
        )

    def _fragment_schema(self, f: Fragment) -> pa.Schema:
        """What a fragment would return (for an agency missing under allow_partial)."""
        sql, _ = bind(replace(f, keys=(), scalars=()))
        return self.binder.fragment_schema(f.agency, sql)

    def _entry(self, sql: str, query_id: str) -> QueryEntry:
        p = self.principal
        return QueryEntry(self._audit, p.user, p.roles, p.purpose, sql, query_id)

    def _run(
        self,
        sql: str,
        go: Callable[[Plan, str], _T],
        query_id: str | None = None,
        entry: QueryEntry | None = None,
    ) -> tuple[Plan, str, float, float, _T]:
        """Plan, then ``go(plan, query_id)``; re-plans with table scans at an agency
        whose backend cannot run what was pushed to it (once per agency)."""
        t0 = time.perf_counter()
        qid = query_id or uuid.uuid4().hex[:16]
        p = self.plan(sql)
        if entry is not None:
            entry.planned(p)
        plan_s = time.perf_counter() - t0
        log.info(
            "query query_id=%s fragments=%d user=%s", qid, len(p.fragments), self.principal.user
        )
        scan_only: frozenset[str] = frozenset()
        while True:
            for f in p.fragments:
                log.debug("fragment query_id=%s fragment=%s agency=%s", qid, f.id, f.agency)
            try:
                return p, qid, t0, plan_s, go(p, qid)
            except FragmentUnsupported as e:
                if e.agency in scan_only:
                    raise
                log.info("query_id=%s %s; retrying with table scans there", qid, e)
                scan_only |= {e.agency}
                p = self.plan(sql, scan_only)
                if entry is not None:
                    entry.planned(p)

    def sql(  # type: ignore[no-untyped-def]
        self,
        sql: str,
        timeout: float | None = None,
        allow_partial: bool | None = None,
        watch: QueryWatch | None = None,
        query_id: str | None = None,
    ):
        """Run a federated query; returns a ``pyarrow.Table``.

        ``timeout``: seconds for the whole query (default ``[coordinator] timeout_seconds``).
        ``allow_partial``: an agency that cannot be reached contributes no rows instead
        of failing the query; the result's schema metadata ``fedsql.missing_agencies``
        and ``last_stats.missing`` name such agencies (default ``[coordinator] allow_partial``).
        ``watch`` lets another thread follow the query's progress and cancel it;
        ``query_id`` is the id the agencies' audit logs record (default: a new one).
        """
        st = metadata.statement(sql)
        if st is not None:
            return dispatch.run(self, sql, st, watch)
        opts = self._options(timeout, allow_partial)
        entry = self._entry(sql, query_id or uuid.uuid4().hex[:16])
        try:
            try:
                p, qid, t0, plan_s, (table, runs, fetch_s, merge_s, missing) = self._run(
                    sql,
                    lambda p, qid: execute(
                        p,
                        self._links,
                        self.principal,
                        qid,
                        opts,
                        self._merger,
                        self._fragment_schema,
                        watch,
                        entry.calls,
                    ),
                    entry.query_id,
                    entry,
                )
            except FedSQLError:
                if watch is not None and watch.cancelled:
                    raise QueryCancelled("the query was cancelled") from None
                raise
        except BaseException as e:
            entry.failed(e)
            raise
        if p.output_names and len(p.output_names) == table.num_columns:
            table = table.rename_columns(list(p.output_names))
        if missing:
            table = mark_partial(table, missing)
        entry.finished(table.num_rows)  # on disk before the analyst has the result
        stats = self._record(
            query_stats(qid, runs, t0, table.num_rows, missing, plan_s, fetch_s, merge_s)
        )
        if watch is not None:
            watch.stats = stats
        return table

    def stream(
        self,
        sql: str,
        timeout: float | None = None,
        allow_partial: bool | None = None,
        watch: QueryWatch | None = None,
    ) -> pa.RecordBatchReader:
        """Run a federated query; its result as a ``pyarrow.RecordBatchReader``.

        Memory stays bounded for a query that one agency answers whole (e.g.
        ``SELECT * FROM trade.lineitem``): its batches stream straight through.
        Otherwise the fragments are fetched, merged in DuckDB (which spills to
        ``[coordinator] temp_directory`` past ``memory_limit``) and its result
        streams. Dropping the reader before its end cancels the query at
        the agencies. ``last_stats`` is set when the stream is read to
        its end. The deadline covers reading the stream too. (pyarrow's
        ``close()`` on this reader does not stop the query; dropping it does.)
        """
        st = metadata.statement(sql)
        if st is not None:
            table = dispatch.run(self, sql, st, watch)
            return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
        opts = self._options(timeout, allow_partial)
        t0 = time.perf_counter()
        entry = self._entry(sql, uuid.uuid4().hex[:16])

        def go(p: Plan, qid: str) -> pa.RecordBatchReader:
            plan_s = time.perf_counter() - t0  # go runs as soon as the plan is made

            def done(runs: tuple[FragmentRun, ...], rows: int, missing: tuple[str, ...]) -> None:
                self._record(query_stats(qid, runs, t0, rows, missing, plan_s))

            return execute_stream(
                p,
                self._links,
                self.principal,
                qid,
                opts,
                self._merger,
                self._fragment_schema,
                done,
                entry.calls,
                watch,
            )

        try:
            p, _, _, _, reader = self._run(sql, go, entry.query_id, entry)
        except BaseException as e:
            entry.failed(e)
            raise
        reader = entry.streaming(reader)  # the query's line is on disk before its first batch
        return renamed(reader, p.output_names)

    def status(self, timeout: float = 5.0) -> list[AgencyHealth]:
        """Every connector's health, version, latency and load (asked in parallel)."""
        links = list(self._links.values())
        with ThreadPoolExecutor(max_workers=max(1, len(links))) as pool:
            return list(pool.map(lambda link: probe(link, timeout), links))

    def query(self, sql: str, timeout: float | None = None):  # type: ignore[no-untyped-def]
        """Like :meth:`sql`, but a :class:`fedsql.notebook.Result`: the table and the
        query's figures, shown as an HTML table in notebooks; ``.to_pandas()``."""
        from fedsql.notebook import Result

        watch = QueryWatch()
        table = self.sql(sql, timeout=timeout, watch=watch)
        return Result(table, watch.stats)

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._merger.close()
        if self._info is not None:
            self._info.close()
        if self._audit is not None:
            self._audit.close()
            self._audit = None

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mark_partial(table: pa.Table, missing: tuple[str, ...]) -> pa.Table:
    """Name the agencies missing from a result in its schema metadata."""
    meta = dict(table.schema.metadata or {})
    meta[MISSING_METADATA] = ",".join(missing).encode()
    return table.replace_schema_metadata(meta)


def connect(
    config: str | Path | FederationConfig, user: str | None = None, purpose: str | None = None
) -> Federation:
    """Open an embedded coordinator over the federation described by ``config``;
    ``purpose`` (why the analyst asks) goes with every request into the agencies'
    audit logs."""
    cfg = config if isinstance(config, FederationConfig) else load_federation(config)
    from fedsql.notebook import register_ipython

    register_ipython()  # Arrow tables as HTML tables, when in Jupyter/IPython
    return Federation(cfg, user=user, purpose=purpose)


__all__ = ["Federation", "connect"]
