"""The names fedsql gives its own relations and columns, written down in one place.

Every generated name starts with :data:`PREFIX`, which the fragment language
reserves: no analyst's or coordinator's CTE may take it (``fedsql.lang.bind``),
and the connector names its own scans with an unguessable token on top.

| name | made by | means |
| --- | --- | --- |
| ``__fedsql_f<N>`` | planner | fragment N's result, in the residual |
| ``__fedsql_g<N>`` | planner | a co-located join group's alias in the residual |
| ``__fedsql_keys<N>`` | executor | a key set shipped with a fragment (wire contract) |
| ``__fedsql_scalar_<fragment>`` | planner | a scalar subquery's value, in a filter slot |
| ``__fedsql_pa<N>`` | planner | a partial aggregate computed at the agency |
| ``__fedsql_pu<N>`` | planner | a partial aggregate of one UNION ALL branch |
| ``__fedsql_e<N>`` | planner | an expression computed at the agency |
| ``__fedsql_d`` | planner | a fragment under DISTINCT at the agency |
| ``__fedsql_inner`` | planner | the fragment inside its aggregation at the agency |
| ``__fedsql_row`` | planner | a constant output, when no column is needed |
| ``__fedsql_src_<N>`` | executor | a fragment result streaming into the merge |
| ``__fedsql_scan_<token>_<N>`` | connector | a local scan of the backend |
| ``__fedsql_p<N>`` | service | the N-th ``?`` parameter of a prepared statement |
| ``__fedsql_empty`` | planner/connector | an empty table copying a schema |
"""

from __future__ import annotations

import re

PREFIX = "__fedsql_"
FRAGMENT = PREFIX + "f"
GROUP = PREFIX + "g"
KEYS = PREFIX + "keys"
SCALAR = PREFIX + "scalar_"
PARTIAL = PREFIX + "pa"
UNION_PARTIAL = PREFIX + "pu"
COMPUTED = PREFIX + "e"
DISTINCT = PREFIX + "d"
INNER = PREFIX + "inner"
ROW = PREFIX + "row"
SOURCE = PREFIX + "src_"
SCAN = PREFIX + "scan_"
PARAMETER = PREFIX + "p"
EMPTY = PREFIX + "empty"

KEY_SET_NAME = re.compile(re.escape(KEYS) + r"\d+")


def fragment(n: int) -> str:
    """>>> fragment(3)
    '__fedsql_f3'
    """
    return f"{FRAGMENT}{n}"


def is_fragment(name: str) -> bool:
    return name.startswith(FRAGMENT) and name[len(FRAGMENT) :].isdigit()


__all__ = [
    "COMPUTED",
    "DISTINCT",
    "EMPTY",
    "FRAGMENT",
    "GROUP",
    "INNER",
    "KEYS",
    "KEY_SET_NAME",
    "PARAMETER",
    "PARTIAL",
    "PREFIX",
    "ROW",
    "SCALAR",
    "SCAN",
    "SOURCE",
    "UNION_PARTIAL",
    "fragment",
    "is_fragment",
]
