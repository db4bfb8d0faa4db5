"""AGENCY.toml → frozen dataclasses, validated once. Unknown keys are rejected.

The connector's own configuration: ``[connector]`` (name, listen, TLS, audit),
``[backend]`` (checked by the kind it names, through the registry: each backend
module owns its keys), ``[[mask]]``/``[[row_filter]]``, ``[[grant]]`` and
``[limits]``. The coordinator's FEDERATION.toml is ``fedsql.config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsql.connectors.kind import BackendConfig
from fedsql.connectors.registry import ENGINES, parse_backend
from fedsql.errors import ConfigError
from fedsql.policy.load import parse_policy
from fedsql.policy.model import Policy
from fedsql.tomlconf import (
    AUDIT_KEYS,
    AuditFiles,
    ServerTLS,
    audit_files,
    check_listen,
    is_size,
    load_toml,
    rel,
    strings,
    take,
)


@dataclass(frozen=True, slots=True)
class Grant:
    """``[[grant]]``: who may query a table at all (``table = "*"``: every table)."""

    table: str
    roles: tuple[str, ...] = ()
    users: tuple[str, ...] = ()


DEFAULT_MAX_SECONDS = 300.0
DEFAULT_MAX_BYTES = 2 << 30
DEFAULT_MAX_MEMORY = "4GB"
DEFAULT_MAX_TEMP = "16GB"


@dataclass(frozen=True, slots=True)
class Limits:
    """``[limits]``: what one fragment may take, and each caller's share of the node.

    Every connector has them, set or not: a fragment over ``max_seconds`` or
    ``max_bytes`` is stopped; the node's DuckDB engines (the DuckDB and files
    backends, the local engine of SQLite/PostgreSQL agencies) run within
    ``max_memory`` and spill at most ``max_temp`` to disk (DuckDB has no per-query
    memory limit: the fragments running at once share it); one user may hold at
    most ``max_fragments_per_user`` of the node's fragment slots, one coordinator
    ``max_fragments_per_coordinator``, so no single client takes them all.
    """

    max_rows: int | None = None  # rows one fragment may return (None: any)
    max_bytes: int | None = DEFAULT_MAX_BYTES  # Arrow IPC bytes one fragment may send
    max_seconds: float | None = DEFAULT_MAX_SECONDS
    max_memory: str = DEFAULT_MAX_MEMORY
    max_temp: str = DEFAULT_MAX_TEMP
    max_fragments_per_user: int = 0  # 0: half of max_concurrent_fragments, at least 1
    max_fragments_per_coordinator: int = 0  # 0: three quarters of them, at least 1

    def user_share(self, slots: int) -> int:
        return self.max_fragments_per_user or max(1, slots // 2)

    def coordinator_share(self, slots: int) -> int:
        return self.max_fragments_per_coordinator or max(1, (3 * slots) // 4)


@dataclass(frozen=True, slots=True)
class AgencyConfig:
    name: str
    listen: str
    insecure: bool
    audit_log: Path | None
    backend: BackendConfig
    max_workers: int = 16
    source: Path | None = None
    policy: Policy = Policy()
    hash_key_file: Path | None = None
    tls: ServerTLS | None = None
    allowed_coordinators: tuple[str, ...] = ()  # certificate CNs; () only when insecure
    require_purpose: bool = False
    grants: tuple[Grant, ...] | None = None  # None: no [[grant]], every table open
    limits: Limits = Limits()
    # Fragments running at once; more wait briefly, then get RESOURCE_EXHAUSTED.
    # 0: max_workers - 2 (threads stay free for Cancel, GetStatus, health).
    max_concurrent_fragments: int = 0
    metrics_listen: str | None = None  # HOST:PORT for Prometheus text metrics
    # Signed requests remembered per coordinator for replay protection (one
    # signature window); a coordinator over it is refused, others are not.
    replay_entries_per_coordinator: int = 100_000
    audit: AuditFiles = field(default_factory=lambda: AuditFiles())


def load_agency(path: str | Path) -> AgencyConfig:
    """Read and validate an AGENCY.toml."""
    p, doc = load_toml(path)
    top = take(
        str(p),
        doc,
        {
            "connector": dict,
            "backend": dict,
            "mask": list,
            "row_filter": list,
            "grant": list,
            "limits": dict,
        },
        ("connector", "backend"),
    )
    c = take(
        f"{p}: [connector]",
        top["connector"],
        {
            "name": str,
            "listen": str,
            "insecure": bool,
            "audit_log": str,
            "max_workers": int,
            "hash_key_file": str,
            "tls": dict,
            "allowed_coordinators": list,
            "require_purpose": bool,
            "max_concurrent_fragments": int,
            "metrics_listen": str,
            "replay_entries_per_coordinator": int,
            **AUDIT_KEYS,
        },
        ("name", "listen"),
    )
    check_listen(f"{p}: [connector].listen", c["listen"])
    tls, allowed = _agency_trust(p, c)
    if "metrics_listen" in c:
        check_listen(f"{p}: [connector].metrics_listen", c["metrics_listen"])
    workers = c.get("max_workers", 16)
    if workers < 4:
        raise ConfigError(f"{p}: [connector].max_workers must be at least 4")
    replay = c.get("replay_entries_per_coordinator", 100_000)
    if isinstance(replay, bool) or replay < 1:
        raise ConfigError(f"{p}: [connector].replay_entries_per_coordinator must be positive")
    concurrent = c.get("max_concurrent_fragments", 0)
    if not 0 <= concurrent <= workers - 2:
        raise ConfigError(
            f"{p}: [connector].max_concurrent_fragments must be between 1 and max_workers - 2 "
            f"({workers - 2}), so that threads stay free for Cancel and status calls"
        )
    base = p.parent
    backend = parse_backend(f"{p}: [backend]", base, top["backend"])
    audit = c.get("audit_log")
    if tls is not None and not audit:
        # Over mutual TLS the audit log is the agency's signed record of every call,
        # and each receipt a coordinator keeps names its line; a node without one
        # would answer with receipts that point nowhere (issue 15, item 12).
        raise ConfigError(
            f"{p}: [connector]: a mutual-TLS connector needs audit_log, the signed "
            'record of every call (e.g. audit_log = "/var/log/fedsql/'
            f'{c["name"]}-audit.jsonl"); only an insecure = true node for local '
            "development may run without one"
        )
    key = c.get("hash_key_file")
    return AgencyConfig(
        name=c["name"],
        listen=c["listen"],
        insecure=tls is None,
        audit_log=(base / audit) if audit else None,
        backend=backend,
        max_workers=workers,
        max_concurrent_fragments=concurrent or workers - 2,
        metrics_listen=c.get("metrics_listen"),
        replay_entries_per_coordinator=replay,
        source=p,
        policy=parse_policy(p, top.get("mask"), top.get("row_filter")),
        hash_key_file=rel(base, key) if key else None,
        tls=tls,
        allowed_coordinators=allowed,
        require_purpose=c.get("require_purpose", False),
        grants=_grants(p, top.get("grant")),
        limits=_limits(p, top.get("limits")),
        audit=audit_files(f"{p}: [connector]", c),
    )


def _agency_trust(p: Path, c: dict[str, Any]) -> tuple[ServerTLS | None, tuple[str, ...]]:
    """[connector] insecure / tls / allowed_coordinators, checked together."""
    insecure = c.get("insecure", False)
    raw = c.get("tls")
    allowed = strings(f"{p}: [connector].allowed_coordinators", c.get("allowed_coordinators", []))
    if raw is None:
        if not insecure:
            raise ConfigError(
                f"{p}: [connector]: set [connector.tls] cert, key, client_ca for mutual TLS "
                "(make them with `fedsql certs init` and `fedsql certs issue connector`), "
                "or insecure = true to serve plaintext gRPC (local development only)"
            )
        if allowed:
            raise ConfigError(
                f"{p}: [connector].allowed_coordinators needs [connector.tls]: without "
                "certificates no coordinator can be identified"
            )
        return None, ()
    if insecure:
        raise ConfigError(f"{p}: [connector]: insecure = true and [connector.tls] contradict")
    t = take(
        f"{p}: [connector.tls]",
        raw,
        {"cert": str, "key": str, "client_ca": str, "crl": str},
        ("cert", "key", "client_ca"),
    )
    if not allowed:
        raise ConfigError(
            f"{p}: [connector].allowed_coordinators: list the coordinators (their "
            "certificates' common names) that may query this connector, "
            'e.g. allowed_coordinators = ["coordinator"]'
        )
    base = p.parent
    crl = rel(base, t["crl"]) if "crl" in t else None
    tls = ServerTLS(rel(base, t["cert"]), rel(base, t["key"]), rel(base, t["client_ca"]), crl)
    return tls, allowed


def _grants(p: Path, raw: Any) -> tuple[Grant, ...] | None:
    if raw is None:
        return None
    out = []
    for i, g in enumerate(raw):
        where = f"{p}: [[grant]] #{i + 1}"
        d = take(where, g, {"table": str, "roles": list, "users": list}, ("table",))
        roles = strings(f"{where}.roles", d.get("roles", []))
        users = strings(f"{where}.users", d.get("users", []))
        if not roles and not users:
            raise ConfigError(f"{where}: name the roles and/or users the table is granted to")
        out.append(Grant(d["table"].lower(), roles, users))
    return tuple(out)


def _limits(p: Path, raw: Any) -> Limits:
    if raw is None:
        return Limits()
    d = take(
        f"{p}: [limits]",
        raw,
        {
            "max_rows": int,
            "max_bytes": int,
            "max_seconds": (int, float),
            "max_memory": str,
            "max_temp": str,
            "max_fragments_per_user": int,
            "max_fragments_per_coordinator": int,
        },
    )
    for k, v in d.items():
        if isinstance(v, str):
            if not is_size(v):
                raise ConfigError(
                    f'{p}: [limits].{k} must be a size such as "4GB" or "512MiB", got {v!r}'
                )
        elif isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{p}: [limits].{k} must be a positive number")
    base = Limits()
    secs = d.get("max_seconds")
    return Limits(
        max_rows=d.get("max_rows"),
        max_bytes=d.get("max_bytes", base.max_bytes),
        max_seconds=float(secs) if secs else base.max_seconds,
        max_memory=d.get("max_memory", base.max_memory).strip(),
        max_temp=d.get("max_temp", base.max_temp).strip(),
        max_fragments_per_user=d.get("max_fragments_per_user", 0),
        max_fragments_per_coordinator=d.get("max_fragments_per_coordinator", 0),
    )


__all__ = [
    "ENGINES",
    "AgencyConfig",
    "AuditFiles",
    "BackendConfig",
    "Grant",
    "Limits",
    "ServerTLS",
    "load_agency",
]
