"""TOML → frozen dataclasses, validated once. Unknown keys are rejected.

Two files: AGENCY.toml (one connector node) and FEDERATION.toml (a
coordinator's view of the federation); see DESIGN.md.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsql.errors import ConfigError
from fedsql.policy.load import parse_policy
from fedsql.policy.model import Policy

BACKEND_KINDS = ("duckdb", "files", "sqlite", "postgres")
ENGINES = ("auto", "native", "local")
# [coordinator] compression → what is asked of connectors ("" is none; kept as a
# spelling of it for configs written before zstd became the default).
COMPRESSION_NAMES = {"zstd": "zstd", "lz4": "lz4", "none": "", "": ""}


@dataclass(frozen=True, slots=True)
class BackendConfig:
    kind: str
    path: Path | None  # duckdb/sqlite file, files directory
    tables: tuple[str, ...] | None  # None: expose all tables
    dsn: str | None = None  # postgres: libpq URI without the password
    password_file: Path | None = None  # postgres: the password, from this file ...
    password_env: str | None = None  # ... or from this environment variable
    pool_size: int = 4  # postgres: connections at most
    statement_timeout_seconds: float = 300.0  # postgres: per fragment
    # postgres/sqlite: who computes a fragment's joins and aggregates — the database
    # ("native"), the node's DuckDB over filtered scans ("local"), or per fragment ("auto")
    engine: str = "auto"
    # postgres: start even if the role may write or escalate (loud warning instead)
    allow_writable_role: bool = False

    def __repr__(self) -> str:  # never show a DSN that might carry a secret
        return f"BackendConfig(kind={self.kind!r}, path={self.path!r}, tables={self.tables!r})"


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """A connector's ``[connector.tls]``: its certificate and the CA its clients need."""

    cert: Path
    key: Path
    client_ca: Path
    # X.509 CRL (PEM or DER) signed by the CA in client_ca; reloaded when it changes.
    crl: Path | None = None


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """A coordinator's ``[connector.tls]``: the CA to trust and its own certificate."""

    ca: Path
    cert: Path
    key: Path
    server_name: str | None = None  # name the connector's certificate must carry


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
class AuditFiles:
    """How a node's audit log rotates and checkpoints (``[connector]`` or ``[coordinator]``
    ``audit_rotate_bytes``, ``audit_rotate_daily``, ``audit_checkpoint_seconds``)."""

    rotate_bytes: int | None = None  # start a new file once the current one has this many
    rotate_daily: bool = False  # start a new file on the first line of each UTC day
    # A connector that has written nothing for this long writes a signed checkpoint
    # (a heartbeat that bounds when a cut-off tail ended).
    checkpoint_seconds: float = 300.0


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


@dataclass(frozen=True, slots=True)
class ConnectorRef:
    name: str
    address: str
    insecure: bool
    tls: ClientTLS | None = None


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


def _load(path: str | Path) -> tuple[Path, dict[str, Any]]:
    p = Path(path)
    try:
        with p.open("rb") as f:
            return p, tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None


def _take(
    where: str, d: Any, allowed: dict[str, type | tuple[type, ...]], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check a TOML table: only known keys, the right types, required present."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a table, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
            f"this version knows {', '.join(sorted(allowed))}"
        )
    for k in required:
        if k not in d:
            raise ConfigError(f"{where}: missing required key '{k}'")
    for k, v in d.items():
        t = allowed[k]
        if t is bool and not isinstance(v, bool):
            raise ConfigError(f"{where}.{k}: expected true or false")
        if not isinstance(v, t):
            names = t.__name__ if isinstance(t, type) else "/".join(x.__name__ for x in t)
            raise ConfigError(f"{where}.{k}: expected {names}, got {type(v).__name__}")
    return d


def _check_listen(where: str, listen: str) -> None:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{where}: '{listen}' is not HOST:PORT (e.g. 127.0.0.1:50051)")


