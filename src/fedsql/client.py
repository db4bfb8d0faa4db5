"""The embedded coordinator: ``fedsql.connect(...)`` returns a Federation."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from fedsql.catalog import Catalog
from fedsql.config import FederationConfig, load_federation
from fedsql.errors import (
    ConfigError,
    FedSQLError,
    FragmentUnsupported,
    QueryCancelled,
    from_rpc_error,
)
from fedsql.execute import MergeEngine, QueryStats, QueryWatch, connector_stats, execute
from fedsql.planner import Plan, plan
from fedsql.planner.shape import ShapeBinder
from fedsql.policy.load import validate
from fedsql.policy.masks import HASH_KEY_ENV, load_hash_key
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import GRPC_OPTIONS, Principal, catalog_from_proto, principal_to_proto

log = logging.getLogger(__name__)

CATALOG_TIMEOUT = 10.0
PLAN_CACHE_SIZE = 256


class Federation:
    """A coordinator embedded in this process, acting for one analyst."""

    def __init__(self, config: FederationConfig, user: str | None = None) -> None:
        self.config = config
        if user is not None and user not in config.users:
            known = ", ".join(sorted(config.users)) or "none"
            raise ConfigError(f"unknown user '{user}' (users in the federation config: {known})")
        roles = config.users[user].roles if user is not None else ()
        self.principal = Principal(user or "anonymous", roles)
        self._channels = {
            c.name: grpc.insecure_channel(c.address, options=GRPC_OPTIONS)
            for c in config.connectors
        }
        self._stubs = {n: pb_grpc.ConnectorStub(ch) for n, ch in self._channels.items()}
        self._catalog: Catalog | None = None
        self._binder: ShapeBinder | None = None
        self._plans: OrderedDict[tuple[str, frozenset[str]], Plan] = OrderedDict()
        self._plans_lock = threading.Lock()
        self._hash_key = load_hash_key(config.hash_key_file, f"{config.source}: [coordinator]")
        self._merger = MergeEngine(self._hash_key)
        self.last_stats: QueryStats | None = None

    # -- catalog ------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = self._load_catalog()
        return self._catalog

    def refresh_catalog(self) -> Catalog:
        self._catalog = None
        self._binder = None
        self._plans.clear()
        return self.catalog

    @property
    def binder(self) -> ShapeBinder:
        if self._binder is None:
            self._binder = ShapeBinder(self.catalog)
        return self._binder

    def _load_catalog(self) -> Catalog:
        req = pb.GetCatalogRequest(principal=principal_to_proto(self.principal))

        def one(name: str):  # type: ignore[no-untyped-def]
            try:
                return catalog_from_proto(
                    self._stubs[name].GetCatalog(req, timeout=CATALOG_TIMEOUT)
                )
            except grpc.RpcError as e:
                raise from_rpc_error(name, e) from None

        names = list(self._stubs)
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            cats = dict(zip(names, pool.map(one, names), strict=True))
        catalog = Catalog(cats)
        self._check_policy(catalog)
        return catalog

    def _check_policy(self, catalog: Catalog) -> None:
        """The federation's own masks and filters must name real tables and columns."""
        pol = self.config.policy
        if not pol:
            return
        schemas = {}
        for t in catalog.tables:
            schemas[t.qualified.lower()] = t.arrow_schema
            schemas[f"{t.agency}.{t.schema_key}.{t.name}".lower()] = t.arrow_schema
        validate(pol, schemas, "the federation")
        hashed = [m for m in pol.masks if m.rule == "hash"]
        if hashed and self._hash_key is None:
            raise ConfigError(
                f"{hashed[0].where}: a 'hash' mask needs the federation's secret key: set "
                f"hash_key_file under [coordinator] or the environment variable {HASH_KEY_ENV}"
            )

    # -- queries ------------------------------------------------------------
    def plan(self, sql: str, scan_only: frozenset[str] = frozenset()) -> Plan:
        """The plan for ``sql``; plans are cached per Federation (same catalog,
        policies and roles give the same plan) until the catalog is refreshed."""
        key = (sql, scan_only)
        with self._plans_lock:
            cached = self._plans.get(key)
            if cached is not None:
                self._plans.move_to_end(key)
                return cached
        p = plan(
            sql, self.catalog, self.binder, self.config.policy, self.principal.roles, scan_only
        )
        with self._plans_lock:
            self._plans[key] = p
            if len(self._plans) > PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        return p

    def explain(self, sql: str, analyze: bool = False, pretty: bool = True) -> str:
        """The fragments per connector and the residual query (with ``analyze``: run it
        and add rows, bytes and seconds per fragment)."""
        p = self.plan(sql)
        text = p.explain(pretty=pretty)
        if not analyze:
            return text
        self.sql(sql)
        st = self.last_stats
        assert st is not None
        lines = [text, "", "analyze:"]
        for r in st.fragments:
            lines.append(
                f"  {r.fragment.id} @ {r.fragment.agency}: {r.stats.rows} rows, "
                f"{r.stats.bytes} bytes, {r.stats.seconds:.3f} s"
            )
        lines.append(
            f"  plan {st.plan_seconds:.3f} s, fetch {st.fetch_seconds:.3f} s, "
            f"merge {st.merge_seconds:.3f} s, total {st.total_seconds:.3f} s, "
            f"{st.result_rows} result rows"
        )
        return "\n".join(lines)

    def sql(  # type: ignore[no-untyped-def]
        self,
        sql: str,
        timeout: float | None = None,
        watch: QueryWatch | None = None,
        query_id: str | None = None,
    ):
        """Run a federated query; returns a ``pyarrow.Table``.

        ``watch`` lets another thread follow the query's progress and cancel it;
        ``query_id`` is the id the agencies' audit logs record (default: a new one).
        """
        try:
            return self._sql(sql, timeout, watch, query_id or uuid.uuid4().hex[:16])
        except FedSQLError:
            if watch is not None and watch.cancelled:
                raise QueryCancelled("the query was cancelled") from None
            raise

    def _sql(  # type: ignore[no-untyped-def]
        self, sql: str, timeout: float | None, watch: QueryWatch | None, qid: str
    ):
        t0 = time.perf_counter()
        p = self.plan(sql)
        t1 = time.perf_counter()
        log.info("query %s: %d fragment(s) for user %s", qid, len(p.fragments), self.principal.user)
        scan_only: frozenset[str] = frozenset()
        while True:
            for f in p.fragments:
                log.debug("query %s: %s -> %s", qid, f.id, f.agency)
            try:
                table, runs, fetch_s, merge_s = execute(
                    p,
                    self._stubs,
                    self.principal,
                    qid,
                    timeout or self.config.timeout_seconds,
                    self._merger,
                    self.config.compression,
                    watch,
                )
                break
            except FragmentUnsupported as e:
                # The agency's backend could not run what was pushed to it: plan
                # again with plain scans there, the rest done here. Once per agency.
                if e.agency in scan_only:
                    raise
                log.info("query %s: %s; retrying with table scans there", qid, e)
                scan_only |= {e.agency}
                p = self.plan(sql, scan_only)
        if p.output_names and len(p.output_names) == table.num_columns:
            table = table.rename_columns(list(p.output_names))
        self.last_stats = stats = QueryStats(
            query_id=qid,
            connectors=connector_stats(runs),
            fragments=runs,
            plan_seconds=t1 - t0,
            fetch_seconds=fetch_s,
            merge_seconds=merge_s,
            total_seconds=time.perf_counter() - t0,
            result_rows=table.num_rows,
        )
        if watch is not None:
            watch.stats = stats
        return table

    def query(self, sql: str, timeout: float | None = None):  # type: ignore[no-untyped-def]
        """Like :meth:`sql`, but a :class:`fedsql.notebook.Result`: the table and the
        query's figures, shown as an HTML table in notebooks; ``.to_pandas()``."""
        from fedsql.notebook import Result

        watch = QueryWatch()
        table = self.sql(sql, timeout=timeout, watch=watch)
        return Result(table, watch.stats)

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._merger.close()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(config: str | Path | FederationConfig, user: str | None = None) -> Federation:
    """Open an embedded coordinator over the federation described by ``config``."""
    cfg = config if isinstance(config, FederationConfig) else load_federation(config)
    from fedsql.notebook import register_ipython

    register_ipython()  # Arrow tables as HTML tables, when in Jupyter/IPython
    return Federation(cfg, user=user)


__all__ = ["Federation", "connect"]
