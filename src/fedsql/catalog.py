"""Names → (connector, remote table, Arrow schema, row estimate)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import pyarrow as pa

from fedsql.errors import CatalogError
from fedsql.wire import RemoteCatalog

DEFAULT_SCHEMAS = ("", "main", "public")


@dataclass(frozen=True, slots=True)
class TableRef:
    """One table of one agency."""

    agency: str
    schema: str  # "" for the backend's default schema
    name: str
    arrow_schema: pa.Schema
    row_count_estimate: int
    masks: tuple[tuple[str, str], ...] = ()  # (column, mask) the agency applies for us
    row_filtered: bool = False  # the agency hides some rows from us
    default_schema: str = "main"  # the agency's own name for its default schema

    def __deepcopy__(self, memo: dict[int, object]) -> TableRef:
        # Immutable: sqlglot deep-copies expression metadata on every copy().
        return self

    @property
    def qualified(self) -> str:
        """The name analysts can always use: agency[.schema].table."""
        return ".".join(p for p in (self.agency, self.schema, self.name) if p)

    @property
    def schema_key(self) -> str:
        """The table's schema as its agency names it ("public" for a PostgreSQL
        default schema, "main" for DuckDB's): never empty."""
        return self.schema or self.default_schema


class Catalog:
    """All tables of a federation, from the connectors' GetCatalog answers."""

    def __init__(self, catalogs: dict[str, RemoteCatalog]) -> None:
        self.catalogs = catalogs
        self.tables: list[TableRef] = [
            TableRef(
                agency,
                t.schema,
                t.name,
                t.arrow_schema,
                t.row_count_estimate,
                t.masks,
                t.row_filtered,
                cat.default_schema,
            )
            for agency, cat in catalogs.items()
            for t in cat.tables
        ]
        self._by_name: dict[str, list[TableRef]] = {}
        for t in self.tables:
            self._by_name.setdefault(t.name.lower(), []).append(t)
        spellings: dict[str, set[str]] = {}
        for t in self.tables:
            for f in t.arrow_schema:
                spellings.setdefault(f.name.lower(), set()).add(f.name)
        # column names spelled one way only across the federation
        self.field_names = frozenset(next(iter(s)) for s in spellings.values() if len(s) == 1)
        self.lowered_names = frozenset(spellings)  # every column name, lower-cased

    @property
    def agencies(self) -> list[str]:
        return list(self.catalogs)

    def resolve(self, parts: list[str]) -> TableRef:
        """Resolve ``[table]``, ``[agency, table]`` or ``[agency, schema, table]``.

        Unqualified names resolve when exactly one connector exposes them.
        """
        parts = [p for p in parts if p]
        shown = ".".join(parts)
        name = parts[-1].lower()
        candidates = self._by_name.get(name, [])
        if len(parts) == 1:
            found = candidates
        elif len(parts) == 2:
            first = parts[0].lower()
            agency = self._agency(first)
            if agency is not None:
                found = [t for t in candidates if t.agency == agency]
                if len(found) > 1:
                    found = [t for t in found if t.schema.lower() in DEFAULT_SCHEMAS] or found
            else:
                found = [t for t in candidates if t.schema.lower() == first]
                if not found:
                    raise CatalogError(
                        f"unknown agency '{parts[0]}' in table name '{shown}'; "
                        f"agencies: {', '.join(self.agencies)}"
                    )
        elif len(parts) == 3:
            agency = self._agency(parts[0].lower())
            if agency is None:
                raise CatalogError(
                    f"unknown agency '{parts[0]}' in table name '{shown}'; "
                    f"agencies: {', '.join(self.agencies)}"
                )
            schema = parts[1].lower()
            found = [
                t
                for t in candidates
                if t.agency == agency
                and (
                    t.schema.lower() == schema
                    or (schema in DEFAULT_SCHEMAS and t.schema.lower() in DEFAULT_SCHEMAS)
                )
            ]
        else:
            raise CatalogError(f"table name '{shown}' has too many parts; use agency.schema.table")
        if len(found) == 1:
            return found[0]
        if not found:
            known = sorted({t.qualified for t in self.tables})
            close = difflib.get_close_matches(shown.lower(), [k.lower() for k in known], n=3)
            if not close:
                close = difflib.get_close_matches(name, sorted({t.name for t in self.tables}), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CatalogError(f"unknown table '{shown}'{hint}")
        names = ", ".join(sorted(t.qualified for t in found))
        raise CatalogError(
            f"table name '{shown}' is ambiguous: it matches {names}; qualify it as agency.table"
        )

    def _agency(self, lowered: str) -> str | None:
        for a in self.catalogs:
            if a.lower() == lowered:
                return a
        return None
