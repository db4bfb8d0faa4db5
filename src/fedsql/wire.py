"""The one module that turns Arrow ↔ IPC chunks and proto ↔ dataclasses.

Nothing else imports ``fedsql.v1``'s ``_pb2`` modules for data conversion.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields

import pyarrow as pa
from google.protobuf.message import DecodeError

from fedsql.audit.receipts import RECEIPT_METADATA, Receipt
from fedsql.capabilities import Capabilities, from_kinds
from fedsql.v1 import connector_pb2 as pb

# One gRPC message carries at most this many IPC bytes: large enough that
# per-message overhead is negligible (hundreds of MB/s on loopback), and under
# gRPC's default 4 MiB receive limit so that any stock client can read us.
CHUNK_BYTES = 2 << 20
FLUSH_SECONDS = 0.1  # at most this long between chunks while batches come
# Limit for one gRPC message, both sides (a single huge record batch is split
# across messages anyway: a chunk is at most one batch plus CHUNK_BYTES).
MAX_MESSAGE_BYTES = 256 << 20
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
QUERY_ID_METADATA = "fedsql-query-id"
COMPRESSIONS = ("", "lz4", "zstd")


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    roles: tuple[str, ...] = ()
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class RemoteTable:
    """A table as a connector exposes it (to one principal)."""

    schema: str  # "" for the backend's default schema
    name: str
    arrow_schema: pa.Schema
    row_count_estimate: int  # -1 when unknown
    masks: tuple[tuple[str, str], ...] = ()  # (column, mask this principal gets)
    mask_rules: tuple[tuple[str, str], ...] = ()  # (column, a configured rule), all roles
    row_filtered: bool = False
    row_filters: tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True, slots=True)
class RemoteCatalog:
    connector: str
    version: str
    backend: str
    tables: tuple[RemoteTable, ...]
    dialect: str = "duckdb"  # informational: what the node transpiles to
    capabilities: Capabilities = Capabilities()
    fragment_language: str = "1"  # the version of the fragment language it accepts
    default_schema: str = "main"  # the backend's own name for its default schema
    hash_key_fingerprint: str = ""  # names the node's hash key (fedsql.hashkey); "" none


@dataclass(frozen=True, slots=True)
class FragmentStats:
    rows: int
    bytes: int
    seconds: float


def principal_to_proto(p: Principal) -> pb.Principal:
    return pb.Principal(user=p.user, roles=list(p.roles), purpose=p.purpose)


def principal_from_proto(p: pb.Principal) -> Principal:
    return Principal(user=p.user, roles=tuple(dict.fromkeys(p.roles)), purpose=p.purpose)


def signed_payload(connector: str, request: pb.ExecuteRequest | pb.GetCatalogRequest) -> bytes:
    """The canonical bytes a coordinator signs for ``request`` to ``connector``
    (the spec is the comment on ``Principal`` in connector.proto)."""
    p = request.principal
    keys = hashlib.sha256()
    if isinstance(request, pb.ExecuteRequest):
        rpc, qid, sql = "Execute", request.query_id, request.sql
        for k in request.key_sets:
            keys.update(k.name.encode() + b"\0" + k.arrow_ipc)
    else:
        rpc, qid, sql = "GetCatalog", "", ""
    doc = {
        "v": 1,
        "rpc": rpc,
        "connector": connector,
        "query_id": qid,
        "sql_sha256": hashlib.sha256(sql.encode("utf-8")).hexdigest(),
        "keys_sha256": keys.hexdigest() if rpc == "Execute" else "",
        "user": p.user,
        "roles": sorted(set(p.roles)),
        "purpose": p.purpose,
        "issued_unix_ms": p.issued_unix_ms,
        "nonce": p.nonce.hex(),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def stamped(
    request: pb.ExecuteRequest | pb.GetCatalogRequest,
    connector: str,
    sign: Callable[[bytes], bytes],
    issued_unix_ms: int,
    nonce: bytes,
) -> pb.ExecuteRequest | pb.GetCatalogRequest:
    """A copy of ``request`` whose principal carries the coordinator's signature."""
    out = type(request)()
    out.CopyFrom(request)
    out.principal.issued_unix_ms = issued_unix_ms
    # A nonce the caller chose is kept: the coordinator matches the connector's
    # receipt (which repeats it) to the request it sent.
    out.principal.nonce = request.principal.nonce or nonce
    out.principal.ClearField("signature")
    out.principal.signature = sign(signed_payload(connector, out))
    return out