def load_agency(path: str | Path) -> AgencyConfig:
    """Read and validate an AGENCY.toml."""
    p, doc = _load(path)
    top = _take(
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
    c = _take(
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
    _check_listen(f"{p}: [connector].listen", c["listen"])
    tls, allowed = _agency_trust(p, c)
    if "metrics_listen" in c:
        _check_listen(f"{p}: [connector].metrics_listen", c["metrics_listen"])
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
    b = _take(
        f"{p}: [backend]",
        top["backend"],
        {
            "kind": str,
            "path": str,
            "tables": list,
            "dsn": str,
            "password_file": str,
            "password_env": str,
            "pool_size": int,
            "statement_timeout_seconds": (int, float),
            "engine": str,
            "allow_writable_role": bool,
        },
        ("kind",),
    )
    if b.get("engine", "auto") not in ENGINES:
        raise ConfigError(
            f"{p}: [backend].engine = '{b['engine']}' is not one of {', '.join(ENGINES)}"
        )
    if b["kind"] not in BACKEND_KINDS:
        raise ConfigError(
            f"{p}: [backend].kind = '{b['kind']}' is not one of {', '.join(BACKEND_KINDS)}"
        )
    need = "dsn" if b["kind"] == "postgres" else "path"
    if need not in b:
        raise ConfigError(f"{p}: [backend]: kind '{b['kind']}' needs '{need}'")
    if b["kind"] == "postgres" and "path" in b:
        raise ConfigError(f"{p}: [backend]: kind 'postgres' takes 'dsn', not 'path'")
    if b["kind"] != "postgres":
        extra = sorted(
            set(b)
            & {
                "dsn",
                "password_file",
                "password_env",
                "pool_size",
                "statement_timeout_seconds",
                "allow_writable_role",
            }
        )
        if extra:
            raise ConfigError(f"{p}: [backend]: {', '.join(extra)} only go with kind 'postgres'")
    if "dsn" in b and re.search(r"://[^/@]*:[^/@]*@", b["dsn"]):
        raise ConfigError(
            f"{p}: [backend].dsn must not contain a password; use password_file or password_env"
        )
    tables = b.get("tables")
    if tables is not None and not all(isinstance(t, str) for t in tables):
        raise ConfigError(f"{p}: [backend].tables must be a list of table names")
    base = p.parent
    audit = c.get("audit_log")
    key = c.get("hash_key_file")
    return AgencyConfig(
        name=c["name"],
        listen=c["listen"],
        insecure=tls is None,
        audit_log=(base / audit) if audit else None,
        backend=BackendConfig(
            kind=b["kind"],
            path=_rel(base, b["path"]) if "path" in b else None,
            tables=tuple(tables) if tables is not None else None,
            dsn=b.get("dsn"),
            password_file=_rel(base, b["password_file"]) if "password_file" in b else None,
            password_env=b.get("password_env"),
            pool_size=b.get("pool_size", 4),
            statement_timeout_seconds=float(b.get("statement_timeout_seconds", 300.0)),
            engine=b.get("engine", "auto"),
            allow_writable_role=b.get("allow_writable_role", False),
        ),
        max_workers=workers,
        max_concurrent_fragments=concurrent or workers - 2,
        metrics_listen=c.get("metrics_listen"),
        replay_entries_per_coordinator=replay,
        source=p,
        policy=parse_policy(p, top.get("mask"), top.get("row_filter")),
        hash_key_file=_rel(base, key) if key else None,
        tls=tls,
        allowed_coordinators=allowed,
        require_purpose=c.get("require_purpose", False),
        grants=_grants(p, top.get("grant")),
        limits=_limits(p, top.get("limits")),
        audit=_audit_files(f"{p}: [connector]", c),
    )


AUDIT_KEYS: dict[str, type | tuple[type, ...]] = {
    "audit_rotate_bytes": int,
    "audit_rotate_daily": bool,
    "audit_checkpoint_seconds": (int, float),
}


def _audit_files(where: str, d: dict[str, Any]) -> AuditFiles:
    size = d.get("audit_rotate_bytes")
    if size is not None and (isinstance(size, bool) or size < 4096):
        raise ConfigError(f"{where}.audit_rotate_bytes must be at least 4096")
    every = d.get("audit_checkpoint_seconds", 300.0)
    if isinstance(every, bool) or every <= 0:
        raise ConfigError(f"{where}.audit_checkpoint_seconds must be a positive number")
    return AuditFiles(size, d.get("audit_rotate_daily", False), float(every))


def _strings(where: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ConfigError(f"{where}: expected a list of names")
    return tuple(v)


def _agency_trust(p: Path, c: dict[str, Any]) -> tuple[ServerTLS | None, tuple[str, ...]]:
    """[connector] insecure / tls / allowed_coordinators, checked together."""
    insecure = c.get("insecure", False)
    raw = c.get("tls")
    allowed = _strings(f"{p}: [connector].allowed_coordinators", c.get("allowed_coordinators", []))
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
    t = _take(
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
    crl = _rel(base, t["crl"]) if "crl" in t else None
    tls = ServerTLS(_rel(base, t["cert"]), _rel(base, t["key"]), _rel(base, t["client_ca"]), crl)
    return tls, allowed


def _grants(p: Path, raw: Any) -> tuple[Grant, ...] | None:
    if raw is None:
        return None
    out = []
    for i, g in enumerate(raw):
        where = f"{p}: [[grant]] #{i + 1}"
        d = _take(where, g, {"table": str, "roles": list, "users": list}, ("table",))
        roles = _strings(f"{where}.roles", d.get("roles", []))
        users = _strings(f"{where}.users", d.get("users", []))
        if not roles and not users:
            raise ConfigError(f"{where}: name the roles and/or users the table is granted to")
        out.append(Grant(d["table"].lower(), roles, users))
    return tuple(out)


_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


def _limits(p: Path, raw: Any) -> Limits:
    if raw is None:
        return Limits()
    d = _take(
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
            if not _SIZE.fullmatch(v.strip()):
                raise ConfigError(
                    f"{p}: [limits].{k} must be a size such as \"4GB\" or \"512MiB\", got {v!r}"
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


def _client_tls(where: str, base: Path, raw: Any) -> ClientTLS:
    t = _take(
        where,
        raw,
        {"ca": str, "cert": str, "key": str, "server_name": str},
        ("ca", "cert", "key"),
    )
    return ClientTLS(
        _rel(base, t["ca"]), _rel(base, t["cert"]), _rel(base, t["key"]), t.get("server_name")
    )


def load_federation(path: str | Path) -> FederationConfig:
    """Read and validate a FEDERATION.toml."""
    p, doc = _load(path)
    top = _take(
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
    coord = _take(
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
        c = _take(
            f"{p}: [[connector]] #{i + 1}",
            raw,
            {"name": str, "address": str, "insecure": bool, "tls": dict},
            ("name", "address"),
        )
        where = f"{p}: [[connector]] '{c['name']}'"
        _check_listen(f"{where}.address", c["address"])
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
        u = _take(
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
        hash_key_file=_rel(p.parent, key) if key else None,
        compression=COMPRESSION_NAMES[coord.get("compression", "zstd")],
        allow_partial=coord.get("allow_partial", False),
        connect_timeout_seconds=float(coord.get("connect_timeout_seconds", 5.0)),
        retries=coord.get("retries", 3),
        memory_limit=coord.get("memory_limit", ""),
        temp_directory=_rel(p.parent, tmpdir) if tmpdir else None,
        service=_service(p, top.get("service", {}), users),
        audit_log=_rel(p.parent, coord["audit_log"]) if "audit_log" in coord else None,
        audit=_audit_files(f"{p}: [coordinator]", coord),
    )


def _password_hash(p: Path, user: str, u: dict[str, Any]) -> str | None:
    where = f"{p}: [user.{user}]"
    h: str | None
    if "password_hash" in u and "password_hash_file" in u:
        raise ConfigError(f"{where}: give password_hash or password_hash_file, not both")
    if "password_hash_file" in u:
        f = _rel(p.parent, u["password_hash_file"])
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
    s = _take(
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
    tls = _take(f"{p}: [service.tls]", s.get("tls", {}), {"cert": str, "key": str})
    if tls and set(tls) != {"cert", "key"}:
        raise ConfigError(f"{p}: [service.tls] needs both cert and key (PEM files)")
    if tls and s.get("insecure", False):
        raise ConfigError(f"{p}: [service]: insecure = true and [service.tls] contradict")
    listen = s.get("listen", "127.0.0.1:8815")
    _check_listen(f"{p}: [service].listen", listen)
    admins = s.get("admins", [])
    unknown = [a for a in admins if a not in users]
    if unknown:
        raise ConfigError(f"{p}: [service].admins names unknown user(s) {', '.join(unknown)}")
    base = ServiceConfig()
    return ServiceConfig(
        listen=listen,
        insecure=s.get("insecure", False),
        tls_cert=_rel(p.parent, tls["cert"]) if tls else None,
        tls_key=_rel(p.parent, tls["key"]) if tls else None,
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


def _rel(base: Path, path: str) -> Path:
    q = Path(path)
    return q if q.is_absolute() else base / q
