"""Notebook display: results as HTML tables, with what each agency sent.

``fed.sql(...)`` returns a plain ``pyarrow.Table``; in Jupyter/IPython,
``fedsql.connect`` registers an HTML view for Arrow tables, so results display
as tables. ``fed.query(...)`` returns a :class:`Result`: the table plus the
query's figures, which displays with a per-agency footer and converts with
``.to_pandas()`` / ``.to_polars()`` (or any Arrow consumer, through the Arrow
PyCapsule stream interface).

The purpose (why the analyst asks, in every agency's audit log; required where
an agency sets ``require_purpose = true``) is ``fedsql.connect(..., purpose=...)``,
changed later with :func:`set_purpose`. ``%load_ext fedsql.notebook`` adds the
``%fedsql`` magics::

    %fedsql connect federation.toml --user alice --purpose "regional statistics"
    %fedsql purpose quarterly review     # from now on; %fedsql purpose shows it
    %fedsql SELECT count(*) FROM visits  # a Result
    %%fedsql                             # the cell is the SQL (after the line's
                                         # connect or purpose, if it has one)
"""

from __future__ import annotations

import argparse
import html
import shlex
import sys
from dataclasses import replace
from typing import Any

import pyarrow as pa

from fedsql.errors import FedSQLError
from fedsql.execute import QueryStats

MAX_ROWS = 50


def html_table(table: pa.Table, max_rows: int = MAX_ROWS, footer: str = "") -> str:
    """An HTML table of the first ``max_rows`` rows (values escaped), with a shape line.

    >>> "<td>a&lt;b</td>" in html_table(pa.table({"x": ["a<b"]}))
    True
    """
    shown = table.slice(0, max_rows)
    head = "".join(
        f"<th title='{html.escape(str(f.type))}'>{html.escape(f.name)}</th>" for f in table.schema
    )
    numeric = [
        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        for f in table.schema
    ]
    rows = []
    for r in shown.to_pylist():
        cells = "".join(
            f"<td{' style=text-align:right' if num else ''}>"
            f"{'<i>NULL</i>' if v is None else html.escape(str(v))}</td>"
            for v, num in zip(r.values(), numeric, strict=True)
        )
        rows.append(f"<tr>{cells}</tr>")
    more = table.num_rows - shown.num_rows
    shape = (
        f"{table.num_rows} row{'s' if table.num_rows != 1 else ''} × {table.num_columns} columns"
    )
    if more > 0:
        shape += f" ({more} not shown)"
    note = f"{shape}{' · ' + html.escape(footer) if footer else ''}"
    return (
        "<div><table class='fedsql-result'><thead><tr>"
        + head
        + "</tr></thead><tbody>"
        + "".join(rows)
        + f"</tbody></table><small>{note}</small></div>"
    )


def stats_line(stats: QueryStats | None) -> str:
    if stats is None:
        return ""
    per = stats.per_agency()
    return f"{stats.total_seconds:.3f} s; {per}" if per else f"{stats.total_seconds:.3f} s"


class Result:
    """A query's result table and figures; displays as HTML in notebooks."""

    def __init__(self, table: pa.Table, stats: QueryStats | None) -> None:
        self.table = table
        self.stats = stats

    def to_arrow(self) -> pa.Table:
        return self.table

    def to_pandas(self, **kwargs: Any) -> Any:
        return self.table.to_pandas(**kwargs)

    def to_polars(self) -> Any:
        try:
            import polars as pl
        except ImportError:
            raise ImportError("to_polars() needs polars: pip install polars") from None
        return pl.from_arrow(self.table)

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self.table.__arrow_c_stream__(requested_schema)

    def __len__(self) -> int:
        return self.table.num_rows

    def _repr_html_(self) -> str:
        return html_table(self.table, footer=stats_line(self.stats))

    def __repr__(self) -> str:
        from fedsql.output import format_table

        text = format_table(self.table, max_rows=20)
        line = stats_line(self.stats)
        return f"{text}\n{line}" if line else text


def register_ipython() -> bool:
    """In IPython/Jupyter, show ``pyarrow.Table`` results as HTML tables (True if done)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    if shell is None:
        return False
    shell.display_formatter.formatters["text/html"].for_type(pa.Table, html_table)
    return True


def set_purpose(fed: Any, purpose: str) -> None:
    """Why the analyst asks, for every query ``fed`` runs from now on (it goes with
    each query to the agencies' audit logs, like ``fedsql.connect(..., purpose=)``)."""
    fed.principal = replace(fed.principal, purpose=purpose.strip())


class _Arguments(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # not sys.exit() inside a kernel
        raise FedSQLError(f"%fedsql connect: {message}")


class Magics:
    """``%fedsql`` and ``%%fedsql``: one Federation per notebook, opened with
    ``%fedsql connect``."""

    def __init__(self) -> None:
        self.fed: Any = None

    def line(self, line: str) -> Any:
        word, _, rest = line.strip().partition(" ")
        if word.lower() == "connect":
            return self._connect(rest)
        if word.lower() == "purpose":
            fed = self._federation()
            if not rest.strip():
                return str(fed.principal.purpose)
            set_purpose(fed, _unquote(rest))
            return None
        if not line.strip():
            raise FedSQLError(
                "%fedsql connect FEDERATION.toml [--user NAME] [--purpose TEXT], "
                "%fedsql purpose [TEXT], %fedsql SQL, or a %%fedsql cell"
            )
        return self._federation().query(line)

    def cell(self, line: str, cell: str) -> Any:
        if line.strip():
            self.line(line)  # %%fedsql purpose TEXT / connect ...: then the cell's SQL
        return self._federation().query(cell)

    def _connect(self, args: str) -> None:
        import fedsql

        p = _Arguments(prog="%fedsql connect", add_help=False)
        p.add_argument("config")
        p.add_argument("--user")
        p.add_argument("--purpose")
        try:
            words = shlex.split(args)
        except ValueError as e:
            raise FedSQLError(f"%fedsql connect: {e}") from None
        a = p.parse_args(words)
        fed = fedsql.connect(a.config, user=a.user, purpose=a.purpose)
        if self.fed is not None:
            self.fed.close()
        self.fed = fed

    def _federation(self) -> Any:
        if self.fed is None:
            raise FedSQLError(
                "not connected: %fedsql connect FEDERATION.toml --user NAME --purpose TEXT"
            )
        return self.fed


def _unquote(text: str) -> str:
    """``"quarterly review"`` or ``quarterly review`` alike; an apostrophe stays."""
    try:
        return " ".join(shlex.split(text))
    except ValueError:  # unbalanced quotes: take the text as typed
        return text.strip()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext fedsql.notebook``: register the ``%fedsql`` line and cell magics."""
    magics = Magics()
    ipython.register_magic_function(magics.line, magic_kind="line", magic_name="fedsql")
    ipython.register_magic_function(magics.cell, magic_kind="cell", magic_name="fedsql")
