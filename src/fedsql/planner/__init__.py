"""parse → resolve → qualify → cut into fragments. See DESIGN.md, "The data path"."""

from fedsql.planner.plan import Fragment, Plan, plan

__all__ = ["Fragment", "Plan", "plan"]
