"""`fedsql shell`: interactive SQL against the embedded coordinator or `fedsql serve`.

A statement ends with ``;`` (it may span lines); lines starting with ``.`` are
commands (``.help``). Results are aligned tables with row count and timing; while
fragments stream, a progress line shows rows and bytes per agency. Errors are one
``error: ...`` line and the shell carries on. Like the rest of the CLI, this module
writes to the terminal; nothing else in the library does.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import pyarrow as pa

from fedsql.errors import FedSQLError
from fedsql.execute import human_bytes
from fedsql.keywords import SQL_FUNCTIONS, SQL_KEYWORDS

HISTORY_FILE = Path.home() / ".fedsql_history"
# The word being completed may contain dots (agency.table); prompt_toolkit matches
# this against the text before the cursor, reversed.
_WORD = re.compile(r"^[\w.]+")
PROGRESS_EVERY = 0.2  # seconds between progress-line updates
KEYWORDS = [*SQL_KEYWORDS, *SQL_FUNCTIONS]
HELP = """\
Statements end with ';' and may span lines. Commands:
  .tables              the tables you can query (agency.table)
  .describe TABLE      columns and types of a table (masked columns as you see them)
  .explain SQL         fragments per agency and the residual query
  .help                this text
  .quit                leave (also Ctrl-D)"""


@dataclass(frozen=True, slots=True)
class TableInfo:
    agency: str
    schema: str
    name: str
    columns: pa.Schema


class Backend(Protocol):
    """What the shell runs against: an embedded Federation or a remote service."""

    def run(self, sql: str, progress: Callable[[dict[str, tuple[int, int]]], None]) -> pa.Table:
        """Run ``sql``; call ``progress`` with agency -> (rows, bytes) while it streams."""
        ...

    def explain(self, sql: str) -> str: ...

    def tables(self) -> list[TableInfo]: ...

    def stats(self) -> str:
        """Per-agency figures of the last query ("" if unknown)."""
        ...


class EmbeddedBackend:
    def __init__(self, fed: Any) -> None:
        self.fed = fed

    def run(self, sql: str, progress: Callable[[dict[str, tuple[int, int]]], None]) -> pa.Table:
        from fedsql.execute import QueryWatch

        return self.fed.sql(sql, watch=QueryWatch(lambda w: progress(w.progress())))

    def explain(self, sql: str) -> str:
        return str(self.fed.explain(sql))

    def tables(self) -> list[TableInfo]:
        return [
            TableInfo(t.agency, t.schema_key, t.name, t.arrow_schema)
            for t in self.fed.catalog.tables
        ]

    def stats(self) -> str:
        st = self.fed.last_stats
        return "" if st is None else str(st.per_agency())


class RemoteBackend:
    def __init__(self, remote: Any) -> None:
        self.remote = remote
        self._last: dict[str, Any] = {}

    def run(self, sql: str, progress: Callable[[dict[str, tuple[int, int]]], None]) -> pa.Table:
        done = threading.Event()
        user = self.remote.user  # an admin's board lists everyone's queries

        def poll() -> None:  # the service's query board shows our query while it runs
            while not done.wait(PROGRESS_EVERY * 2):
                try:
                    mine = [
                        q
                        for q in self.remote.queries()
                        if q["state"] == "running" and q["user"] == user
                    ]
                except FedSQLError:
                    return
                if mine:
                    q = mine[-1]
                    progress({a: (v["rows"], v["bytes"]) for a, v in q["agencies"].items()})

        t = threading.Thread(target=poll, daemon=True)
        t.start()
        try:
            return self.remote.sql(sql)
        finally:
            done.set()
            t.join()
            self._last = {}
            try:
                recent = [
                    q
                    for q in self.remote.queries()
                    if q["state"] != "running" and q["user"] == user
                ]
                self._last = recent[0] if recent else {}
            except FedSQLError:
                pass

    def explain(self, sql: str) -> str:
        return str(self.remote.explain(sql))

    def tables(self) -> list[TableInfo]:
        t = self.remote.tables(include_schema=True)
        return [
            TableInfo(r["catalog_name"], r["db_schema_name"], r["table_name"], _schema(r))
            for r in t.to_pylist()
        ]

    def stats(self) -> str:
        ag = self._last.get("agencies") or {}
        return "; ".join(
            f"{a}: {v['rows']} rows, {human_bytes(v['bytes'])}" for a, v in sorted(ag.items())
        )


def _schema(row: dict[str, Any]) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(row["table_schema"]))


@dataclass
class Shell:
    backend: Backend
    format_table: Callable[[pa.Table], str]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    _tables: list[TableInfo] | None = None

    # -- catalog, for .tables/.describe and completion ----------------------
    def tables(self) -> list[TableInfo]:
        if self._tables is None:
            self._tables = self.backend.tables()
        return self._tables

    def words(self) -> list[str]:
        """Completion candidates: agencies, tables (bare and qualified), columns, keywords."""
        try:
            tables = self.tables()
        except FedSQLError:
            tables = []
        words: set[str] = set(KEYWORDS) | {k.lower() for k in KEYWORDS}
        for t in tables:
            words |= {t.agency, t.name, f"{t.agency}.{t.name}"}
            words |= set(t.columns.names)
        return sorted(words)

    # -- one input ----------------------------------------------------------
    def handle(self, text: str) -> bool:
        """Run one statement or command; False when the user asked to quit."""
        text = text.strip()
        if not text:
            return True
        try:
            if text.startswith("."):
                return self._command(text)
            self._query(text.rstrip(";").strip())
        except FedSQLError as e:
            self._clear_progress()
            print(f"error: {e}", file=self.err, flush=True)
        except KeyboardInterrupt:
            self._clear_progress()
            print("interrupted", file=self.err, flush=True)
        return True

    def _command(self, text: str) -> bool:
        cmd, _, arg = text.partition(" ")
        arg = arg.strip().rstrip(";").strip()
        if cmd in (".quit", ".exit", ".q"):
            return False
        if cmd == ".help":
            print(HELP, file=self.out)
        elif cmd == ".tables":
            tables = sorted(self.tables(), key=lambda t: (t.agency, t.schema, t.name))
            shown = pa.table(
                {
                    "table": [f"{t.agency}.{t.name}" for t in tables],
                    "schema": [t.schema for t in tables],
                    "columns": [len(t.columns) for t in tables],
                }
            )
            print(self.format_table(shown), file=self.out)
        elif cmd == ".describe":
            t = self._find(arg)
            shown = pa.table(
                {
                    "column": t.columns.names,
                    "type": [str(f.type) for f in t.columns],
                    "nullable": [f.nullable for f in t.columns],
                }
            )
            print(f"{t.agency}.{t.name}", file=self.out)
            print(self.format_table(shown), file=self.out)
        elif cmd == ".explain":
            if not arg:
                raise FedSQLError("usage: .explain SQL")
            print(self.backend.explain(arg), file=self.out)
        else:
            raise FedSQLError(f"unknown command {cmd}; .help lists the commands")
        self.out.flush()
        return True

    def _find(self, name: str) -> TableInfo:
        if not name:
            raise FedSQLError("usage: .describe TABLE (agency.table or table)")
        parts = name.lower().split(".")
        found = [
            t
            for t in self.tables()
            if parts[-1] == t.name.lower()
            and (len(parts) == 1 or parts[0] == t.agency.lower())
            and (len(parts) < 3 or parts[1] == t.schema.lower())
        ]
        if len(found) == 1:
            return found[0]
        if not found:
            raise FedSQLError(f"unknown table '{name}'; .tables lists them")
        names = ", ".join(f"{t.agency}.{t.name}" for t in found)
        raise FedSQLError(f"table name '{name}' is ambiguous: {names}")

    # -- queries ------------------------------------------------------------
    _progress_shown = False
    _progress_at = 0.0

    def _progress(self, by_agency: dict[str, tuple[int, int]]) -> None:
        now = time.monotonic()
        if now - self._progress_at < PROGRESS_EVERY:
            return
        self._progress_at = now
        line = " | ".join(
            f"{a}: {r} rows, {human_bytes(b)}" for a, (r, b) in sorted(by_agency.items())
        )
        if line and self.err.isatty():
            self.err.write(f"\r\x1b[K... {line}")
            self.err.flush()
            self._progress_shown = True

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._progress_shown = False

    def _query(self, sql: str) -> None:
        t0 = time.perf_counter()
        self._progress_at = time.monotonic()
        table = self.backend.run(sql, self._progress)
        seconds = time.perf_counter() - t0
        self._clear_progress()
        print(self.format_table(table), file=self.out)
        stats = self.backend.stats()
        print(f"Time: {seconds:.3f} s" + (f" ({stats})" if stats else ""), file=self.out)
        self.out.flush()


def statements(lines: Iterable[str]) -> Iterable[str]:
    """Group input lines into statements: a ``.command`` is one line; SQL runs to ``;``.

    >>> list(statements(["select 1", "  ;", ".tables", "select 2;"]))
    ['select 1\\n  ;', '.tables', 'select 2;']
    """
    buf: list[str] = []
    for line in lines:
        if not buf and line.strip().startswith("."):
            yield line.strip()
            continue
        if not buf and not line.strip():
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            yield "\n".join(buf)
            buf = []
    if buf and "".join(buf).strip():
        yield "\n".join(buf)


def run(shell: Shell, banner: str) -> int:
    """The read-eval-print loop: prompt_toolkit on a terminal, plain lines otherwise."""
    if not sys.stdin.isatty():
        for stmt in statements(line.rstrip("\n") for line in sys.stdin):
            if not shell.handle(stmt):
                break
        return 0
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory

    print(banner, file=shell.out)
    completer = WordCompleter(
        lambda: shell.words(), ignore_case=True, sentence=False, pattern=_WORD
    )
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(HISTORY_FILE)), completer=completer, complete_while_typing=False
    )
    buf: list[str] = []
    while True:
        try:
            line = session.prompt("fedsql> " if not buf else "   ...> ")
        except KeyboardInterrupt:
            buf = []
            continue
        except EOFError:
            print(file=shell.out)
            return 0
        if not buf and line.strip().startswith("."):
            if not shell.handle(line):
                return 0
            continue
        if not buf and not line.strip():
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            shell.handle("\n".join(buf))
            buf = []
