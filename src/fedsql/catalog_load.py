"""The federation's catalog, as its connectors answer GetCatalog for one principal.

Every connector is asked at once. An agency that is down is planned with its last
known catalog (or none), so that queries elsewhere still run and queries over it
fail naming it (or, under ``allow_partial``, run without it). The federation's own
masks and filters must name real tables and columns of what came back.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from fedsql import lang
from fedsql.catalog import Catalog
from fedsql.errors import CatalogError, ConfigError, ConnectorError, FedSQLError
from fedsql.planner.shape import ShapeBinder
from fedsql.policy.load import validate
from fedsql.policy.masks import HASH_KEY_ENV
from fedsql.policy.model import Policy
from fedsql.policy.shown import table_names
from fedsql.resilience import Link, load_catalog, save_catalog
from fedsql.v1 import connector_pb2 as pb
from fedsql.wire import Principal, RemoteCatalog, catalog_from_proto, principal_to_proto

log = logging.getLogger(__name__)

CATALOG_TIMEOUT = 10.0
DOWN_RECHECK_SECONDS = 5.0  # how soon a catalog missing an agency is loaded again


class FederationCatalog:
    """The catalog a Federation plans with, and its shape binder: loaded at first
    use (once, however many threads ask), again on :meth:`refresh`, and again once
    :data:`DOWN_RECHECK_SECONDS` have passed when an agency was down (is it back?)."""

    def __init__(
        self,
        links: dict[str, Link],
        principal: Principal,
        policy: Policy,
        hash_key: bytes | None,
    ) -> None:
        self._links, self._principal = links, principal
        self._policy, self._hash_key = policy, hash_key
        self._catalog: Catalog | None = None
        self._binder: ShapeBinder | None = None
        self.lock = threading.Lock()
        self.down: dict[str, FedSQLError] = {}  # agencies down at the last load
        self._loaded_at = 0.0

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            with self.lock:
                if self._catalog is None:
                    catalog, down = load_catalogs(self._links, self._principal)
                    check_policy(self._policy, catalog, self._hash_key)
                    self.down, self._loaded_at = down, time.monotonic()
                    self._catalog = catalog
        return self._catalog

    @property
    def binder(self) -> ShapeBinder:
        if self._binder is None:
            self._binder = ShapeBinder(self.catalog)
        return self._binder

    def refresh(self) -> None:
        self._catalog = None
        self._binder = None

    def stale(self) -> bool:
        """An agency was down at the last load, long enough ago to ask again."""
        return bool(self.down) and time.monotonic() - self._loaded_at > DOWN_RECHECK_SECONDS

    def unknown_name(self, e: CatalogError) -> FedSQLError:
        """What to raise for a name the catalog does not know: with agencies down,
        their error (their tables may be what the query names), else ``e``."""
        if len(self.down) == 1:
            (err,) = self.down.values()
            return err
        if self.down:
            return ConnectorError(
                ", ".join(sorted(self.down)),
                "unreachable, so their tables are unknown: "
                + "; ".join(str(e) for e in self.down.values()),
            )
        return e


def load_catalogs(
    links: dict[str, Link], principal: Principal
) -> tuple[Catalog, dict[str, FedSQLError]]:
    """(the catalog, the agencies down now with the error each gave)."""
    req = pb.GetCatalogRequest(principal=principal_to_proto(principal))
    roles = principal.roles
    down: dict[str, FedSQLError] = {}

    def one(name: str) -> RemoteCatalog:
        link = links[name]
        try:
            msg = link.stub.GetCatalog(req, timeout=CATALOG_TIMEOUT, wait_for_ready=False)
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise link.error(e) from None
            down[name] = link.error(e)
            # INFO, not WARNING: the error reaches the user once, from the query
            # (or as the partial result's warning) — not twice (issue 15).
            log.info("agency down at catalog load agency=%s reason=%r", name, str(down[name]))
            msg = load_catalog(name, link.address, roles) or pb.Catalog(connector=name)
            return catalog_from_proto(msg)
        cat = catalog_from_proto(msg)
        wrong = link.wrong_agency(cat.connector)  # e.g. a wrong port, in plaintext
        if wrong is not None:
            raise wrong
        if cat.fragment_language != lang.VERSION:
            raise ConnectorError(
                name,
                f"it speaks fragment language {cat.fragment_language}, this coordinator "
                f"writes version {lang.VERSION}; upgrade the older of the two",
            )
        save_catalog(name, link.address, roles, msg)
        return cat

    names = list(links)
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        cats = dict(zip(names, pool.map(one, names), strict=True))
    return Catalog(cats), down


def check_policy(policy: Policy, catalog: Catalog, hash_key: bytes | None) -> None:
    """The federation's own masks and filters must name real tables and columns."""
    if not policy:
        return
    schemas = {
        n.lower(): t.arrow_schema
        for t in catalog.tables
        for n in table_names(t.agency, t.schema, t.name, t.default_schema)
    }
    validate(policy, schemas, "the federation")
    hashed = [m for m in policy.masks if m.rule == "hash"]
    if hashed and hash_key is None:
        raise ConfigError(
            f"{hashed[0].where}: a 'hash' mask needs the federation's secret key: set "
            f"hash_key_file under [coordinator] or the environment variable {HASH_KEY_ENV}"
        )
