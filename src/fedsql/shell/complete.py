"""Completion in the shell: which words fit where the cursor is.

After FROM or JOIN (or a comma in a FROM list): table names; elsewhere the columns
of the tables the statement names (``alias.column`` too), keywords; on a ``.``
line, the commands and their arguments."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fedsql.keywords import SQL_FUNCTIONS, SQL_KEYWORDS
from fedsql.shell.backends import TableInfo

KEYWORDS = [*SQL_KEYWORDS, *SQL_FUNCTIONS]
COMMANDS = (
    ".tables",
    ".describe",
    ".explain",
    ".mode",
    ".output",
    ".timer",
    ".maxrows",
    ".purpose",
    ".help",
    ".quit",
)

# -- completion: which words fit where the cursor is ----------------------------------

# Quoted text first (so that words inside it are not words), then names with dots.
_TOKEN = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|[\w.]+|\S")
_WORD = re.compile(r"[\w.]*$")
_NAME = re.compile(r"[A-Za-z_][\w.]*$")
_RESERVED = frozenset(SQL_KEYWORDS) | {"QUALIFY", "WINDOW", "NATURAL", "LATERAL"}


def table_refs(sql: str) -> tuple[list[tuple[str, str | None]], bool]:
    """The tables ``sql`` names after FROM and JOIN (comma lists too), as (name, alias),
    and whether a table name would come next.

    >>> table_refs("SELECT * FROM trade.orders o JOIN customer AS c ON o.x = c.y")
    ([('trade.orders', 'o'), ('customer', 'c')], False)
    >>> table_refs("SELECT * FROM nation, region r WHERE x IN (SELECT y FROM part)")
    ([('nation', None), ('region', 'r'), ('part', None)], False)
    >>> table_refs("SELECT * FROM region r, ")
    ([('region', 'r')], True)
    """
    refs: list[tuple[str, str | None]] = []
    expect: str | None = None  # "table" or "alias"
    in_from = False  # in a FROM list, where a comma brings another table
    for tok in _TOKEN.findall(sql):
        up = tok.upper()
        word = bool(_NAME.match(tok))
        if up in ("FROM", "JOIN"):
            expect, in_from = "table", up == "FROM"
        elif expect == "table" and word and up not in _RESERVED:
            refs.append((tok, None))
            expect = "alias"
        elif expect == "alias" and up == "AS":
            pass
        elif expect == "alias" and word and up not in _RESERVED:
            refs[-1] = (refs[-1][0], tok)
            expect = None
        elif tok == "," and in_from:
            expect = "table"
        else:
            expect = None
            if up in _RESERVED or tok in "();":
                in_from = False
    return refs, expect == "table"


def _matching(word: str, candidates: Iterable[str]) -> list[str]:
    w = word.lower()
    return sorted({c for c in candidates if c.lower().startswith(w) and c != word})


@dataclass(frozen=True)
class Completion:
    """Completion over a catalog (``catalog()``: the tables, [] when unknown) and the
    shell's result modes besides "table" (``modes()``)."""

    catalog: Callable[[], list[TableInfo]]
    modes: Callable[[], Iterable[str]]

    def words(self) -> list[str]:
        """Every completion candidate: agencies, tables (bare and qualified), columns,
        keywords (what completion offers where the statement gives no context)."""
        words: set[str] = set(KEYWORDS) | {k.lower() for k in KEYWORDS}
        for t in self.catalog():
            words |= {t.agency, t.name, f"{t.agency}.{t.name}"}
            words |= set(t.columns.names)
        return sorted(words)

    def complete(self, before: str, earlier: str = "", after: str = "") -> tuple[str, list[str]]:
        """(the word before the cursor, what it may become). ``before``: the line up to
        the cursor, ``after``: the rest of it; ``earlier``: the statement's earlier
        lines. The statement's FROM and JOIN say which columns fit.

        >>> sh = Completion(list, tuple)  # an empty catalog: keywords and commands
        >>> sh.complete("SELECT count(*) FRO")
        ('FRO', ['FROM'])
        >>> sh.complete(".ma")
        ('.ma', ['.maxrows'])
        """
        m = _WORD.search(before)
        w = m.group(0) if m else ""
        head = before[: len(before) - len(w)]
        if not earlier.strip() and before.lstrip().startswith("."):
            return self._complete_command(head, w, before)
        statement = f"{earlier}\n{before}{after}" if earlier else before + after
        return w, self._complete_sql(head, w, statement)

    def _complete_command(self, head: str, w: str, before: str) -> tuple[str, list[str]]:
        cmd, _, rest = head.strip().partition(" ")
        if not head.strip():
            return w, _matching(w, COMMANDS)
        if cmd == ".describe":
            return w, _matching(w, self._table_names())
        if cmd == ".mode":
            return w, _matching(w, ["table", *self.modes()])
        if cmd == ".timer":
            return w, _matching(w, ["on", "off"])
        if cmd == ".explain":
            sql = before.strip()[len(".explain") :]
            return w, self._complete_sql(sql[: len(sql) - len(w)], w, sql)
        return w, []

    def _table_names(self) -> list[str]:
        return [n for t in self.catalog() for n in (t.name, f"{t.agency}.{t.name}")]

    def resolve(self, name: str) -> list[TableInfo]:
        parts = name.lower().split(".")
        return [
            t
            for t in self.catalog()
            if parts[-1] == t.name.lower()
            and (len(parts) == 1 or parts[0] == t.agency.lower())
            and (len(parts) < 3 or parts[1] == t.schema.lower())
        ]

    def _complete_sql(self, head: str, w: str, statement: str) -> list[str]:
        _, table_next = table_refs(head)
        if table_next:  # after FROM or JOIN (or a comma in a FROM list)
            return _matching(w, self._table_names())
        refs, _ = table_refs(statement)
        if "." in w:  # alias.column, table.column, agency.table
            prefix, _, _ = w.rpartition(".")
            p = prefix.lower()
            named = [n for n, a in refs if (a or "").lower() == p] or [
                n for n, _ in refs if n.lower() == p or n.lower().endswith("." + p)
            ]
            cols = {c for n in named for t in self.resolve(n) for c in t.columns.names}
            tables = [f"{t.agency}.{t.name}" for t in self.catalog() if t.agency.lower() == p]
            return _matching(w, [f"{prefix}.{c}" for c in cols] + tables)
        named_tables = [t for n, _ in refs for t in self.resolve(n)]
        lower = w == w.lower() and any(c.isalpha() for c in w)
        words = {k.lower() if lower else k for k in KEYWORDS}
        if named_tables:
            words |= {c for t in named_tables for c in t.columns.names}
        else:  # no FROM yet: any table's columns, and the tables
            words |= {c for t in self.catalog() for c in t.columns.names}
            words |= set(self._table_names())
        return _matching(w, words)
