"""One root error, flat subclasses, and the one place that maps them to gRPC.

Every failure a user can cause is a :class:`FedSQLError` whose message names the
agency, table or column involved. The CLI prints ``str(error)`` without a
traceback.
"""

from __future__ import annotations

import grpc


class FedSQLError(Exception):
    """Root of every error fedsql raises on purpose.

    ``reason``: why, for programs (a ``reasons`` name such as PURPOSE_REQUIRED), when
    it is more than the class says; "" otherwise. Never read the message instead."""

    reason: str = ""


class ConfigError(FedSQLError):
    """A configuration file is missing, malformed or inconsistent."""


class CatalogError(FedSQLError):
    """A table or column name does not resolve (unknown, ambiguous)."""


class PlanError(FedSQLError):
    """The query cannot be parsed or planned."""


class PolicyError(FedSQLError):
    """A policy forbids the request."""


class QueryTimeout(FedSQLError):
    """The query's deadline passed."""


class QueryCancelled(FedSQLError):
    """The query was cancelled (by the caller, or because another part failed)."""


class ConnectorError(FedSQLError):
    """A connector (agency) failed, refused, or could not be reached."""

    def __init__(self, agency: str, message: str) -> None:
        super().__init__(f"agency '{agency}': {message}")
        self.agency = agency


class FragmentRefused(ConnectorError):
    """The connector refused a fragment (not a read-only SELECT, unknown table, ...)."""


class FragmentNotPermitted(FragmentRefused):
    """The connector refused the caller, not the fragment: no grant opens a table to
    them, or a purpose it requires is missing (the connector's PERMISSION_DENIED)."""


class PurposeRequired(FragmentNotPermitted):
    """The agency requires a purpose with every query and none was given."""

    reason = "PURPOSE_REQUIRED"


class FragmentLimitExceeded(ConnectorError):
    """The fragment went over the agency's per-fragment limits (rows, bytes, seconds)."""


class FragmentUnsupported(ConnectorError):
    """The agency's backend cannot run this fragment; a smaller one may work."""


class ExecutionError(FedSQLError):
    """The residual query failed at the coordinator."""


class RefusedFragment(Exception):
    """Raised inside a connector when a fragment fails its checks.

    ``code`` is the gRPC status the connector answers with.
    """

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason  # a reasons name, when the refusal has its own (PURPOSE_REQUIRED)


def from_rpc_error(agency: str, err: grpc.RpcError) -> FedSQLError:
    """Turn a failed gRPC call to ``agency`` into the matching FedSQLError."""
    code = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else None) or str(code)
    from fedsql import reasons  # here: errors is imported by the generated code's users

    info = reasons.read(err)
    if info is not None:  # the connector said why: no need to read its message
        if info.reason == reasons.LIMIT:
            return FragmentLimitExceeded(agency, details)
        if info.reason == reasons.UNSUPPORTED:
            return FragmentUnsupported(agency, f"its backend cannot run the fragment: {details}")
        if info.reason == reasons.PURPOSE_REQUIRED:
            return PurposeRequired(agency, f"refused the fragment: {details}")
        if info.reason == reasons.NOT_PERMITTED:
            return FragmentNotPermitted(agency, f"refused the fragment: {details}")
        if info.reason == reasons.REFUSED:
            return FragmentRefused(agency, f"refused the fragment: {details}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return FragmentNotPermitted(agency, f"refused the fragment: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return FragmentRefused(agency, f"refused the fragment: {details}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return FragmentRefused(agency, f"did not accept this coordinator's request: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED or (
        code == grpc.StatusCode.DEADLINE_EXCEEDED and "[limits]" in details
    ):
        return FragmentLimitExceeded(agency, details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FragmentUnsupported(agency, f"its backend cannot run the fragment: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return QueryTimeout(f"agency '{agency}' did not answer before the deadline")
    if code == grpc.StatusCode.UNAVAILABLE and any(
        w in details.lower() for w in ("handshake", "ssl", "tls", "certificate")
    ):
        return ConnectorError(
            agency,
            f"the TLS handshake failed ({details}); check that [connector.tls] ca, cert and "
            "key in the federation config come from the agency's federation CA, and that "
            "its connector allows this coordinator",
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        return ConnectorError(
            agency,
            f"unreachable ({details}); check that its connector is running "
            "and that the address in the federation config is right",
        )
    if code == grpc.StatusCode.CANCELLED:
        return ConnectorError(agency, "the fragment was cancelled")
    return ConnectorError(agency, f"{code.name if code else 'error'}: {details}")
