"""Why a connector call failed, as a program reads it: ``ErrorInfo`` in the
trailing metadata ``fedsql-error-bin`` (see connector.proto), never a substring
of the message.

>>> info = error_info("limit", {"error": "max_seconds = 5"}, "DEADLINE_EXCEEDED")
>>> (info.reason, dict(info.metadata))
('LIMIT', {'limit': 'max_seconds'})
"""

from __future__ import annotations

from typing import Any

from fedsql.v1 import connector_pb2 as pb

METADATA_KEY = "fedsql-error-bin"

REFUSED = "REFUSED"
NOT_PERMITTED = "NOT_PERMITTED"
PURPOSE_REQUIRED = "PURPOSE_REQUIRED"  # NOT_PERMITTED, because no purpose was given
UNAUTHENTICATED = "UNAUTHENTICATED"
BUSY = "BUSY"
LIMIT = "LIMIT"
UNSUPPORTED = "UNSUPPORTED"
CANCELLED = "CANCELLED"
BACKEND = "BACKEND"
INTERNAL = "INTERNAL"

_BY_OUTCOME = {
    "busy": BUSY,
    "limit": LIMIT,
    "unsupported": UNSUPPORTED,
    "cancelled": CANCELLED,
    "error": BACKEND,
    "internal": INTERNAL,
}


_REFUSALS = frozenset({PURPOSE_REQUIRED})  # refusals with a reason of their own


def error_info(outcome: str, record: dict[str, Any], code: str) -> pb.ErrorInfo:
    """The ErrorInfo for a call that ends with this audit outcome and gRPC code."""
    if outcome == "refused" and record.get("refusal") in _REFUSALS:
        reason = str(record["refusal"])  # the refusal said which (the audit line keeps it)
    elif outcome == "refused":
        reason = {"PERMISSION_DENIED": NOT_PERMITTED, "UNAUTHENTICATED": UNAUTHENTICATED}.get(
            code, REFUSED
        )
    else:
        reason = _BY_OUTCOME.get(outcome, INTERNAL)
    meta: dict[str, str] = {}
    if reason == LIMIT:
        meta["limit"] = str(record.get("error", "")).split(" ", 1)[0]
    if reason == BUSY:
        meta["share"] = str(record.get("busy", "node"))
    return pb.ErrorInfo(reason=reason, metadata=meta)


def read(err: Any) -> pb.ErrorInfo | None:
    """The ErrorInfo of a failed call (a grpc.RpcError), if the connector sent one."""
    try:
        trailing = err.trailing_metadata() or ()
    except Exception:  # not a call error, or no metadata
        return None
    for key, value in trailing:
        if key == METADATA_KEY and isinstance(value, bytes):
            info = pb.ErrorInfo()
            try:
                info.ParseFromString(value)
            except Exception:  # not ours: as if absent
                return None
            return info
    return None


__all__ = ["METADATA_KEY", "error_info", "read"]
