"""What a backend module declares to the registry (``registry.py``).

A backend is one module (``duckdb.py``, ``files.py``, ``sqlite.py``,
``postgres.py``) holding its :class:`~fedsql.connectors.backend.Backend` class
and one :class:`BackendKind`: the ``[backend]`` keys it takes and how they are
checked, how to open it, its type mapping and how to make sample data in it
(for the demo, the benchmarks and the conformance suite). Dialect,
capabilities, key-set rendering and error classification are on the backend
object itself. Nothing outside the backend modules asks a backend's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from fedsql.lockdown import Setup
from fedsql.tomlconf import Types

if TYPE_CHECKING:
    from fedsql.connectors.backend import Backend


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """``[backend]``: the keys every kind takes, and the kind's own, as its module read them."""

    kind: str
    path: Path | None  # where the data is, for kinds that read a file or a directory
    tables: tuple[str, ...] | None  # None: expose all tables
    # For backends that do not run the fragment language as written: who computes a
    # fragment's joins and aggregates — the database ("native"), the node's DuckDB
    # over filtered scans ("local"), or chosen per fragment ("auto").
    engine: str = "auto"
    options: Any = None  # the kind's own keys (e.g. postgres.PostgresOptions), or None

    def __getattr__(self, name: str) -> Any:
        # The kind's own keys read as before they moved into ``options`` (cfg.dsn, ...).
        if name.startswith("_") or self.options is None:
            raise AttributeError(name)
        return getattr(self.options, name)

    def __repr__(self) -> str:  # never show options: a DSN might carry a secret
        return f"BackendConfig(kind={self.kind!r}, path={self.path!r}, tables={self.tables!r})"


class DatabaseServer(Protocol):
    """A database server sample data can be loaded into (``fedsql.pgserver``)."""

    def create_database(self, name: str) -> str: ...  # its owner's DSN

    def create_reader(self, name: str, tables: tuple[str, ...]) -> str: ...  # a reader's DSN


@dataclass(frozen=True, slots=True)
class Sample:
    """Where to make one agency's sample data: ``<table>.parquet`` files in ``parquet``."""

    parquet: Path
    tables: tuple[str, ...]
    work: Path  # a directory the backend's files may go in
    agency: str
    server: DatabaseServer | None = None  # for kinds that live in a server
    # Keys and indexes per table ("PRIMARY KEY (a)", "INDEX (b, c)"), for kinds that have them.
    indexes: dict[str, list[str]] | None = None


@dataclass(frozen=True, slots=True)
class BackendKind:
    """One backend, as the registry knows it."""

    name: str  # [backend].kind
    what: str  # what it reads, in a few words (config errors, docs)
    # Its own [backend] keys (beyond kind, tables, engine) and their TOML types.
    keys: Types
    required: tuple[str, ...]
    # (where, the config file's directory, the [backend] table) -> its options; raises
    # ConfigError naming the key. Relative paths resolve against the directory.
    options: Callable[[str, Path, dict[str, Any]], Any]
    # (config, the node's setup of every DuckDB it opens, engine limits) -> the backend;
    # raises FileNotFoundError, ValueError or BackendError saying what is wrong.
    open: Callable[[BackendConfig, Setup | None, dict[str, Any]], Backend]
    sql_type: Callable[[pa.DataType], str]  # Arrow type -> the column type it declares
    # Makes the sample's tables in this backend; returns where they are: the value of
    # the [backend] key ``location`` (a path or a DSN).
    sample: Callable[[Sample], str]
    location: str = "path"  # the [backend] key naming where its data is


def no_options(where: str, base: Path, d: dict[str, Any]) -> None:
    """The options of a backend whose only key is ``path`` (``BackendConfig.path``)."""
    return None


def database_file(
    suffix: str, write: Callable[[Path, dict[str, Path]], Path]
) -> Callable[[Sample], str]:
    """The ``sample`` of a backend kept in one database file: ``<agency><suffix>`` in
    the sample's work directory, written by ``write(path, {table: parquet file})``
    unless it is there already."""

    def sample(s: Sample) -> str:
        db = s.work / f"{s.agency}{suffix}"
        if not db.exists():
            write(db, {t: s.parquet / f"{t}.parquet" for t in s.tables})
        return str(db)

    return sample
