"""The catalog as one caller may see it: the tables their grants open, each
column typed as its mask leaves it, and nothing a row filter would give away."""

from __future__ import annotations

import threading
from dataclasses import replace

import pyarrow as pa

from fedsql import lang
from fedsql.connectors.backend import Backend
from fedsql.connectors.config import AgencyConfig
from fedsql.connectors.identity import Caller, Gate
from fedsql.policy.masks import masked_type
from fedsql.v1 import connector_pb2 as pb
from fedsql.version import __version__
from fedsql.wire import RemoteCatalog, RemoteTable, catalog_to_proto


class CatalogView:
    """Per-caller catalogs of one connector, kept per (user, roles) once built.

    No row count where a row filter hides rows from the caller (it would tell
    how many); a row filter's condition only for those it does not bind."""

    def __init__(
        self,
        cfg: AgencyConfig,
        backend: Backend,
        tables: dict[str, RemoteTable],
        gate: Gate,
        key_fingerprint: str,
    ) -> None:
        self.cfg, self.backend, self.tables, self.gate = cfg, backend, tables, gate
        self.key_fingerprint = key_fingerprint
        self._cache: dict[tuple[str, ...], pb.Catalog] = {}
        self._lock = threading.Lock()

    def for_caller(self, caller: Caller) -> pb.Catalog:
        roles = tuple(sorted(set(caller.principal.roles)))
        user = caller.principal.user if self.cfg.grants is not None else ""
        key = (user, *roles)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        tables = tuple(
            self._as_seen(full, t, roles)
            for full, t in self.tables.items()
            if self.gate.may_query(caller, full)
        )
        cat = catalog_to_proto(
            RemoteCatalog(
                self.cfg.name,
                __version__,
                self.backend.kind,
                tables,
                self.backend.dialect,
                self.backend.capabilities,
                lang.VERSION,
                next((s for s in self.backend.default_schemas if s), "main"),
                hash_key_fingerprint=self.key_fingerprint,
            )
        )
        with self._lock:
            self._cache[key] = cat
        return cat

    def _as_seen(self, full: str, t: RemoteTable, roles: tuple[str, ...]) -> RemoteTable:
        policy = self.cfg.policy
        tp = policy.for_table(full, roles)
        masks, filters = policy.rules_for(full)
        fields = []
        for f in t.arrow_schema:
            m = tp.masks.get(f.name.lower())
            fields.append(f.with_type(masked_type(m, f.type)) if m else f)
        return replace(
            t,
            arrow_schema=pa.schema(fields),
            masks=tuple(
                (f.name, tp.masks[f.name.lower()].describe().split(" [")[0])
                for f in t.arrow_schema
                if f.name.lower() in tp.masks
            ),
            mask_rules=tuple(
                (f.name, m.describe())
                for m in masks
                for f in t.arrow_schema
                if f.name.lower() == m.column.lower()
            ),
            row_filtered=bool(tp.filters),
            row_filters=tuple(f.describe_kind() if tp.filters else f.describe() for f in filters),
            row_count_estimate=-1 if tp.filters else t.row_count_estimate,
        )