def principal_proof(p: pb.Principal) -> tuple[int, bytes, bytes]:
    """(issued_unix_ms, nonce, signature) of a principal as received."""
    return p.issued_unix_ms, p.nonce, p.signature


def receipt_to_proto(r: Receipt) -> pb.Receipt:
    """Field by field, as NodeStatus is (the nonce travels as bytes, kept as hex)."""
    values = {f.name: getattr(r, f.name) for f in fields(Receipt)}
    return pb.Receipt(**values | {"nonce": bytes.fromhex(r.nonce)})


def receipt_from_proto(m: pb.Receipt) -> Receipt:
    values = {f.name: getattr(m, f.name) for f in fields(Receipt)}
    return Receipt(**values | {"nonce": m.nonce.hex()})


def receipt_from_metadata(metadata: object) -> Receipt | None:
    """The receipt in a failed call's trailing metadata, if any (None also when it
    does not parse: the coordinator then holds no receipt for the call)."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == RECEIPT_METADATA and isinstance(value, bytes):
            try:
                return receipt_from_proto(pb.Receipt.FromString(value))
            except DecodeError:
                return None
    return None


def schema_to_bytes(schema: pa.Schema) -> bytes:
    return bytes(schema.serialize())


def catalog_to_proto(cat: RemoteCatalog) -> pb.Catalog:
    return pb.Catalog(
        connector=cat.connector,
        version=cat.version,
        backend=cat.backend,
        dialect=cat.dialect,
        fragment_language=cat.fragment_language,
        default_schema=cat.default_schema,
        hash_key_fingerprint=cat.hash_key_fingerprint,
        capabilities=pb.Capabilities(
            version=cat.capabilities.version, features=sorted(cat.capabilities.features)
        ),
        tables=[
            pb.Table(
                name=t.name,
                schema=t.schema,
                columns=[
                    pb.Column(
                        name=f.name,
                        arrow_type=str(f.type),
                        nullable=f.nullable,
                        mask=dict(t.masks).get(f.name, ""),
                        mask_rules=[r for c, r in t.mask_rules if c == f.name],
                    )
                    for f in t.arrow_schema
                ],
                arrow_schema=schema_to_bytes(t.arrow_schema),
                row_count_estimate=t.row_count_estimate,
                row_filtered=t.row_filtered,
                row_filters=list(t.row_filters),
            )
            for t in cat.tables
        ],
    )


def catalog_from_proto(msg: pb.Catalog) -> RemoteCatalog:
    return RemoteCatalog(
        connector=msg.connector,
        version=msg.version,
        backend=msg.backend,
        tables=tuple(
            RemoteTable(
                schema=t.schema,
                name=t.name,
                arrow_schema=pa.ipc.read_schema(pa.py_buffer(t.arrow_schema)),
                row_count_estimate=t.row_count_estimate,
                masks=tuple((c.name, c.mask) for c in t.columns if c.mask),
                mask_rules=tuple((c.name, r) for c in t.columns for r in c.mask_rules),
                row_filtered=t.row_filtered,
                row_filters=tuple(t.row_filters),
            )
            for t in msg.tables
        ),
        dialect=msg.dialect or "duckdb",
        capabilities=(
            Capabilities(frozenset(msg.capabilities.features), msg.capabilities.version)
            if msg.HasField("capabilities")
            else from_kinds(msg.unsupported)
        ),
        fragment_language=msg.fragment_language or "1",
        default_schema=msg.default_schema or "main",
        hash_key_fingerprint=msg.hash_key_fingerprint,
    )


class _ChunkSink(io.RawIOBase):
    """A write-only file that collects what the IPC writer writes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[no-untyped-def,override]
        data = bytes(b)
        self.parts.append(data)
        self.size += len(data)
        return len(data)

    def take(self, limit: int) -> Iterator[bytes]:
        """Everything written so far, as pieces of at most ``limit`` bytes."""
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        if len(data) <= limit:
            yield data
            return
        view = memoryview(data)
        for i in range(0, len(data), limit):
            yield bytes(view[i : i + limit])


