"""Small pure pieces: the IPC chunking, the config loader, the doctest examples."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import grpc
import pyarrow as pa
import pytest

from fedsql import reasons
from fedsql.config import load_agency, load_federation
from fedsql.errors import ConfigError
from fedsql.v1 import connector_pb2 as pb
from fedsql.wire import ipc_chunks_to_reader, reader_to_ipc_chunks

DOCTEST_MODULES = [
    "fedsql.connectors.guard",
    "fedsql.connectors.backend",
    "fedsql.planner.resolve",
    "fedsql.policy.rewrite",
    "fedsql.capabilities",
    "fedsql.planner.rules",
    "fedsql.bench.meter",
    "fedsql.connectors.scans",
    "fedsql.connectors.execution",
    "fedsql.connectors.keys",
    "fedsql.joinkeys",
    "fedsql.cli.service",
    "fedsql.shell.backends",
    "fedsql.shell.complete",
    "fedsql.shell.repl",
    "fedsql.certnames",
    "fedsql.service.status",
    "fedsql.reasons",
    "fedsql.output",
    "fedsql.lru",
]


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_ipc_chunks_round_trip_and_respect_the_size_limit() -> None:
    n = 500_000
    table = pa.table(
        {
            "a": pa.array(range(n), pa.int64()),
            "s": pa.array([f"row {i}" for i in range(n)]),
            "n": pa.array([None if i % 7 == 0 else i / 3 for i in range(n)]),
        }
    )
    chunks = list(reader_to_ipc_chunks(table.to_reader(max_chunksize=100_000), chunk_bytes=1 << 20))
    assert len(chunks) > 3 and max(len(c) for c in chunks) <= 1 << 20
    assert ipc_chunks_to_reader(iter(chunks)).read_all().equals(table)


def test_empty_result_is_still_a_stream_with_a_schema() -> None:
    schema = pa.schema([("x", pa.decimal128(15, 2))])
    chunks = list(reader_to_ipc_chunks(pa.RecordBatchReader.from_batches(schema, [])))
    t = ipc_chunks_to_reader(iter(chunks)).read_all()
    assert t.num_rows == 0 and t.schema == schema


def _write(tmp: Path, text: str) -> Path:
    p = tmp / "x.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, why",
    [
        (
            '[connector]\nname="a"\nlisten="127.0.0.1:1"\ninsecure=true\n',
            "missing required key 'backend'",
        ),
        (
            '[connector]\nname="a"\nlisten="nope"\ninsecure=true\n[backend]\nkind="duckdb"\npath="x"\n',
            "is not HOST:PORT",
        ),
        (
            '[connector]\nname="a"\nlisten="127.0.0.1:1"\ninsecure=true\n[backend]\nkind="oracle"\n'
            'path="x"\n',
            "'oracle' is not one of",
        ),
        (
            '[connector]\nname="a"\nlisten="127.0.0.1:1"\ninsecure="yes"\n[backend]\nkind="duckdb"\n'
            'path="x"\n',
            "expected true or false",
        ),
        (
            '[connector]\nname="a"\nlisten="127.0.0.1:1"\ninsecure=true\ncolour="red"\n'
            '[backend]\nkind="duckdb"\npath="x"\n',
            "unknown key(s) 'colour'",
        ),
    ],
)
def test_agency_config_errors(tmp_path: Path, text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_agency(_write(tmp_path, text))
    assert why in str(info.value)


def test_agency_config_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    cfg = load_agency(
        _write(
            tmp_path,
            '[connector]\nname="a"\nlisten="127.0.0.1:0"\n'
            'insecure=true\naudit_log="a.jsonl"\n'
            '[backend]\nkind="files"\npath="data"\n',
        )
    )
    assert cfg.backend.path == tmp_path / "data" and cfg.audit_log == tmp_path / "a.jsonl"


def test_federation_config(tmp_path: Path) -> None:
    cfg = load_federation(
        _write(
            tmp_path,
            '[[connector]]\nname="a"\naddress="127.0.0.1:5"\n'
            'insecure=true\n[user.alice]\nroles=["analyst"]\n',
        )
    )
    assert cfg.users["alice"].roles == ("analyst",) and cfg.connector("a").address.endswith(":5")
    with pytest.raises(ConfigError, match="appears twice"):
        load_federation(
            _write(
                tmp_path,
                '[[connector]]\nname="a"\naddress="h:1"\ninsecure=true\n'
                '[[connector]]\nname="a"\naddress="h:2"\ninsecure=true\n',
            )
        )


class _CallError(grpc.RpcError):
    """A failed call as gRPC hands it over: code, details, trailing metadata."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str = "") -> None:
        self._code, self._details = code, details
        info = pb.ErrorInfo(reason=reason).SerializeToString() if reason else None
        self._trailers = ((reasons.METADATA_KEY, info),) if info else ()

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailers


def test_busy_and_over_a_limit_are_told_apart_by_reason_not_text() -> None:
    """Both are RESOURCE_EXHAUSTED; the connector's ErrorInfo says which, whatever
    the message says (only a connector older than reasons is read by its text)."""
    from fedsql.errors import FragmentLimitExceeded
    from fedsql.resilience import Link, retryable

    link = Link("tax", "127.0.0.1:9", 1.0)
    try:
        exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
        busy = _CallError(exhausted, "every slot is taken", reasons.BUSY)
        over = _CallError(exhausted, "the fragment exceeded max_rows = 5", reasons.LIMIT)
        assert retryable(busy) and not retryable(over)
        assert "too busy" in str(link.error(busy))
        assert isinstance(link.error(over), FragmentLimitExceeded)
        old_busy = _CallError(exhausted, "connector 'tax' is busy")
        old_over = _CallError(exhausted, "exceeded max_rows = 5 ([limits] of connector 'tax')")
        assert "too busy" in str(link.error(old_busy))
        assert isinstance(link.error(old_over), FragmentLimitExceeded)
    finally:
        link.close()
