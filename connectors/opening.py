"""Opening an agency's backend and checking its policies before the node serves."""

from __future__ import annotations

from typing import Any

from fedsql.connectors import registry
from fedsql.connectors.backend import Backend
from fedsql.connectors.config import AgencyConfig
from fedsql.errors import ConfigError
from fedsql.policy.load import validate
from fedsql.policy.masks import HASH_KEY_ENV, register_hash


def engine_limits(cfg: AgencyConfig) -> dict[str, Any]:
    """Memory and spill limits of the node's own DuckDB engines ([limits])."""
    return {"memory_limit": cfg.limits.max_memory, "max_temp_size": cfg.limits.max_temp}


def open_backend(cfg: AgencyConfig, hash_key: bytes | None = None) -> Backend:
    """The configured backend, opened by its kind (``registry.py``)."""

    def setup(con: Any) -> None:
        register_hash(con, hash_key)

    try:
        return registry.open_backend(cfg.backend, setup, engine_limits(cfg))
    except ConfigError as e:
        raise ConfigError(f"{cfg.source}: {e}") from None


def load_policy(cfg: AgencyConfig, backend: Backend, hash_key: bytes | None) -> None:
    """Check the agency's policies against its real tables; refuse to start if wrong."""
    schemas = {t.full_name.lower(): t.arrow_schema for t in backend.tables()}
    validate(cfg.policy, schemas, f"connector '{cfg.name}'")
    hashed = [m for m in cfg.policy.masks if m.rule == "hash"]
    if hashed and hash_key is None:
        raise ConfigError(
            f"{hashed[0].where}: a 'hash' mask needs the federation's secret key: set "
            f"hash_key_file under [connector] or the environment variable {HASH_KEY_ENV}"
        )
