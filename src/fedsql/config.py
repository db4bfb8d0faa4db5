"""FEDERATION.toml → frozen dataclasses, validated once. Unknown keys are rejected.

The coordinator's view of the federation: its connectors, users, policy,
``[coordinator]`` and ``[service]``; see DESIGN.md. AGENCY.toml (one connector
node) is read on the connector's side, ``fedsql.connectors.config``; its names
(``load_agency``, ``AgencyConfig``, ...) are still importable from here, loaded
only when asked for, so a coordinator does not import the connector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsql.errors import ConfigError
from fedsql.policy.load import parse_policy
from fedsql.policy.model import Policy
from fedsql.tomlconf import (
    AuditFiles,
    ClientTLS,
    ConnectorRef,
    ServerTLS,
    audit_files,
    check_listen,
    load_toml,
    rel,
    take,
)

# [coordinator] compression → what is asked of connectors ("" is none; kept as a
# spelling of it for configs written before zstd became the default).
COMPRESSION_NAMES = {"zstd": "zstd", "lz4": "lz4", "none": "", "": ""}


@dataclass(frozen=True, slots=True)
class UserConfig:
    name: str
    roles: tuple[str, ...]
    # `fedsql serve` sign-in: a hash from `fedsql passwd` (never the password itself)
    password_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """`[service]`: the Flight SQL front door (`fedsql serve`)."""

    listen: str = "127.0.0.1:8815"
    insecure: bool = False  # plaintext gRPC (local development only)
    tls_cert: Path | None = None  # [service.tls] cert, key: PEM files
    tls_key: Path | None = None
    token_ttl_seconds: float = 12 * 3600.0  # bearer tokens handed out at sign-in
    admins: tuple[str, ...] = ()  # users who may list and cancel everyone's queries
    history: int = 200  # finished queries kept for `fedsql queries`
    # Results waiting for their DoGet, per user (issue 17): over the count or the
    # bytes, the user's oldest unread results are dropped; one result larger than
    # the bytes is refused. An unread result is dropped after its lifetime.
    max_results_per_user: int = 8
    max_result_bytes_per_user: int = 512 << 20
    result_ttl_seconds: float = 120.0
    max_parameter_rows: int = 100  # rows of one prepared statement's DoPut (one query each)
    # Sign-in throttling: a user (any address) may fail this many times for free,
    # an address (any user) this many; then each failure locks that user or
    # address for 1, 2, 4 ... seconds, at most signin_max_delay_seconds.
    signin_free_failures: int = 3
    signin_free_failures_per_address: int = 20
    signin_max_delay_seconds: float = 60.0
    max_concurrent_signins: int = 2  # password checks (scrypt, 32 MiB each) at once


@dataclass(frozen=True, slots=True)
class FederationConfig:
    connectors: tuple[ConnectorRef, ...]
    users: dict[str, UserConfig] = field(default_factory=dict)
    timeout_seconds: float = 300.0
    source: Path | None = None
    policy: Policy = Policy()
    hash_key_file: Path | None = None
    # Arrow IPC buffer compression asked of connectors: "zstd" (default), "lz4" or
    # "" (none). zstd costs no measurable time even on loopback (TPC-H SF 1: 22 queries
    # within noise) and moves a fifth of the bytes.
    compression: str = "zstd"
    # A fragment whose agency cannot be reached (or dies) contributes no rows
    # instead of failing the query; the result lists the missing agencies.
    allow_partial: bool = False
    connect_timeout_seconds: float = 5.0  # to reach a connector before a fragment is sent
    retries: int = 3  # extra attempts of a fragment that is safe to re-run
    memory_limit: str = ""  # DuckDB merge memory_limit, e.g. "2GB" ("": DuckDB's default)
    temp_directory: Path | None = None  # DuckDB merge spill directory (None: system temp)
    service: ServiceConfig = ServiceConfig()
    # The coordinator's own signed audit log of queries and agencies' receipts.
    audit_log: Path | None = None
    audit: AuditFiles = field(default_factory=lambda: AuditFiles())

    def connector(self, name: str) -> ConnectorRef:
        for c in self.connectors:
            if c.name == name:
                return c
        raise ConfigError(f"no connector named '{name}' in the federation config")


def _client_tls(where: str, base: Path, raw: Any) -> ClientTLS:
    t = take(
        where,
        raw,
        {"ca": str, "cert": str, "key": str, "server_name": str},
        ("ca", "cert", "key"),
    )
    return ClientTLS(
        rel(base, t["ca"]), rel(base, t["cert"]), rel(base, t["key"]), t.get("server_name")
    )


def load_federation(path: str | Path) -> FederationConfig:
    """Read and validate a FEDERATION.toml."""
    p, doc = load_toml(path)
    top = take(
        str(p),
        doc,
        {
            "connector": list,
            "user": dict,
            "coordinator": dict,
            "mask": list,
            "row_filter": list,
            "service": dict,
        },
        ("connector",),
    )
    coord = take(
        f"{p}: [coordinator]",
        top.get("coordinator", {}),
        {
            "timeout_seconds": (int, float),
            "hash_key_file": str,
            "compression": str,
            "tls": dict,
            "allow_partial": bool,
            "connect_timeout_seconds": (int, float),
            "retries": int,
            "memory_limit": str,
            "temp_directory": str,
            "audit_log": str,
            "audit_rotate_bytes": int,
            "audit_rotate_daily": bool,
        },
    )
    default_tls = (
        _client_tls(f"{p}: [coordinator.tls]", p.parent, coord["tls"]) if "tls" in coord else None
    )
    conns: list[ConnectorRef] = []
    for i, raw in enumerate(top["connector"]):
        c = take(
            f"{p}: [[connector]] #{i + 1}",
            raw,
            {"name": str, "address": str, "insecure": bool, "tls": dict},
            ("name", "address"),
        )
        where = f"{p}: [[connector]] '{c['name']}'"
        check_listen(f"{where}.address", c["address"])
        if any(x.name == c["name"] for x in conns):
            raise ConfigError(f"{p}: connector name '{c['name']}' appears twice")
        tls = _client_tls(f"{where}: [connector.tls]", p.parent, c["tls"]) if "tls" in c else None
        tls = tls or default_tls
        if c.get("insecure", False):
            if "tls" in c:
                raise ConfigError(f"{where}: insecure = true and [connector.tls] contradict")
            tls = None
        elif tls is None:
            raise ConfigError(
                f"{where}: set [connector.tls] ca, cert, key (or [coordinator.tls] for all "
                "connectors) for mutual TLS, or insecure = true for a plaintext connector "
                "(local development only)"
            )
        conns.append(ConnectorRef(c["name"], c["address"], tls is None, tls))
    users: dict[str, UserConfig] = {}
    for name, raw in top.get("user", {}).items():
        u = take(
            f"{p}: [user.{name}]",
            raw,
            {"roles": list, "password_hash": str, "password_hash_file": str},
        )
        roles = u.get("roles", [])
        if not all(isinstance(r, str) for r in roles):
            raise ConfigError(f"{p}: [user.{name}].roles must be a list of strings")
        users[name] = UserConfig(name, tuple(roles), _password_hash(p, name, u))
    for k in ("timeout_seconds", "connect_timeout_seconds"):
        if k in coord and coord[k] <= 0:
            raise ConfigError(f"{p}: [coordinator].{k} must be a positive number of seconds")
    if not 0 <= coord.get("retries", 3) <= 10:
        raise ConfigError(f"{p}: [coordinator].retries must be between 0 and 10")
    if not re.fullmatch(r"(\d+(\.\d+)?\s*[KMGT]i?B)?", coord.get("memory_limit", "")):
        raise ConfigError(f"{p}: [coordinator].memory_limit must look like '2GB' or '512MiB'")
    tmpdir = coord.get("temp_directory")
    if coord.get("compression", "zstd") not in COMPRESSION_NAMES:
        raise ConfigError(f"{p}: [coordinator].compression must be zstd, lz4 or none")
    key = coord.get("hash_key_file")
    return FederationConfig(
        connectors=tuple(conns),
        users=users,
        timeout_seconds=float(coord.get("timeout_seconds", 300.0)),
        source=p,
        policy=parse_policy(p, top.get("mask"), top.get("row_filter")),
        hash_key_file=rel(p.parent, key) if key else None,
        compression=COMPRESSION_NAMES[coord.get("compression", "zstd")],
        allow_partial=coord.get("allow_partial", False),
        connect_timeout_seconds=float(coord.get("connect_timeout_seconds", 5.0)),
        retries=coord.get("retries", 3),
        memory_limit=coord.get("memory_limit", ""),
        temp_directory=rel(p.parent, tmpdir) if tmpdir else None,
        service=_service(p, top.get("service", {}), users),
        audit_log=rel(p.parent, coord["audit_log"]) if "audit_log" in coord else None,
        audit=audit_files(f"{p}: [coordinator]", coord),
    )


def _password_hash(p: Path, user: str, u: dict[str, Any]) -> str | None:
    where = f"{p}: [user.{user}]"
    h: str | None
    if "password_hash" in u and "password_hash_file" in u:
        raise ConfigError(f"{where}: give password_hash or password_hash_file, not both")
    if "password_hash_file" in u:
        f = rel(p.parent, u["password_hash_file"])
        try:
            h = f.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read {f}: {e.strerror}") from None
    else:
        h = u.get("password_hash")
    if h is not None and not h.startswith("scrypt$"):
        raise ConfigError(
            f"{where}: password_hash must be a hash from `fedsql passwd` (scrypt$...), "
            "never the password itself"
        )
    return h


def _service(p: Path, raw: Any, users: dict[str, UserConfig]) -> ServiceConfig:
    s = take(
        f"{p}: [service]",
        raw,
        {
            "listen": str,
            "insecure": bool,
            "tls": dict,
            "token_ttl_seconds": (int, float),
            "admins": list,
            "history": int,
            "max_results_per_user": int,
            "max_result_bytes_per_user": int,
            "result_ttl_seconds": (int, float),
            "max_parameter_rows": int,
            "signin_free_failures": int,
            "signin_free_failures_per_address": int,
            "signin_max_delay_seconds": (int, float),
            "max_concurrent_signins": int,
        },
    )
    for k in (
        "max_results_per_user",
        "max_result_bytes_per_user",
        "result_ttl_seconds",
        "max_parameter_rows",
        "signin_max_delay_seconds",
        "max_concurrent_signins",
    ):
        if k in s and (isinstance(s[k], bool) or s[k] <= 0):
            raise ConfigError(f"{p}: [service].{k} must be a positive number")
    for k in ("signin_free_failures", "signin_free_failures_per_address"):
        if k in s and (isinstance(s[k], bool) or s[k] < 0):
            raise ConfigError(f"{p}: [service].{k} must be 0 or more")
    tls = take(f"{p}: [service.tls]", s.get("tls", {}), {"cert": str, "key": str})
    if tls and set(tls) != {"cert", "key"}:
        raise ConfigError(f"{p}: [service.tls] needs both cert and key (PEM files)")
    if tls and s.get("insecure", False):
        raise ConfigError(f"{p}: [service]: insecure = true and [service.tls] contradict")
    listen = s.get("listen", "127.0.0.1:8815")
    check_listen(f"{p}: [service].listen", listen)
    admins = s.get("admins", [])
    unknown = [a for a in admins if a not in users]
    if unknown:
        raise ConfigError(f"{p}: [service].admins names unknown user(s) {', '.join(unknown)}")
    base = ServiceConfig()
    return ServiceConfig(
        listen=listen,
        insecure=s.get("insecure", False),
        tls_cert=rel(p.parent, tls["cert"]) if tls else None,
        tls_key=rel(p.parent, tls["key"]) if tls else None,
        token_ttl_seconds=float(s.get("token_ttl_seconds", 12 * 3600.0)),
        admins=tuple(admins),
        history=s.get("history", 200),
        max_results_per_user=s.get("max_results_per_user", base.max_results_per_user),
        max_result_bytes_per_user=s.get(
            "max_result_bytes_per_user", base.max_result_bytes_per_user
        ),
        result_ttl_seconds=float(s.get("result_ttl_seconds", base.result_ttl_seconds)),
        max_parameter_rows=s.get("max_parameter_rows", base.max_parameter_rows),
        signin_free_failures=s.get("signin_free_failures", base.signin_free_failures),
        signin_free_failures_per_address=s.get(
            "signin_free_failures_per_address", base.signin_free_failures_per_address
        ),
        signin_max_delay_seconds=float(
            s.get("signin_max_delay_seconds", base.signin_max_delay_seconds)
        ),
        max_concurrent_signins=s.get("max_concurrent_signins", base.max_concurrent_signins),
    )


# AGENCY.toml's names, where they were before the connector had its own module.
_AGENCY = (
    "AgencyConfig",
    "BackendConfig",
    "Grant",
    "Limits",
    "load_agency",
    "ENGINES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_MAX_TEMP",
)


def __getattr__(name: str) -> Any:  # PEP 562: loaded only when asked for
    if name in _AGENCY:
        from fedsql.connectors import config as agency

        return getattr(agency, name)
    if name == "BACKEND_KINDS":
        from fedsql.connectors.registry import BACKENDS

        return tuple(BACKENDS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AuditFiles",
    "ClientTLS",
    "ConnectorRef",
    "FederationConfig",
    "ServerTLS",
    "ServiceConfig",
    "UserConfig",
    "load_federation",
]
