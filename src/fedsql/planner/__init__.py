"""parse → resolve → normalize → cut into fragments → optimize: ``plan()`` applies
the rules of ``planner/plan.py:RULES`` in order. See docs/architecture.md."""

from fedsql.planner.model import Fragment, KeySlot, Plan, RemoteQuery, ScalarSlot
from fedsql.planner.plan import plan

__all__ = ["Fragment", "KeySlot", "Plan", "RemoteQuery", "ScalarSlot", "plan"]
