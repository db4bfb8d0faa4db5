"""What the shell runs against: an embedded Federation or a remote `fedsql serve`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import pyarrow as pa

from fedsql.errors import FedSQLError
from fedsql.execute import QueryStats, human_bytes

PROGRESS_EVERY = 0.2  # seconds between progress-line updates


@dataclass(frozen=True, slots=True)
class TableInfo:
    agency: str
    schema: str
    name: str
    columns: pa.Schema


class Backend(Protocol):
    """What the shell runs against: an embedded Federation or a remote service."""

    purpose: str  # why the analyst asks; goes with every query

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

    @property
    def purpose(self) -> str:
        return str(self.fed.principal.purpose)

    @purpose.setter
    def purpose(self, purpose: str) -> None:
        # The principal goes with each query as it starts (Federation reads it per query).
        self.fed.principal = replace(self.fed.principal, purpose=purpose.strip())

    def run(self, sql: str, progress: Callable[[dict[str, tuple[int, int]]], None]) -> pa.Table:
        from fedsql.execute import QueryWatch
        from fedsql.interrupt import run_cancellable

        # Ctrl-C cancels the query, its merge included (KeyboardInterrupt, then `handle`)
        watch = QueryWatch(lambda w: progress(w.progress()))
        try:
            return run_cancellable(lambda w: self.fed.sql(sql, watch=w), watch)
        finally:  # the query ran in a worker thread: its stats are the watch's
            self.last_stats = watch.stats

    def explain(self, sql: str) -> str:
        return str(self.fed.explain(sql))

    def tables(self) -> list[TableInfo]:
        return [
            TableInfo(t.agency, t.schema_key, t.name, t.arrow_schema)
            for t in self.fed.catalog.tables
        ]

    last_stats: QueryStats | None = None  # of the last query run here

    def stats(self) -> str:
        st = self.last_stats
        return "" if st is None else str(st.per_agency())


class RemoteBackend:
    def __init__(self, remote: Any) -> None:
        self.remote = remote
        self._last: dict[str, Any] = {}

    @property
    def purpose(self) -> str:
        return str(self.remote.purpose)

    @purpose.setter
    def purpose(self, purpose: str) -> None:
        self.remote.purpose = purpose  # the x-fedsql-purpose header of every later call

    def _running(self, user: str) -> set[str]:
        try:
            return {
                str(q["id"])
                for q in self.remote.queries()
                if q["state"] == "running" and q["user"] == user
            }
        except FedSQLError:
            return set()

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

        from fedsql.execute import QueryWatch
        from fedsql.interrupt import run_cancellable

        before = self._running(user)  # this user's queries from other sessions stay

        def cancel_at_the_service() -> None:  # Ctrl-C: the service stops it, merge too
            for qid in self._running(user) - before:
                try:
                    self.remote.cancel(qid)
                except FedSQLError:
                    pass

        watch = QueryWatch(on_cancel=cancel_at_the_service)
        t = threading.Thread(target=poll, daemon=True)
        t.start()
        try:
            return run_cancellable(lambda w: self.remote.sql(sql), watch)
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


def resolvable(t: TableInfo, tables: list[TableInfo]) -> str:
    """The shortest name that resolves to ``t``: ``agency.table`` when no other schema
    of the agency has a table of that name, else ``agency.schema.table``.

    >>> s = pa.schema([])
    >>> ts = [TableInfo("tax", "public", "r", s), TableInfo("tax", "archive", "r", s),
    ...       TableInfo("tax", "archive", "old", s)]
    >>> [resolvable(t, ts) for t in ts]
    ['tax.public.r', 'tax.archive.r', 'tax.old']
    """
    same = sum(1 for o in tables if o.agency == t.agency and o.name.lower() == t.name.lower())
    return f"{t.agency}.{t.name}" if same == 1 else f"{t.agency}.{t.schema}.{t.name}"


def _schema(row: dict[str, Any]) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(row["table_schema"]))
