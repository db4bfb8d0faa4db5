"""Masks, row filters and roles: one model and one rewrite, used by both the
connector (its agency's policies) and the coordinator (the federation's)."""

from fedsql.policy.model import Mask, Policy, RowFilter, TablePolicy
from fedsql.policy.rewrite import apply_views, view_for

__all__ = ["Mask", "Policy", "RowFilter", "TablePolicy", "apply_views", "view_for"]
