"""The cost model: rough row estimates, kept apart from the rules that use them.

Estimates only choose between exact plans (whether a semi-join is worth a wave
of calls); they never change a result.
"""

from __future__ import annotations

# Below this estimated size a fragment is not worth waiting for another's keys.
# (Small fragments still take keys: a filtered dimension table passes its filter on
# down the chain, e.g. nation → supplier → lineitem in TPC-H Q21.)
MIN_PROBE_ROWS = 2_000
FILTER_KEEPS = 1 / 3  # each pushed condition on one table keeps about a third ...
MAX_FILTERS_COUNTED = 3  # ... counting at most three


def filtered(row_estimate: int, filters: int) -> float:
    """What a fragment of a table of ``row_estimate`` rows returns after ``filters``
    pushed conditions on one table each (joins in a group taken as key joins).

    >>> filtered(9000, 2)
    1000.0
    """
    return max(row_estimate, 0) * FILTER_KEEPS ** min(filters, MAX_FILTERS_COUNTED)


def grouped(rows: float) -> float:
    """What a fragment returns once aggregated at its agency: fewer than it reads."""
    return rows / 3


def worth_probing(rows: float) -> bool:
    """Whether a fragment is large enough to wait for another's keys."""
    return rows >= MIN_PROBE_ROWS
