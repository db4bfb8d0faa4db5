"""fedsql: federated SQL that leaves data in place.

>>> import fedsql
>>> fed = fedsql.connect("federation.toml", user="alice")  # doctest: +SKIP
>>> fed.sql("SELECT count(*) FROM lineitem")                # doctest: +SKIP

Lazy (PEP 562): ``connect`` and ``Federation`` load the coordinator (client,
planner, executor) when first asked for, so importing any ``fedsql.*`` module —
the connector's above all — does not (``tests/test_layers.py`` proves it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# gRPC's C core writes its own log lines to stderr (a failed TLS handshake at INFO,
# issue 15): fedsql's errors say the same in words, once. gRPC reads this when it is
# first imported, which is just below; GRPC_VERBOSITY=INFO (or DEBUG) brings them back.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from fedsql.errors import (
    CatalogError,
    ConfigError,
    ConnectorError,
    ExecutionError,
    FedSQLError,
    FragmentLimitExceeded,
    FragmentRefused,
    PlanError,
    PolicyError,
    QueryTimeout,
)
from fedsql.version import __version__

if TYPE_CHECKING:
    from fedsql.client import Federation, connect

_COORDINATOR = ("Federation", "connect")


def __getattr__(name: str) -> Any:
    if name in _COORDINATOR:
        from fedsql import client

        value = getattr(client, name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module 'fedsql' has no attribute {name!r}")


__all__ = [
    "CatalogError",
    "ConfigError",
    "ConnectorError",
    "ExecutionError",
    "FedSQLError",
    "Federation",
    "FragmentLimitExceeded",
    "FragmentRefused",
    "PlanError",
    "PolicyError",
    "QueryTimeout",
    "connect",
    "__version__",
]
