"""The policy model: masks and row filters per table, each for some roles.

A rule applies to a principal when its ``role`` list is empty or shares a
role with the principal, and its ``unless_role`` list shares none. Several
masks on one column: the first that applies wins (config order). Several row
filters on one table: all that apply are ANDed.
"""

from __future__ import annotations

from dataclasses import dataclass

RULES = ("redact", "null", "hash", "partial", "email", "year", "bucket")


@dataclass(frozen=True, slots=True)
class Mask:
    table: str
    column: str
    rule: str
    role: tuple[str, ...] = ()
    unless_role: tuple[str, ...] = ()
    keep_first: int = 0
    keep_last: int = 4
    width: float = 0.0
    where: str = ""  # where it was configured, for messages: "agency.toml:12"

    def applies(self, roles: tuple[str, ...]) -> bool:
        return _applies(self.role, self.unless_role, roles)

    def describe(self) -> str:
        extra = ""
        if self.rule == "partial":
            extra = f"(keep_first={self.keep_first}, keep_last={self.keep_last})"
        elif self.rule == "bucket":
            extra = f"(width={self.width:g})"
        return self.rule + extra + _roles_text(self.role, self.unless_role)


@dataclass(frozen=True, slots=True)
class RowFilter:
    table: str
    sql: str  # a boolean SQL expression over the table's columns (DuckDB dialect)
    role: tuple[str, ...] = ()
    unless_role: tuple[str, ...] = ()
    where: str = ""

    def applies(self, roles: tuple[str, ...]) -> bool:
        return _applies(self.role, self.unless_role, roles)

    def describe(self) -> str:
        return self.sql + _roles_text(self.role, self.unless_role)

    def describe_kind(self) -> str:
        """What the filter is without its condition, whose literals (``o_class <>
        'SECRET'``) are for those it does not bind."""
        return "row filter" + _roles_text(self.role, self.unless_role)


@dataclass(frozen=True, slots=True)
class TablePolicy:
    """What one principal gets for one table."""

    masks: dict[str, Mask]  # column (lower case) → the mask that applies
    filters: tuple[RowFilter, ...]

    def __bool__(self) -> bool:
        return bool(self.masks or self.filters)

    def __deepcopy__(self, memo: dict[int, object]) -> TablePolicy:
        return self  # never mutated; rides along in sqlglot node metadata


@dataclass(frozen=True, slots=True)
class Policy:
    masks: tuple[Mask, ...] = ()
    row_filters: tuple[RowFilter, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.masks or self.row_filters)

    def for_table(self, table: str, roles: tuple[str, ...]) -> TablePolicy:
        t = table.lower()
        masks: dict[str, Mask] = {}
        for m in self.masks:
            if m.table.lower() == t and m.applies(roles):
                masks.setdefault(m.column.lower(), m)
        filters = tuple(f for f in self.row_filters if f.table.lower() == t and f.applies(roles))
        return TablePolicy(masks, filters)

    def rules_for(self, table: str) -> tuple[list[Mask], list[RowFilter]]:
        """Every rule naming ``table``, whatever the roles (for catalogs and explain)."""
        t = table.lower()
        return (
            [m for m in self.masks if m.table.lower() == t],
            [f for f in self.row_filters if f.table.lower() == t],
        )


def _applies(role: tuple[str, ...], unless: tuple[str, ...], roles: tuple[str, ...]) -> bool:
    have = set(roles)
    if role and not have.intersection(role):
        return False
    return not have.intersection(unless)


def _roles_text(role: tuple[str, ...], unless: tuple[str, ...]) -> str:
    parts = []
    if role:
        parts.append("for " + ", ".join(role))
    if unless:
        parts.append("unless " + ", ".join(unless))
    return (" [" + "; ".join(parts) + "]") if parts else ""
