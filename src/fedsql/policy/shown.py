"""The federation's own policy as `fedsql catalog` shows it beside the agencies'."""

from __future__ import annotations

from fedsql.policy.model import Policy


def table_names(agency: str, schema: str, name: str, default_schema: str) -> set[str]:
    """The names a FEDERATION.toml rule may give a table: ``agency[.schema].table`` as
    analysts write it, and ``agency.<schema as the agency names it>.table``.

    >>> sorted(table_names("tax", "", "returns", "public"))
    ['tax.public.returns', 'tax.returns']
    """
    shown = ".".join(p for p in (agency, schema, name) if p)
    return {shown, f"{agency}.{schema or default_schema}.{name}"}


def federation_rules(
    policy: Policy,
    roles: tuple[str, ...],
    names: set[str],
    columns: list[str],
    masks: dict[str, str],
    rules: dict[str, list[str]],
) -> list[str]:
    """The federation's own masks and row filters on the table called ``names``
    ([[mask]]/[[row_filter]] in FEDERATION.toml, applied at the coordinator over
    what the agency sends): merged into ``masks``/``rules`` per column; the
    row-filter lines returned. A filter's condition is shown only to those it
    does not bind, as agencies do."""
    names = {n.lower() for n in names}
    lines = []
    for f in policy.row_filters:
        if f.table.lower() in names:
            binds = f.applies(roles)
            shown = f.describe_kind() if binds else f"row filter: {f.describe()}"
            state = "applies to you" if binds else "not for you"
            lines.append(f"{shown}  (the federation's; {state})")
    got: set[str] = set()
    for m in policy.masks:
        if m.table.lower() not in names:
            continue
        col = next((c for c in columns if c.lower() == m.column.lower()), m.column)
        rules.setdefault(col, []).append(f"{m.describe()} (federation)")
        if m.applies(roles) and col not in got:  # the first that applies wins
            got.add(col)
            had = masks.get(col, "-")
            masks[col] = m.rule if had in ("-", "") else f"{had}, then {m.rule}"
    return lines
