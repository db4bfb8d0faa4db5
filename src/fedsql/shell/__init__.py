"""`fedsql shell`: interactive SQL against the embedded coordinator or `fedsql serve`.

A statement ends with ``;`` (it may span lines); lines starting with ``.`` are
commands (``.help``), in the manner of the sqlite3 and duckdb shells: ``.mode``,
``.output``, ``.timer``, ``.maxrows``, ``.purpose``. Results are aligned tables
(or CSV, JSON lines, Markdown) with row count and timing; while fragments stream,
a progress line shows rows and bytes per agency. Errors are one ``error: ...``
line and the shell carries on. Like the rest of the CLI, this module writes to
the terminal; nothing else in the library does.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

import pyarrow as pa

from fedsql import reasons
from fedsql.errors import FedSQLError
from fedsql.execute import human_bytes
from fedsql.shell.backends import (
    PROGRESS_EVERY,
    Backend,
    EmbeddedBackend,
    RemoteBackend,
    TableInfo,
    resolvable,
)
from fedsql.shell.complete import COMMANDS, KEYWORDS, Completion, table_refs
from fedsql.sqltypes import sql_type

MAX_ROWS = 50  # rows a result shows on the terminal unless .maxrows says otherwise
HELP = """\
Statements end with ';' and may span lines. Tab completes table names after FROM
and JOIN, the columns of the tables a statement names (alias.column too), keywords
and commands. Commands:
  .tables              the tables you can query (agency.table)
  .describe TABLE      columns and types of a table (masked columns as you see them)
  .explain SQL         fragments per agency and the residual query
  .mode MODE           how results show: table (default), csv, json (one object a
                       line), markdown; .mode alone shows the current one
  .output FILE         write results to FILE (every row); .output alone: back here
  .timer on|off        the time line after each result (default on)
  .maxrows N           rows shown here per result (default 50; 0 shows all); when
                       rows are cut, a line says how many
  .purpose TEXT        why you query: sent with every query to the agencies' audit
                       logs (required where an agency sets require_purpose = true);
                       .purpose alone shows it
  .help                this text
  .quit                leave (also Ctrl-D)"""


@dataclass
class Shell:
    backend: Backend
    format_table: Callable[..., str]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    # Result formats besides "table" (mode -> render); the CLI gives csv, json, markdown.
    formats: Mapping[str, Callable[[pa.Table], str]] = field(default_factory=dict)
    mode: str = "table"
    timer: bool = True
    maxrows: int = MAX_ROWS
    _tables: list[TableInfo] | None = None
    _output: IO[str] | None = None
    _output_path: str = ""

    # -- catalog, for .tables/.describe and completion ----------------------
    def tables(self) -> list[TableInfo]:
        if self._tables is None:
            self._tables = self.backend.tables()
        return self._tables

    def _catalog(self) -> list[TableInfo]:
        try:
            return self.tables()
        except FedSQLError:
            return []

    def words(self) -> list[str]:
        """Every completion candidate (see :meth:`Completion.words`)."""
        return self._completion().words()

    def complete(self, before: str, earlier: str = "", after: str = "") -> tuple[str, list[str]]:
        """(the word before the cursor, what it may become): :class:`Completion`."""
        return self._completion().complete(before, earlier, after)

    def _completion(self) -> Completion:
        return Completion(self._catalog, lambda: self.formats)

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
            message = str(e)
            if e.reason == reasons.PURPOSE_REQUIRED and not self.backend.purpose:
                message += " (in the shell: .purpose TEXT)"
            print(f"error: {message}", file=self.err, flush=True)
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
                    "table": [resolvable(t, tables) for t in tables],
                    "schema": [t.schema for t in tables],
                    "columns": [len(t.columns) for t in tables],
                }
            )
            print(self.format_table(shown, max_rows=len(tables)), file=self.out)
        elif cmd == ".describe":
            t = self._find(arg)
            shown = pa.table(
                {
                    "column": t.columns.names,
                    "type": [sql_type(f.type) for f in t.columns],
                    "nullable": [f.nullable for f in t.columns],
                }
            )
            print(f"{t.agency}.{t.name}", file=self.out)
            print(self.format_table(shown, max_rows=len(t.columns)), file=self.out)
        elif cmd == ".explain":
            if not arg:
                raise FedSQLError("usage: .explain SQL")
            print(self.backend.explain(arg), file=self.out)
        elif cmd == ".mode":
            self._set_mode(arg)
        elif cmd == ".output":
            self._set_output(arg)
        elif cmd == ".timer":
            self._set_timer(arg)
        elif cmd == ".maxrows":
            self._set_maxrows(arg)
        elif cmd == ".purpose":
            self._set_purpose(arg)
        else:
            raise FedSQLError(f"unknown command {cmd}; .help lists the commands")
        self.out.flush()
        return True

    def _set_mode(self, arg: str) -> None:
        modes = ["table", *self.formats]
        if not arg:
            print(f"mode: {self.mode} (choices: {', '.join(modes)})", file=self.out)
        elif arg.lower() in modes:
            self.mode = arg.lower()
        else:
            raise FedSQLError(f"unknown mode '{arg}'; choose from {', '.join(modes)}")

    def _set_output(self, arg: str) -> None:
        if not arg:
            if self._output is not None:
                self._close_output()
                print("results: back to the terminal", file=self.out)
            else:
                print("results: to the terminal (.output FILE: to a file)", file=self.out)
            return
        path = Path(arg).expanduser()
        try:
            f = path.open("w", encoding="utf-8")
        except OSError as e:
            raise FedSQLError(f"cannot write {path}: {e.strerror or e}") from None
        self._close_output()
        self._output, self._output_path = f, str(path)
        print(
            f"results: to {path}, every row (.output alone: back to the terminal)",
            file=self.out,
        )

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
        self._output, self._output_path = None, ""

    def _set_timer(self, arg: str) -> None:
        if arg.lower() in ("on", "off"):
            self.timer = arg.lower() == "on"
        elif arg:
            raise FedSQLError("usage: .timer on|off")
        else:
            print(f"timer: {'on' if self.timer else 'off'}", file=self.out)

    def _set_maxrows(self, arg: str) -> None:
        if not arg:
            shown = "all" if self.maxrows == 0 else str(self.maxrows)
            print(f"maxrows: {shown} (rows shown per result; 0 shows all)", file=self.out)
            return
        try:
            n = int(arg.replace(",", "").replace("_", ""))
        except ValueError:
            n = -1
        if n < 0:
            raise FedSQLError("usage: .maxrows N (rows shown per result; 0 shows all)")
        self.maxrows = n

    def _set_purpose(self, arg: str) -> None:
        if arg:
            self.backend.purpose = arg
            print(f"purpose: {self.backend.purpose} (sent with every query)", file=self.out)
        elif self.backend.purpose:
            print(f"purpose: {self.backend.purpose}", file=self.out)
        else:
            print(
                "no purpose set; .purpose TEXT sets one (agencies with require_purpose = true "
                "refuse queries without one)",
                file=self.out,
            )

    def close(self) -> None:
        self._close_output()

    def _find(self, name: str) -> TableInfo:
        if not name:
            raise FedSQLError("usage: .describe TABLE (agency.table or table)")
        found = self._completion().resolve(name) if self.tables() else []
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

    def _render(self, table: pa.Table) -> str:
        if self.mode == "table":  # without format_table's count line: ours says more
            text: str = self.format_table(table, max_rows=table.num_rows)
            return text.rsplit("\n", 1)[0]
        return self.formats[self.mode](table)

    def _query(self, sql: str) -> None:
        t0 = time.perf_counter()
        self._progress_at = time.monotonic()
        table = self.backend.run(sql, self._progress)
        seconds = time.perf_counter() - t0
        self._clear_progress()
        sink = self._output
        cut = sink is None and 0 < self.maxrows < table.num_rows
        shown = table.slice(0, self.maxrows) if cut else table
        body = self._render(shown)
        if body:
            (sink or self.out).write(body if body.endswith("\n") else body + "\n")
        # The count and time beside a table; on stderr beside CSV/JSON/Markdown on the
        # terminal, which stay clean to copy or pipe.
        notes = self.out if sink is not None or self.mode == "table" else self.err
        n = table.num_rows
        count = f"{n:,} row{'s' if n != 1 else ''}"
        if sink is not None:
            sink.flush()
            print(f"({count} written to {self._output_path})", file=notes)
        elif cut:
            print(
                f"… {shown.num_rows:,} of {n:,} rows shown; .maxrows N (0: all) "
                "or .output FILE for all",
                file=notes,
            )
        else:
            print(f"({count})", file=notes)
        if self.timer:
            stats = self.backend.stats()
            print(f"Time: {seconds:.3f} s" + (f" ({stats})" if stats else ""), file=notes)
        notes.flush()
        self.out.flush()


__all__ = [
    "COMMANDS",
    "KEYWORDS",
    "Backend",
    "EmbeddedBackend",
    "RemoteBackend",
    "Shell",
    "TableInfo",
    "resolvable",
    "run",
    "statements",
    "table_refs",
]

from fedsql.shell.repl import run, statements  # noqa: E402 - the loop, after Shell
