"""``fedsql connector check``: the backend, opened as at start, and what names its tables.

``opening.open_backend`` runs each kind's start-time checks (for PostgreSQL the
role check of ``pgrole.py``); what they log as warnings becomes findings.
Each exposed table is read (``LIMIT 0``), each mask and row filter validated
against the real columns, each grant against the exposed tables.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pyarrow as pa
from sqlglot import exp

from fedsql.connectors.backend import Backend
from fedsql.connectors.config import AgencyConfig
from fedsql.connectors.finding import FAIL, OK, WARN, Checks, Finding
from fedsql.connectors.opening import open_backend
from fedsql.errors import ConfigError
from fedsql.policy.load import validate
from fedsql.policy.model import Policy


def check_backend(cfg: AgencyConfig, key: bytes | None) -> Checks:
    role_error: ConfigError | None = None
    first: ConfigError | None = None
    backend: Backend | None = None
    with _Captured() as said:
        try:
            backend = open_backend(cfg, key)
        except ConfigError as e:
            first = e
        if backend is None and _checks_role(cfg) and not cfg.backend.allow_writable_role:
            # Was it the role? Open as allow_writable_role would (a loud warning, not a refusal).
            opts = replace(cfg.backend.options, allow_writable_role=True)
            try:
                backend = open_backend(
                    replace(cfg, backend=replace(cfg.backend, options=opts)), key
                )
                role_error = first
            except ConfigError:
                pass
    if backend is None:
        yield Finding(FAIL, "backend", f"{first}")
        return
    try:
        tables = backend.tables()
        where = cfg.backend.path if cfg.backend.path is not None else "the database of its dsn"
        scope = "listed in [backend].tables" if cfg.backend.tables is not None else "all it has"
        yield Finding(
            OK if tables else WARN,
            "backend",
            (
                f"{cfg.backend.kind} at {where} opened read-only: {len(tables)} table(s) exposed "
                f"({scope})" + ("" if tables else "; analysts will see nothing")
            ),
        )
        role = [r for r in said if r.module == "pgrole"]
        for r in said:
            if r not in role:
                yield Finding(WARN, "backend", r.getMessage())
        if role_error is not None:
            yield Finding(FAIL, "database role", f"{role_error}")
        elif role:
            yield from (Finding(WARN, "database role", r.getMessage()) for r in role)
        elif _checks_role(cfg):
            yield Finding(
                OK,
                "database role",
                "may only read: no write, DDL, ownership or "
                "escalation, no SELECT beyond the exposed tables",
            )
        schemas = {t.full_name.lower(): t.arrow_schema for t in tables}
        for t in tables:
            yield _table(cfg, backend, t.schema, t.name, len(t.arrow_schema))
        yield from _policies(cfg, schemas)
    finally:
        backend.close()


def _checks_role(cfg: AgencyConfig) -> bool:
    """Whether the backend checks its database role at start (``allow_writable_role``)."""
    return hasattr(cfg.backend.options, "allow_writable_role")


def _table(cfg: AgencyConfig, backend: Backend, schema: str, name: str, columns: int) -> Finding:
    full = f"{schema}.{name}" if schema else name
    rules = [f"{m.column} ({m.rule})" for m in cfg.policy.masks if m.table.lower() == full.lower()]
    filters = sum(f.table.lower() == full.lower() for f in cfg.policy.row_filters)
    sql = exp.select("*").from_(exp.table_(name, db=schema or None, quoted=True)).limit(0)
    try:
        running = backend.execute(sql.sql(dialect=backend.dialect), 1024)
        try:
            for _ in running.reader:  # no rows: LIMIT 0; the schema and the read are the point
                pass
        finally:
            running.close()
    except Exception as e:  # noqa: BLE001 - whatever the backend says is the finding
        return Finding(
            FAIL,
            f"table {full}",
            f"cannot be read: {str(e).splitlines()[0]}; the "
            "connector's database user needs SELECT on it (and its files, read access)",
        )
    policy = (["masks " + ", ".join(rules)] if rules else []) + (
        [f"{filters} row filter(s)"] if filters else []
    )
    return Finding(
        OK,
        f"table {full}",
        f"{columns} columns, readable" + (f"; {'; '.join(policy)}" if policy else ""),
    )


def _policies(cfg: AgencyConfig, schemas: dict[str, pa.Schema]) -> Checks:
    bad = 0
    rules = [Policy(masks=(m,)) for m in cfg.policy.masks]
    rules += [Policy(row_filters=(f,)) for f in cfg.policy.row_filters]
    for one in rules:
        try:
            validate(one, schemas, f"connector '{cfg.name}'")
        except ConfigError as e:
            bad += 1
            yield Finding(FAIL, "policy", f"{e}")
    if rules and not bad:
        yield Finding(
            OK,
            "policy",
            f"{len(rules)} mask(s) and row filter(s) name real tables and columns of fitting types",
        )
    for g in cfg.grants or ():
        if g.table != "*" and g.table not in schemas:
            yield Finding(
                WARN,
                "grant",
                (
                    f"[[grant]] table = '{g.table}' is not an exposed table, so it opens nothing "
                    f"(exposed: {', '.join(sorted(schemas)) or 'none'})"
                ),
            )


class _Captured(logging.Handler):
    """The warnings the connector's modules log while the backend opens (the role
    check's among them), kept for the findings instead of printed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._log = logging.getLogger("fedsql")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> list[logging.LogRecord]:
        self._was = self._log.propagate, self._log.level
        self._log.addHandler(self)
        self._log.propagate = False
        if self._log.getEffectiveLevel() > logging.WARNING:
            self._log.setLevel(logging.WARNING)
        return self.records

    def __exit__(self, *exc: object) -> None:
        self._log.removeHandler(self)
        self._log.propagate, level = self._was
        self._log.setLevel(level)
