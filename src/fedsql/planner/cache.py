"""Plans kept per Federation: the same SQL over the same catalog, policies and
roles gives the same plan, so a repeated query skips planning."""

from __future__ import annotations

import threading
from collections import OrderedDict

from fedsql.planner.model import Plan

PLAN_CACHE_SIZE = 256


class PlanCache:
    """A bounded LRU of plans keyed by (SQL text, agencies planned as scans only)."""

    def __init__(self, size: int = PLAN_CACHE_SIZE) -> None:
        self._size = size
        self._plans: OrderedDict[tuple[str, frozenset[str]], Plan] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, frozenset[str]]) -> Plan | None:
        with self._lock:
            cached = self._plans.get(key)
            if cached is not None:
                self._plans.move_to_end(key)
            return cached

    def put(self, key: tuple[str, frozenset[str]], plan: Plan) -> None:
        with self._lock:
            self._plans[key] = plan
            if len(self._plans) > self._size:
                self._plans.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()
