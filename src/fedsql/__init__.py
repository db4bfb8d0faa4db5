"""fedsql: federated SQL that leaves data in place.

>>> import fedsql
>>> fed = fedsql.connect("federation.toml", user="alice")  # doctest: +SKIP
>>> fed.sql("SELECT count(*) FROM lineitem")                # doctest: +SKIP
"""

from fedsql.client import Federation, connect
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

__version__ = "0.1.0"

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
