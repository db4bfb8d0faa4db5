"""``[[mask]]`` and ``[[row_filter]]`` tables from AGENCY.toml / FEDERATION.toml.

Validated twice: their shape when the file is read, and against the tables'
Arrow schemas when the node knows them (:func:`validate`). Messages name the
file and line of the offending entry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from fedsql.errors import ConfigError
from fedsql.policy.masks import check_type
from fedsql.policy.model import RULES, Mask, Policy, RowFilter

_MASK_KEYS = {"table", "column", "rule", "role", "unless_role", "keep_first", "keep_last", "width"}
_FILTER_KEYS = {"table", "where", "role", "unless_role"}


def _lines_of(path: Path | None, header: str) -> list[int]:
    """Line numbers of each ``[[header]]`` in the file, in order."""
    if path is None or not path.exists():
        return []
    pat = re.compile(r"^\s*\[\[\s*" + re.escape(header) + r"\s*\]\]")
    return [i for i, line in enumerate(path.read_text().splitlines(), 1) if pat.match(line)]


def _roles(where: str, entry: dict[str, Any], key: str) -> tuple[str, ...]:
    v = entry.get(key, [])
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(r, str) for r in v):
        raise ConfigError(f"{where}: {key} must be a list of role names")
    return tuple(v)


def parse_policy(path: Path | None, masks: Any, filters: Any) -> Policy:
    """Shape-check the raw TOML lists; returns the Policy."""
    mask_lines = _lines_of(path, "mask")
    filter_lines = _lines_of(path, "row_filter")
    out_m: list[Mask] = []
    for i, m in enumerate(masks or []):
        where = _entry(path, mask_lines, i, "mask", m, _MASK_KEYS, ("table", "column", "rule"))
        rule = m["rule"]
        if rule not in RULES:
            raise ConfigError(f"{where}: unknown mask rule '{rule}'; rules: {', '.join(RULES)}")
        for k in ("keep_first", "keep_last"):
            if k in m and (not isinstance(m[k], int) or isinstance(m[k], bool) or m[k] < 0):
                raise ConfigError(f"{where}: {k} must be a whole number >= 0")
        if ("keep_first" in m or "keep_last" in m) and rule != "partial":
            raise ConfigError(f"{where}: keep_first/keep_last only go with rule 'partial'")
        if rule == "bucket":
            w = m.get("width")
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w <= 0:
                raise ConfigError(f"{where}: rule 'bucket' needs width > 0")
        elif "width" in m:
            raise ConfigError(f"{where}: width only goes with rule 'bucket'")
        out_m.append(
            Mask(
                table=m["table"],
                column=m["column"],
                rule=rule,
                role=_roles(where, m, "role"),
                unless_role=_roles(where, m, "unless_role"),
                keep_first=m.get("keep_first", 0),
                keep_last=m.get("keep_last", 0 if "keep_first" in m else 4),
                width=float(m.get("width", 0.0)),
                where=where,
            )
        )
    out_f: list[RowFilter] = []
    for i, f in enumerate(filters or []):
        where = _entry(path, filter_lines, i, "row_filter", f, _FILTER_KEYS, ("table", "where"))
        _check_filter_sql(where, f["where"])
        out_f.append(
            RowFilter(
                table=f["table"],
                sql=f["where"],
                role=_roles(where, f, "role"),
                unless_role=_roles(where, f, "unless_role"),
                where=where,
            )
        )
    return Policy(tuple(out_m), tuple(out_f))


def _entry(
    path: Path | None,
    lines: list[int],
    i: int,
    kind: str,
    entry: Any,
    known: set[str],
    required: tuple[str, ...],
) -> str:
    """Check one ``[[kind]]`` entry's shape; returns where it is (file:line) for messages."""
    where = f"{path}:{lines[i]}" if i < len(lines) else f"{path}: [[{kind}]] #{i + 1}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: [[{kind}]] must be a table")
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(
            f"{where}: [[{kind}]] has unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    for k in required:
        if not isinstance(entry.get(k), str) or not entry[k].strip():
            raise ConfigError(f"{where}: [[{kind}]] needs '{k}' (a string)")
    return where


def _check_filter_sql(where: str, sql: str) -> exp.Expr:
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except (ParseError, TokenError) as e:
        raise ConfigError(
            f"{where}: row filter is not a valid SQL expression: {str(e).splitlines()[0]}"
        ) from None
    if tree.find(exp.Query, exp.Table) is not None:
        raise ConfigError(
            f"{where}: a row filter is an expression over the table's own columns; "
            "subqueries are not supported"
        )
    return tree


def validate(policy: Policy, schemas: dict[str, pa.Schema], node: str) -> None:
    """Every rule names a known table and column and fits the column's type.

    ``schemas`` maps the table names as rules spell them (lower case) to schemas.
    """
    known = ", ".join(sorted(schemas)) or "none"
    for m in policy.masks:
        schema = schemas.get(m.table.lower())
        if schema is None:
            raise ConfigError(
                f"{m.where}: [[mask]] names unknown table '{m.table}' ({node} has: {known})"
            )
        field = next((f for f in schema if f.name.lower() == m.column.lower()), None)
        if field is None:
            raise ConfigError(
                f"{m.where}: [[mask]] names unknown column '{m.column}' of "
                f"'{m.table}' (columns: {', '.join(schema.names)})"
            )
        why = check_type(m, field.type)
        if why:
            raise ConfigError(f"{m.where}: {why}")
    for f in policy.row_filters:
        schema = schemas.get(f.table.lower())
        if schema is None:
            raise ConfigError(
                f"{f.where}: [[row_filter]] names unknown table '{f.table}' ({node} has: {known})"
            )
        names = {n.lower() for n in schema.names}
        for col in _check_filter_sql(f.where, f.sql).find_all(exp.Column):
            if col.name.lower() not in names:
                raise ConfigError(
                    f"{f.where}: row filter on '{f.table}' reads unknown column "
                    f"'{col.name}' (columns: {', '.join(schema.names)})"
                )
