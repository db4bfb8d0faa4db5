"""What a backend is: a few capabilities and two methods."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from fedsql.wire import RemoteTable


@dataclass(slots=True)
class Running:
    """A fragment running on a backend: its result stream and how to stop it."""

    reader: pa.RecordBatchReader
    cancel: Callable[[], None]
    close: Callable[[], None]


class Backend(Protocol):
    kind: str
    dialect: str  # sqlglot dialect fragments are transpiled to

    def tables(self) -> tuple[RemoteTable, ...]:
        """The tables this backend exposes (cached; the data is read-only)."""
        ...

    def execute(self, sql: str, batch_rows: int) -> Running:
        """Start one checked SELECT; the caller must call ``close()``."""
        ...

    def close(self) -> None: ...


class BackendError(Exception):
    """The backend could not run a fragment. ``user_error`` says whether the
    fragment itself is at fault (binder/parser/conversion error) or the node."""

    def __init__(self, message: str, user_error: bool) -> None:
        super().__init__(message)
        self.user_error = user_error