def reader_to_ipc_chunks(
    reader: pa.RecordBatchReader, chunk_bytes: int = CHUNK_BYTES, compression: str | None = None
) -> Iterator[bytes]:
    """Stream a record-batch reader as IPC stream bytes, in chunks of about ``chunk_bytes``.

    The chunks, concatenated, are one Arrow IPC stream. Only the batches not
    yet sent are held in memory.
    """
    sink = _ChunkSink()
    options = pa.ipc.IpcWriteOptions(compression=compression or None)
    sent = time.monotonic()
    with pa.ipc.new_stream(sink, reader.schema, options=options) as writer:
        for batch in reader:
            if batch.num_rows:
                writer.write_batch(batch)
            # Full chunks for throughput; but what a slow source produced goes out
            # within FLUSH_SECONDS, so the first rows of a stream are not held back
            # (compressed batches are small: a chunk can hold a whole result).
            if sink.size >= chunk_bytes or (sink.size and time.monotonic() - sent >= FLUSH_SECONDS):
                yield from sink.take(chunk_bytes)
                sent = time.monotonic()
    yield from sink.take(chunk_bytes)  # the rest, end-of-stream marker included


class _ChunkSource(io.RawIOBase):
    """A read-only file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, out) -> int:  # type: ignore[no-untyped-def,override]
        while not self._buf:
            nxt = next(self._it, None)
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(out), len(self._buf))
        out[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


KEY_SET_NAME = re.compile(r"__fedsql_keys\d+")
MAX_KEY_SET_ROWS = 5_000_000


def key_set_to_proto(name: str, keys: pa.Array) -> pb.KeySet:
    table = pa.table({"k": keys})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return pb.KeySet(name=name, arrow_ipc=sink.getvalue().to_pybytes())


def key_set_from_proto(msg: pb.KeySet) -> tuple[str, pa.Table]:
    """Decode and check one key set; ValueError says what is wrong with it."""
    if not KEY_SET_NAME.fullmatch(msg.name):
        raise ValueError(f"key set name {msg.name!r} is not __fedsql_keys<N>")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(msg.arrow_ipc)).read_all()
    except pa.ArrowInvalid as e:
        raise ValueError(f"key set {msg.name} is not an Arrow IPC stream: {e}") from None
    if table.column_names != ["k"] or table.num_rows > MAX_KEY_SET_ROWS:
        raise ValueError(
            f"key set {msg.name} must be one column 'k' of at most {MAX_KEY_SET_ROWS} rows"
        )
    return msg.name, table


def ipc_chunks_to_reader(chunks: Iterable[bytes]) -> pa.RecordBatchReader:
    """Read an Arrow IPC stream that arrives as a sequence of byte chunks."""
    return pa.ipc.open_stream(io.BufferedReader(_ChunkSource(chunks), 1 << 20))


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Fragment latencies of one outcome, as Prometheus histograms count them."""

    upper_bounds: tuple[float, ...]  # seconds, ascending; +Inf implied
    cumulative_counts: tuple[int, ...]  # fragments within each bound
    count: int  # all fragments measured (the +Inf bucket)
    sum_seconds: float


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A connector's answer to GetStatus."""

    connector: str
    version: str
    backend: str
    tables: int
    active_fragments: int
    max_concurrent_fragments: int
    uptime_seconds: float
    fragments: dict[str, int]  # finished fragments by outcome
    rows: int
    bytes: int
    metrics_url: str = ""
    # by outcome; empty from connectors older than the field
    latency: dict[str, LatencyHistogram] = field(default_factory=dict)
    hash_key_fingerprint: str = ""  # names the node's hash key (fedsql.hashkey); "" none


def status_to_proto(s: NodeStatus) -> pb.Status:
    values = {f.name: getattr(s, f.name) for f in fields(NodeStatus) if f.name != "latency"}
    return pb.Status(
        **values,
        latency={o: pb.LatencyHistogram(**asdict(h)) for o, h in s.latency.items()},
    )


def status_from_proto(msg: pb.Status) -> NodeStatus:
    values = {f.name: getattr(msg, f.name) for f in fields(NodeStatus)}
    latency = {
        o: LatencyHistogram(
            tuple(h.upper_bounds), tuple(h.cumulative_counts), h.count, h.sum_seconds
        )
        for o, h in msg.latency.items()
    }
    return NodeStatus(**(values | {"fragments": dict(msg.fragments), "latency": latency}))
