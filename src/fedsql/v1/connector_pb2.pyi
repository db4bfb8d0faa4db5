from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Principal(_message.Message):
    __slots__ = ("user", "roles", "purpose", "issued_unix_ms", "nonce", "signature")
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    user: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    purpose: str
    issued_unix_ms: int
    nonce: bytes
    signature: bytes
    def __init__(self, user: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., purpose: _Optional[str] = ..., issued_unix_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GetCatalogRequest(_message.Message):
    __slots__ = ("principal",)
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    principal: Principal
    def __init__(self, principal: _Optional[_Union[Principal, _Mapping]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "arrow_type", "nullable", "mask", "mask_rules")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARROW_TYPE_FIELD_NUMBER: _ClassVar[int]
    NULLABLE_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    MASK_RULES_FIELD_NUMBER: _ClassVar[int]
    name: str
    arrow_type: str
    nullable: bool
    mask: str
    mask_rules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., arrow_type: _Optional[str] = ..., nullable: _Optional[bool] = ..., mask: _Optional[str] = ..., mask_rules: _Optional[_Iterable[str]] = ...) -> None: ...

class Table(_message.Message):
    __slots__ = ("name", "schema", "columns", "arrow_schema", "row_count_estimate", "row_filtered", "row_filters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ARROW_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    ROW_FILTERED_FIELD_NUMBER: _ClassVar[int]
    ROW_FILTERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    schema: str
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    arrow_schema: bytes
    row_count_estimate: int
    row_filtered: bool
    row_filters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., schema: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., arrow_schema: _Optional[bytes] = ..., row_count_estimate: _Optional[int] = ..., row_filtered: _Optional[bool] = ..., row_filters: _Optional[_Iterable[str]] = ...) -> None: ...

class Catalog(_message.Message):
    __slots__ = ("connector", "version", "backend", "tables", "dialect", "unsupported", "fragment_language", "capabilities", "default_schema", "hash_key_fingerprint")
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    DIALECT_FIELD_NUMBER: _ClassVar[int]
    UNSUPPORTED_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    HASH_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    connector: str
    version: str
    backend: str
    tables: _containers.RepeatedCompositeFieldContainer[Table]
    dialect: str
    unsupported: _containers.RepeatedScalarFieldContainer[str]
    fragment_language: str
    capabilities: Capabilities
    default_schema: str
    hash_key_fingerprint: str
    def __init__(self, connector: _Optional[str] = ..., version: _Optional[str] = ..., backend: _Optional[str] = ..., tables: _Optional[_Iterable[_Union[Table, _Mapping]]] = ..., dialect: _Optional[str] = ..., unsupported: _Optional[_Iterable[str]] = ..., fragment_language: _Optional[str] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., default_schema: _Optional[str] = ..., hash_key_fingerprint: _Optional[str] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("version", "features")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    version: str
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("query_id", "sql", "principal", "batch_rows", "key_sets", "compression", "fragment_language")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    BATCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    KEY_SETS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    sql: str
    principal: Principal
    batch_rows: int
    key_sets: _containers.RepeatedCompositeFieldContainer[KeySet]
    compression: str
    fragment_language: str
    def __init__(self, query_id: _Optional[str] = ..., sql: _Optional[str] = ..., principal: _Optional[_Union[Principal, _Mapping]] = ..., batch_rows: _Optional[int] = ..., key_sets: _Optional[_Iterable[_Union[KeySet, _Mapping]]] = ..., compression: _Optional[str] = ..., fragment_language: _Optional[str] = ...) -> None: ...

class ErrorInfo(_message.Message):
    __slots__ = ("reason", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    reason: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, reason: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class KeySet(_message.Message):
    __slots__ = ("name", "arrow_ipc")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    name: str
    arrow_ipc: bytes
    def __init__(self, name: _Optional[str] = ..., arrow_ipc: _Optional[bytes] = ...) -> None: ...

class ExecuteStats(_message.Message):
    __slots__ = ("rows", "bytes", "seconds")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    bytes: int
    seconds: float
    def __init__(self, rows: _Optional[int] = ..., bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("arrow_ipc", "stats", "receipt")
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    arrow_ipc: bytes
    stats: ExecuteStats
    receipt: Receipt
    def __init__(self, arrow_ipc: _Optional[bytes] = ..., stats: _Optional[_Union[ExecuteStats, _Mapping]] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("connector", "query_id", "sql_sha256", "outcome", "rows", "ipc_bytes", "audit_seq", "audit_hash", "time_unix_ms", "coordinator", "user", "nonce", "algorithm", "certificate", "signature")
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SQL_SHA256_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    IPC_BYTES_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HASH_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    connector: str
    query_id: str
    sql_sha256: str
    outcome: str
    rows: int
    ipc_bytes: int
    audit_seq: int
    audit_hash: str
    time_unix_ms: int
    coordinator: str
    user: str
    nonce: bytes
    algorithm: str
    certificate: bytes
    signature: bytes
    def __init__(self, connector: _Optional[str] = ..., query_id: _Optional[str] = ..., sql_sha256: _Optional[str] = ..., outcome: _Optional[str] = ..., rows: _Optional[int] = ..., ipc_bytes: _Optional[int] = ..., audit_seq: _Optional[int] = ..., audit_hash: _Optional[str] = ..., time_unix_ms: _Optional[int] = ..., coordinator: _Optional[str] = ..., user: _Optional[str] = ..., nonce: _Optional[bytes] = ..., algorithm: _Optional[str] = ..., certificate: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("query_id",)
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    def __init__(self, query_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: int
    def __init__(self, cancelled: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Status(_message.Message):
    __slots__ = ("connector", "version", "backend", "tables", "active_fragments", "max_concurrent_fragments", "uptime_seconds", "fragments", "rows", "bytes", "metrics_url", "latency", "hash_key_fingerprint")
    class FragmentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LatencyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LatencyHistogram
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LatencyHistogram, _Mapping]] = ...) -> None: ...
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    METRICS_URL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    HASH_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    connector: str
    version: str
    backend: str
    tables: int
    active_fragments: int
    max_concurrent_fragments: int
    uptime_seconds: float
    fragments: _containers.ScalarMap[str, int]
    rows: int
    bytes: int
    metrics_url: str
    latency: _containers.MessageMap[str, LatencyHistogram]
    hash_key_fingerprint: str
    def __init__(self, connector: _Optional[str] = ..., version: _Optional[str] = ..., backend: _Optional[str] = ..., tables: _Optional[int] = ..., active_fragments: _Optional[int] = ..., max_concurrent_fragments: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., fragments: _Optional[_Mapping[str, int]] = ..., rows: _Optional[int] = ..., bytes: _Optional[int] = ..., metrics_url: _Optional[str] = ..., latency: _Optional[_Mapping[str, LatencyHistogram]] = ..., hash_key_fingerprint: _Optional[str] = ...) -> None: ...

class LatencyHistogram(_message.Message):
    __slots__ = ("upper_bounds", "cumulative_counts", "count", "sum_seconds")
    UPPER_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    upper_bounds: _containers.RepeatedScalarFieldContainer[float]
    cumulative_counts: _containers.RepeatedScalarFieldContainer[int]
    count: int
    sum_seconds: float
    def __init__(self, upper_bounds: _Optional[_Iterable[float]] = ..., cumulative_counts: _Optional[_Iterable[int]] = ..., count: _Optional[int] = ..., sum_seconds: _Optional[float] = ...) -> None: ...
