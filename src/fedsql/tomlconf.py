"""What both programs' config files share: reading TOML, checking a table, TLS files.

AGENCY.toml is read on the connector's side (``fedsql.connectors.config``),
FEDERATION.toml on the coordinator's (``fedsql.config``); both check their
tables with :func:`take` (unknown keys rejected, types checked, required keys
present) and resolve relative paths against the file (:func:`rel`). The TLS
sections are here because ``fedsql.trust``, used by both, reads them.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsql.errors import ConfigError

Types = dict[str, type | tuple[type, ...]]


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
class ConnectorRef:
    """A connector as a coordinator reaches it (``[[connector]]`` in FEDERATION.toml)."""

    name: str
    address: str
    insecure: bool
    tls: ClientTLS | None = None


@dataclass(frozen=True, slots=True)
class AuditFiles:
    """How a node's audit log rotates and checkpoints (``[connector]`` or ``[coordinator]``
    ``audit_rotate_bytes``, ``audit_rotate_daily``, ``audit_checkpoint_seconds``)."""

    rotate_bytes: int | None = None  # start a new file once the current one has this many
    rotate_daily: bool = False  # start a new file on the first line of each UTC day
    # A connector that has written nothing for this long writes a signed checkpoint
    # (a heartbeat that bounds when a cut-off tail ended).
    checkpoint_seconds: float = 300.0


AUDIT_KEYS: Types = {
    "audit_rotate_bytes": int,
    "audit_rotate_daily": bool,
    "audit_checkpoint_seconds": (int, float),
}


def load_toml(path: str | Path) -> tuple[Path, dict[str, Any]]:
    p = Path(path)
    try:
        with p.open("rb") as f:
            return p, tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None


def take(where: str, d: Any, allowed: Types, required: tuple[str, ...] = ()) -> dict[str, Any]:
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
        check_type(f"{where}.{k}", v, allowed[k])
    return d


def check_type(where: str, v: Any, t: type | tuple[type, ...]) -> None:
    if t is bool and not isinstance(v, bool):
        raise ConfigError(f"{where}: expected true or false")
    if not isinstance(v, t):
        names = t.__name__ if isinstance(t, type) else "/".join(x.__name__ for x in t)
        raise ConfigError(f"{where}: expected {names}, got {type(v).__name__}")


def check_listen(where: str, listen: str) -> None:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{where}: '{listen}' is not HOST:PORT (e.g. 127.0.0.1:50051)")


def audit_files(where: str, d: dict[str, Any]) -> AuditFiles:
    size = d.get("audit_rotate_bytes")
    if size is not None and (isinstance(size, bool) or size < 4096):
        raise ConfigError(f"{where}.audit_rotate_bytes must be at least 4096")
    every = d.get("audit_checkpoint_seconds", 300.0)
    if isinstance(every, bool) or every <= 0:
        raise ConfigError(f"{where}.audit_checkpoint_seconds must be a positive number")
    return AuditFiles(size, d.get("audit_rotate_daily", False), float(every))


def strings(where: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ConfigError(f"{where}: expected a list of names")
    return tuple(v)


_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


def is_size(v: str) -> bool:
    """A memory or disk size as DuckDB takes it ("4GB", "512MiB")."""
    return bool(_SIZE.fullmatch(v.strip()))


def rel(base: Path, path: str) -> Path:
    """``path`` as written in a config file: relative paths resolve against its directory."""
    q = Path(path)
    return q if q.is_absolute() else base / q
