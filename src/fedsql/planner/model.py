"""The plan: remote queries (one per fragment) as trees with typed slots, and a residual.

A fragment leaves the planner as a :class:`RemoteQuery`: the SELECT an agency
runs, as a syntax tree, plus *slots* for what is known only at run time — join
keys another fragment returns (:class:`KeySlot`) and values of scalar
subqueries other agencies answer (:class:`ScalarSlot`) — and, for eager
aggregation or DISTINCT at the source, the query wrapped around it. The one
place that turns a RemoteQuery into the SQL an agency receives is
``planner/render.py``; ``explain`` shows that text, its slots written as
``$keys(...)``/``$value(...)``.

Trees in a plan are never changed after planning (plans are cached and shared
between threads): rendering works on copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlglot import exp

from fedsql.lang import DIALECT


@dataclass(frozen=True, slots=True)
class KeySlot:
    """``probe IN (the distinct values of column `build_column` of fragment `build`)``.

    Exact because the probe fragment only feeds an inner join (or a correlated
    subquery) on that equality: rows without a matching key could never count.
    """

    build: str  # the fragment whose result supplies the keys
    build_column: str  # its output column
    probe: exp.Expr  # the expression in the probe fragment's own tree

    @property
    def probe_sql(self) -> str:
        return self.probe.sql(dialect=DIALECT)


@dataclass(frozen=True, slots=True)
class ScalarSlot:
    """A WHERE conjunct of the fragment's tables and uncorrelated scalar subqueries
    that other agencies answer (``builds``); in ``condition`` each subquery is the
    column ``__fedsql_scalar_<its fragment>``, where its value goes as a literal.

    Exact: the conjunct also stays in the residual, so this only drops rows the
    residual would drop; it is left out unless each subquery returned one row
    whose value has an exact literal.
    """

    condition: exp.Expr
    builds: tuple[str, ...]

    @property
    def sql(self) -> str:
        return self.condition.sql(dialect=DIALECT)


@dataclass(frozen=True, slots=True)
class RemoteQuery:
    """What one agency runs for one fragment."""

    id: str  # the name its result has in the residual, e.g. "__fedsql_f0"
    agency: str
    query: exp.Query  # tables named as the connector exposes them
    kind: str  # "query" (the whole query), "subtree", "table" or "join"
    tables: tuple[str, ...]  # qualified names of the tables it reads
    row_estimate: int  # largest row-count estimate among its tables (-1 unknown)
    # Semi-join reduction: the query also keeps only rows whose probe is among the
    # keys another fragment returned.
    keys: tuple[KeySlot, ...] = ()
    # The agency joins key sets shipped as Arrow tables (capability arrow_key_sets);
    # else they are shipped only where they can be written into its SQL.
    arrow_keys: bool = True
    # Eager aggregation or DISTINCT at the agency: the query run around this one,
    # which stands in it as the table ``__fedsql_inner``.
    wrap: exp.Select | None = None
    # Conditions with values of scalar subqueries answered elsewhere.
    scalars: tuple[ScalarSlot, ...] = ()
    # ``query`` and ``wrap`` as SQL, written once the plan is made (:meth:`written`):
    # a cached plan's fragments are sent at every run (their text asked for four to
    # six times a run), and its trees never change. Held with the trees they are of.
    texts: tuple[exp.Query, exp.Select | None, str, str] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def sql(self) -> str:
        """The query without its slots and wrap (DuckDB dialect)."""
        t = self.texts
        if t is not None and t[0] is self.query:
            return t[2]
        return self.query.sql(dialect=DIALECT)

    @property
    def wrap_sql(self) -> str:
        t = self.texts
        if t is not None and t[1] is self.wrap:
            return t[3]
        return self.wrap.sql(dialect=DIALECT) if self.wrap is not None else ""

    def written(self) -> RemoteQuery:
        """This fragment with its SQL written once, for a finished plan."""
        wrap = self.wrap.sql(dialect=DIALECT) if self.wrap is not None else ""
        return replace(self, texts=(self.query, self.wrap, self.query.sql(dialect=DIALECT), wrap))

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The fragments whose results this one waits for."""
        deps = [k.build for k in self.keys]
        deps += [b for s in self.scalars for b in s.builds]
        return tuple(dict.fromkeys(deps))


Fragment = RemoteQuery  # the word the rest of fedsql uses


@dataclass(frozen=True, slots=True)
class Plan:
    fragments: tuple[RemoteQuery, ...]
    residual: str | None  # None: the result is the single fragment's stream
    output_names: tuple[str, ...] = ()  # result column names, as one DuckDB would give them
    policies: tuple[str, ...] = ()  # which masks and row filters apply where

    def explain(self, pretty: bool = False) -> str:
        """Each fragment with the agency that runs it — exactly the SQL it is sent,
        slots shown as ``$keys(fragment.column)`` and ``$value(fragment)`` — then the
        residual query."""
        from fedsql.planner.render import shown  # render imports this module

        def show(sql: str) -> str:
            return "\n".join("    " + line for line in sql.splitlines())

        def residual() -> str:
            if not pretty or self.residual is None:
                return self.residual or ""
            import sqlglot

            return sqlglot.transpile(self.residual, read=DIALECT, write=DIALECT, pretty=True)[0]

        lines = []
        for f in self.fragments:
            lines.append(f"fragment {f.id} -> {f.agency}  [{f.kind}: {', '.join(f.tables)}]")
            lines.append(show(shown(f, pretty)))
            for k in f.keys:
                lines.append(f"    + semi-join: keys of {k.build}.{k.build_column}")
            for s in f.scalars:
                lines.append(f"    + filter with the value of {', '.join(s.builds)}")
            if f.wrap is not None:
                lines.append("    + aggregated or made distinct at the agency")
        if self.residual is None:
            lines.append("residual: none (the fragment's result is the answer)")
        else:
            lines.append("residual (coordinator DuckDB):")
            lines.append(show(residual()))
        if self.policies:
            lines.append("policies:")
            lines += [f"    {p}" for p in self.policies]
        return "\n".join(lines)


__all__ = ["Fragment", "KeySlot", "Plan", "RemoteQuery", "ScalarSlot"]
