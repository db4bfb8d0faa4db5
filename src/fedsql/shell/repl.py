"""The shell's read-eval-print loop: prompt_toolkit on a terminal (history,
completion from :meth:`Shell.complete`), plain lines from a pipe."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsql.shell import Shell

HISTORY_FILE = Path.home() / ".fedsql_history"


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


def _completer(shell: Shell, pending: list[str]) -> Any:
    from prompt_toolkit.completion import CompleteEvent, Completer, Completion
    from prompt_toolkit.document import Document

    class ShellCompleter(Completer):  # type: ignore[misc]
        """Completion from :meth:`Shell.complete`; ``pending``: the statement's earlier lines."""

        def get_completions(
            self, document: Document, complete_event: CompleteEvent
        ) -> Iterator[Completion]:
            word, candidates = shell.complete(
                document.text_before_cursor, "\n".join(pending), document.text_after_cursor
            )
            for c in candidates:
                yield Completion(c, start_position=-len(word))

    return ShellCompleter()


def run(shell: Shell, banner: str) -> int:
    """The read-eval-print loop: prompt_toolkit on a terminal, plain lines otherwise."""
    try:
        return _loop(shell, banner)
    finally:
        shell.close()


def _loop(shell: Shell, banner: str) -> int:
    if not sys.stdin.isatty():
        for stmt in statements(line.rstrip("\n") for line in sys.stdin):
            if not shell.handle(stmt):
                break
        return 0
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    print(banner, file=shell.out)
    buf: list[str] = []
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(HISTORY_FILE)),
        completer=_completer(shell, buf),
        complete_while_typing=False,
    )
    while True:
        try:
            line = session.prompt("fedsql> " if not buf else "   ...> ")
        except KeyboardInterrupt:
            buf.clear()
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
            buf.clear()
