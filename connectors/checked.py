"""A fragment's check, and the checks kept for the fragments seen last.

What the connector establishes about a fragment before it runs it — the guard's
check and binding (``guard.py``), the tables and columns it reads, the policy
views put in place for the caller's roles (``runs.apply_policies``) and, for a
backend that runs the fragment as written, the SQL to run, generated from that
tree, parsed back and checked again (``runs.verified``) — is a function of the
fragment's text and of three things the call brings: the names of the key sets
shipped with it (a name binds to a key set), the caller's roles (they choose the
policies) and nothing else; the exposed tables, the policies and the backend are
fixed for the node's life. So, like a prepared statement, a fragment checked
once need not be checked again: :class:`Checker` keeps what the check found for
the fragments it accepted last, keyed by exactly those inputs (the text itself,
not a hash of it), bounded in entries and characters. What varies per call is
still checked per call, outside: the caller's identity, its purpose, its grants,
the limits. A fragment refused is checked again each time.

Backends that do not run fragments as written (SQLite, PostgreSQL) write the key
sets' values into the SQL they run, so that SQL is generated and checked again
for every call (``execution.py``); their fragments are not kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from fedsql.connectors.audit import touched
from fedsql.connectors.execution import FragmentRunner
from fedsql.connectors.guard import check_fragment
from fedsql.connectors.runs import apply_policies
from fedsql.lru import Lru
from fedsql.policy.model import Policy
from fedsql.wire import RemoteTable

# Fragments longer than this are checked every time (TPC-H's are up to 1.3 KB; an
# IN list of 128 keys adds ~2 KB); all that is kept holds at most MAX_CHARS.
MAX_KEPT_SQL = 64 * 1024
MAX_ENTRIES = 1024
MAX_CHARS = 8 << 20


@dataclass(frozen=True, slots=True)
class Checked:
    """What the connector found about one fragment for one kind of call."""

    tree: exp.Query | None  # checked, bound, policy views in place (None when kept)
    tables: tuple[str, ...]  # the exposed tables it reads, for the audit line
    columns: tuple[str, ...]  # their columns it may read
    masks: tuple[str, ...]  # the policies applied ("table.column:rule", "table:row_filter")
    covered: frozenset[str]  # exposed tables it may read only through their policy views
    names: frozenset[str]  # the names it spells (lower case): errors may quote them
    sql: str | None  # the SQL to run, checked (backends that run fragments as written)


class Checker:
    """The node's check of fragments, keeping what it found for those it accepted last."""

    def __init__(
        self,
        tables: dict[str, RemoteTable],
        default_schemas: tuple[str, ...],
        policy: Policy,
        runner: FragmentRunner,
        kept: Lru[Checked] | None = None,
    ) -> None:
        self._tables = tables  # lower-case full name -> table
        self._schemas = {n: t.arrow_schema for n, t in tables.items()}
        self._exposed = {
            (t.schema.lower(), t.name.lower()): (t.schema, t.name) for t in tables.values()
        }
        self._default_schemas = default_schemas
        self._policy = policy
        self._runner = runner
        self.kept: Lru[Checked] = kept if kept is not None else Lru(MAX_ENTRIES, MAX_CHARS)

    def check(
        self, sql: str, key_sets: frozenset[str], roles: tuple[str, ...], coordinator: str
    ) -> Checked:
        """The fragment ``sql`` checked for a call with these key-set names and roles
        (raises :class:`fedsql.errors.RefusedFragment`, or ``BackendError`` for SQL
        the node could not check); kept per coordinator, so that no coordinator can
        tell from the time a call takes which fragments another one sent."""
        key = (sql, key_sets, roles, coordinator)
        got = self.kept.get(key)
        if got is not None:
            return got
        tree = check_fragment(sql, self._exposed, self._default_schemas, key_sets)
        tables, columns = touched(tree, self._schemas)
        masks, covered = self._apply_policy(tree, roles)
        names = frozenset(i.name.lower() for i in tree.find_all(exp.Identifier))
        to_run = self._runner.sql_to_run(tree, covered, key_sets)
        checked = Checked(tree, tuple(tables), tuple(columns), tuple(masks), covered, names, to_run)
        chars = len(sql) + len(to_run or "")
        if to_run is not None and len(sql) <= MAX_KEPT_SQL and chars <= MAX_KEPT_SQL * 4:
            # Kept without its tree: a backend that runs fragments as written needs
            # only the SQL.
            self.kept.put(key, _without_tree(checked), chars)
        return checked

    def _apply_policy(
        self, tree: exp.Expr, roles: tuple[str, ...]
    ) -> tuple[list[str], frozenset[str]]:
        """Replace every bound exposed table that has a policy for these roles by
        its view, in place; returns (what was applied, the tables covered)."""
        if not self._policy:
            return [], frozenset()
        policy = self._policy
        covered = frozenset(name for name in self._tables if policy.for_table(name, roles))
        applied = apply_policies(
            tree,
            lambda name: policy.for_table(name, roles),
            self._schema_of,
            self._source_of,
        )
        return applied, covered

    def _schema_of(self, name: str) -> pa.Schema:
        return self._schemas[name]

    def _source_of(self, name: str) -> exp.Table:
        """A bare reference to an exposed table, spelled as its backend spells it."""
        t = self._tables[name]
        return exp.Table(
            this=exp.to_identifier(t.name, quoted=True),
            db=exp.to_identifier(t.schema, quoted=True) if t.schema else None,
        )


def _without_tree(c: Checked) -> Checked:
    return Checked(None, c.tables, c.columns, c.masks, c.covered, c.names, c.sql)


__all__ = ["MAX_KEPT_SQL", "Checked", "Checker", "Lru"]
