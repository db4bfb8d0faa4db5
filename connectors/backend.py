"""What a backend is: a few capabilities and two methods."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
from sqlglot import exp

from fedsql.capabilities import Capabilities
from fedsql.connectors.typemap import arrow_type_of_declared, conform, plain_strings
from fedsql.wire import RemoteTable


@dataclass(slots=True)
class Running:
    """A fragment running on a backend: its result stream and how to stop it."""

    reader: pa.RecordBatchReader
    cancel: Callable[[], None]
    close: Callable[[], None]
    engine: str = "native"  # "local": computed in the node's DuckDB over backend scans


SLOW_CANCEL_EVERY = 1.0  # seconds between repeats of a cancel that is not cheap


class Interrupter:
    """Stops a fragment from another thread, also while its backend query is still
    starting (DuckDB runs an aggregate to its end before the first batch): a backend
    arms it with its cancel as soon as the cursor exists; firing before that cancels
    on arming. Used for [limits].max_seconds, Cancel and clients that go away."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancels: list[tuple[Callable[[], None], bool]] = []  # (cancel, repeat)
        self._closed = threading.Event()
        self._fired = threading.Event()

    @property
    def fired(self) -> bool:
        return self._fired.is_set()

    def arm(self, cancel: Callable[[], None], repeat: bool = False) -> None:
        """``repeat``: call ``cancel`` every 50 ms until the fragment closes (DuckDB's
        interrupt is reset when a query begins, and costs nothing); otherwise every
        :data:`SLOW_CANCEL_EVERY` s (a PostgreSQL cancel request opens a connection
        to the server)."""
        with self._lock:
            self._cancels.append((cancel, repeat))
        if self.fired:
            cancel()

    def check(self) -> None:
        """Raise if fired (then no backend query should start)."""
        if self.fired:
            raise BackendError("the fragment was stopped before it started", user_error=False)

    def fire(self) -> None:
        with self._lock:
            if self.fired or self._closed.is_set():
                return
            self._fired.set()
        # A DuckDB interrupt only reaches a query already running (it is reset when
        # a query begins): those armed with repeat are called until the fragment closes.
        threading.Thread(target=self._repeat, name="interrupt", daemon=True).start()

    def _repeat(self) -> None:
        last: dict[int, float] = {}  # when each slow cancel was last sent
        while True:
            with self._lock:
                cancels = list(self._cancels)
            now = time.monotonic()
            for i, (c, repeat) in enumerate(cancels):
                if not repeat:
                    if now - last.get(i, -SLOW_CANCEL_EVERY) < SLOW_CANCEL_EVERY:
                        continue
                    last[i] = now
                try:
                    c()
                except Exception:  # a cursor already closed: nothing left to stop
                    pass
            if self._closed.wait(0.05):
                return

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) if the fragment is stopped."""
        return self._fired.wait(seconds)

    def close(self) -> None:
        """The fragment is over: stop interrupting."""
        self._closed.set()


# What transpiling a checked DuckDB tree to another dialect may write in place of
# what it holds, parsed back with that dialect (casts for exact division, parentheses,
# aliases, arrays for key sets); a backend adds its own in ``transpiled_kinds``.
TRANSPILED: tuple[type[exp.Expr], ...] = (
    exp.Paren, exp.Cast, exp.DataType, exp.DataTypeParam, exp.Any, exp.Array, exp.Literal,
    exp.Identifier, exp.Column, exp.Alias, exp.TableAlias,
)  # fmt: skip


class Backend(Protocol):
    kind: str
    dialect: str  # sqlglot dialect fragments are transpiled to
    # It runs the fragment language as written (DuckDB's SQL), Arrow key sets joined
    # in place; otherwise fragments are transpiled to ``dialect`` and key sets are
    # written by ``key_condition``.
    runs_as_written: bool
    # Schema names that mean "the default schema" in fragments ("" always does).
    default_schemas: tuple[str, ...]
    # What it runs exactly as DuckDB does (fedsql.capabilities); declared, then proven
    # by the conformance suite (tests/test_conformance.py).
    capabilities: Capabilities
    # How many queries may stream from it at once (a fragment computed in the
    # node's DuckDB opens one scan per table it reads).
    max_scans: int
    # The correlated subqueries ("scalar", "exists", "in") it runs once per outer
    # row: with engine = "auto", a fragment holding one over enough rows runs in
    # the node's DuckDB instead (execution.py). Unused where it runs as written.
    per_row_subqueries: frozenset[str]

    def tables(self) -> tuple[RemoteTable, ...]:
        """The tables this backend exposes (cached; the data is read-only)."""
        ...

    def execute(
        self,
        sql: str,
        batch_rows: int,
        tables: dict[str, pa.Table] | None = None,
        interrupter: Interrupter | None = None,
    ) -> Running:
        """Start one checked SELECT (in ``dialect``); the caller must call ``close()``.

        ``tables`` (DuckDB backends only): extra tables visible to this query alone.
        ``interrupter``: armed with the query's cancel before the query starts.
        """
        ...

    def key_condition(self, probe: exp.Expr, values: list[Any]) -> exp.Expr:
        """A shipped key set as a condition in its SQL (``keys.in_list`` for most)."""
        ...

    def close(self) -> None: ...


class BackendError(Exception):
    """The backend could not run a fragment.

    ``user_error``: the fragment itself is at fault (binder, parser, conversion);
    ``unsupported``: the backend lacks a function or construct the fragment uses,
    so a smaller fragment may succeed; ``limit``: the ``[limits]`` key the
    fragment went over (``max_memory``), empty otherwise.
    """

    def __init__(
        self, message: str, user_error: bool, unsupported: bool = False, limit: str = ""
    ) -> None:
        super().__init__(message)
        self.user_error = user_error
        self.unsupported = unsupported
        self.limit = limit


class GuardedReader:
    """A backend's record-batch stream whose errors surface as BackendError.

    Drivers raise their own exceptions mid-stream; ``to_error`` turns one into
    the BackendError the server reports (and decides what of its text may leave).
    """

    def __init__(
        self,
        reader: pa.RecordBatchReader,
        to_error: Callable[[Exception], BackendError],
        catch: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        self._reader = reader
        self._to_error = to_error
        self._catch = catch
        self.schema = reader.schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        it = iter(self._reader)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except self._catch as e:
                raise self._to_error(e) from None  # type: ignore[arg-type]
            yield batch


def exposed_names(names: list[str], only: tuple[str, ...] | None) -> list[str]:
    """Which of a backend's table names (``schema.table`` or ``table``, spelled as
    the backend spells them) to expose, given ``[backend].tables``.

    Fragments are DuckDB SQL, where names ignore case, so two exposed tables may
    not differ only in case: a listed name picks the table spelled exactly so (or
    the only one spelled so but for case); unlisted, such a pair is refused.

    >>> exposed_names(["People", "people", "visits"], ("people",))
    ['people']
    >>> exposed_names(["People", "people"], None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: tables People and people differ only in case, and fragment names ignore case...
    """
    by_lower: dict[str, list[str]] = {}
    for n in names:
        by_lower.setdefault(n.lower(), []).append(n)
    if only is None:
        for same in by_lower.values():
            if len(same) > 1:
                raise ValueError(
                    f"tables {' and '.join(sorted(same))} differ only in case, and fragment "
                    "names ignore case: list the one to expose in [backend].tables"
                )
        return list(names)
    out, missing = [], []
    for want in only:
        if want in names:
            out.append(want)
            continue
        same = by_lower.get(want.lower(), [])
        if len(same) == 1:
            out.append(same[0])
        elif same:
            raise ValueError(
                f"[backend].tables names {want!r}, but {' and '.join(sorted(same))} differ from "
                "it only in case; list one of them exactly as it is spelled"
            )
        else:
            missing.append(want)
    if missing:
        raise ValueError(f"tables listed in [backend].tables not found: {', '.join(missing)}")
    folded = [n.lower() for n in out]
    if len(set(folded)) != len(folded):
        raise ValueError("[backend].tables lists two tables that differ only in case")
    return out


def check_listed(wanted: set[str] | None, found: set[str]) -> None:
    """Every table named in ``[backend].tables`` must exist (names in lower case)."""
    if wanted is None:
        return
    missing = sorted(wanted - found)
    if missing:
        raise ValueError(f"tables listed in [backend].tables not found: {', '.join(missing)}")


def adbc_running(
    con: Any,
    sql: str,
    interrupter: Interrupter | None,
    to_error: Callable[[Exception], BackendError],
    release: Callable[[bool], None],
    broken: Callable[[Exception], bool] = lambda e: False,
    options: dict[str, str] | None = None,
) -> Running:
    """Run ``sql`` on an ADBC connection (PostgreSQL, SQLite) as a :class:`Running`.

    ``release(broken)`` gives the connection back (or closes it) exactly once: when
    the query fails to start (``broken(e)`` says whether the connection is still
    good) or when the fragment is closed.
    """
    cur = con.cursor()
    if interrupter is not None:
        interrupter.arm(cur.adbc_cancel)
    try:
        if options:
            cur.adbc_statement.set_options(**options)
        cur.execute(sql)
        reader = cur.fetch_record_batch()
    except Exception as e:
        _quietly(cur.close)
        release(broken(e))
        raise to_error(e) from None
    done = threading.Event()

    def close() -> None:
        if done.is_set():
            return
        done.set()
        _quietly(cur.close)
        release(False)

    return Running(GuardedReader(reader, to_error), lambda: _quietly(cur.adbc_cancel), close)


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # a cursor already closed or a cancel too late: nothing to do
        pass


__all__ = [
    "Backend",
    "BackendError",
    "GuardedReader",
    "Interrupter",
    "Running",
    "adbc_running",
    "arrow_type_of_declared",
    "check_listed",
    "conform",
    "exposed_names",
    "plain_strings",
]


class Conformed:
    """A backend's stream, cast batch by batch to the expected schema."""

    def __init__(self, reader: object, schema: pa.Schema) -> None:
        self._reader = reader
        self.schema = schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self._reader:  # type: ignore[attr-defined]
            try:
                yield conform(batch, self.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
                raise BackendError(
                    f"a result column does not fit its type: {e}", user_error=False
                ) from None
