"""The backends a connector can run: one module each, one line each in :data:`BACKENDS`.

Config validation, opening a backend, the harness that makes sample data and
the conformance suite all ask this table; none of them names a backend.
Adding a backend is a new module with a ``KIND`` (see ``docs/backends.md``)
and its line here.

>>> sorted(BACKENDS)
['duckdb', 'files', 'postgres', 'sqlite']
>>> BACKENDS["postgres"].location
'dsn'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsql.connectors import duckdb, files, postgres, sqlite
from fedsql.connectors.backend import Backend, BackendError
from fedsql.connectors.kind import BackendConfig, BackendKind, Sample
from fedsql.errors import ConfigError
from fedsql.lockdown import Setup
from fedsql.tomlconf import Types, check_type, rel

BACKENDS: dict[str, BackendKind] = {
    k.name: k for k in (duckdb.KIND, files.KIND, sqlite.KIND, postgres.KIND)
}

ENGINES = ("auto", "native", "local")
# Keys every kind takes.
COMMON: Types = {"kind": str, "tables": list, "engine": str}


def kind(name: str, where: str = "[backend].kind") -> BackendKind:
    """The registered backend called ``name``, or a ConfigError listing them."""
    found = BACKENDS.get(name)
    if found is None:
        known = ", ".join(f"{k} ({b.what})" for k, b in BACKENDS.items())
        raise ConfigError(f"{where} = '{name}' is not one of {known}")
    return found


def parse_backend(where: str, base: Path, raw: Any) -> BackendConfig:
    """``[backend]`` of an AGENCY.toml, checked by the kind it names (``where``: the
    file and section, for messages; ``base``: the file's directory)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    if "kind" not in raw:
        raise ConfigError(f"{where}: missing required key 'kind'")
    check_type(f"{where}.kind", raw["kind"], str)
    k = kind(raw["kind"], f"{where}.kind")
    allowed = {**COMMON, **k.keys}
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        others = {u: [n for n, b in BACKENDS.items() if u in b.keys] for u in unknown}
        if all(others.values()):  # keys of another kind
            kinds = sorted({n for ns in others.values() for n in ns})
            raise ConfigError(
                f"{where}: {', '.join(unknown)} only go with kind "
                f"{' or '.join(repr(n) for n in kinds)}; kind '{k.name}' takes "
                f"{', '.join(sorted(allowed))}"
            )
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(repr(u) for u in unknown)}; "
            f"kind '{k.name}' takes {', '.join(sorted(allowed))}"
        )
    for key in k.required:
        if key not in raw:
            raise ConfigError(f"{where}: kind '{k.name}' needs '{key}'")
    for key, value in raw.items():
        check_type(f"{where}.{key}", value, allowed[key])
    engine = raw.get("engine", "auto")
    if engine not in ENGINES:
        raise ConfigError(f"{where}.engine = '{engine}' is not one of {', '.join(ENGINES)}")
    tables = raw.get("tables")
    if tables is not None and not all(isinstance(t, str) for t in tables):
        raise ConfigError(f"{where}.tables must be a list of table names")
    own = {key: v for key, v in raw.items() if key in k.keys}
    return BackendConfig(
        kind=k.name,
        path=rel(base, raw["path"]) if k.location == "path" and "path" in raw else None,
        tables=tuple(tables) if tables is not None else None,
        engine=engine,
        options=k.options(where, base, own),
    )


def open_backend(cfg: BackendConfig, setup: Setup | None, limits: dict[str, Any]) -> Backend:
    """Open the configured backend; errors say what is wrong with it (ConfigError)."""
    try:
        return kind(cfg.kind).open(cfg, setup, limits)
    except (FileNotFoundError, ValueError, BackendError) as e:
        raise ConfigError(f"[backend]: {e}") from None


def make_sample(name: str, sample: Sample) -> str:
    """Sample data in the backend called ``name``; returns its location (path or DSN)."""
    return kind(name).sample(sample)


__all__ = ["BACKENDS", "ENGINES", "kind", "make_sample", "open_backend", "parse_backend"]
