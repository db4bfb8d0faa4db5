"""Refused calls in a connector's audit log: bounded text, and a bounded number of lines.

A refused request is audited with what it claimed (user, roles, purpose) under
``claimed_*`` names, every text field cut to a bound, and at most REFUSAL_BURST
lines per peer at once, then REFUSAL_LINES_PER_SECOND; the rest of a flood
becomes summary lines ("N more refused from PEER") while it lasts (issue 17).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

REFUSAL_BURST = 20
REFUSAL_LINES_PER_SECOND = 1.0
REFUSAL_SUMMARY_SECONDS = 5.0
_MAX_REFUSING_PEERS = 10_000
_MAX_USER, _MAX_ROLE, _MAX_ROLES, _MAX_PURPOSE = 256, 128, 32, 1024
_MAX_QUERY_ID = 128
_MAX_FIELD = 4096  # any other text field of a refused call's line (its SQL: audited_sql)


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _cut(text: str, n: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= n else (text[:n], True)


def claims(p: Any) -> dict[str, Any]:
    """What an unauthenticated request said about its analyst, bounded."""
    user, cut_user = _cut(p.user, _MAX_USER)
    purpose, cut_purpose = _cut(p.purpose, _MAX_PURPOSE)
    roles = [_cut(r, _MAX_ROLE) for r in p.roles[:_MAX_ROLES]]
    out: dict[str, Any] = {
        "claimed_user": user,
        "claimed_roles": [r for r, _ in roles],
        "claimed_purpose": purpose,
    }
    if cut_user or cut_purpose or any(c for _, c in roles) or len(p.roles) > _MAX_ROLES:
        out.update(claims_truncated=True, claimed_roles_count=len(p.roles))
    return out


def bound_fields(rec: dict[str, Any]) -> None:
    """Cut every other text field of a refused call's line (the request chose them:
    query id, nonce, signature...); the SQL is already cut by audited_sql."""
    cut = []
    for k, v in list(rec.items()):
        limit = _MAX_QUERY_ID if k in ("query_id", "cancel_query_id") else _MAX_FIELD
        if k != "sql" and isinstance(v, str) and len(v) > limit:
            rec[k] = v[:limit]
            cut.append(k)
    if cut:
        rec["truncated_fields"] = sorted(cut)


@dataclass(slots=True)
class _Bucket:
    """One peer's allowance of refusal lines, and the refusals it had no line for."""

    coordinator: str
    tokens: float
    at: float  # time.monotonic() of the last refill
    more: int = 0  # refused without a line of their own, since the last summary
    errors: dict[str, int] = field(default_factory=dict)
    rpcs: dict[str, int] = field(default_factory=dict)
    first: str = ""
    last: str = ""
    timer: threading.Timer | None = None


class Refusals:
    """Per-peer rate limit of refusal lines (a token bucket): a peer gets
    REFUSAL_BURST lines at once and REFUSAL_LINES_PER_SECOND after that, so a
    quiet peer's refusals, and any peer's first, are always written; the rest
    are counted and written as one summary line REFUSAL_SUMMARY_SECONDS after
    the first one without a line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def admit(
        self, peer: str, rec: dict[str, Any], summary: Callable[[dict[str, Any]], object]
    ) -> bool:
        now = time.monotonic()
        with self._lock:
            b = self._buckets.get(peer)
            if b is None:
                if len(self._buckets) >= _MAX_REFUSING_PEERS:  # forget peers gone quiet
                    self._buckets = {k: v for k, v in self._buckets.items() if v.more}
                b = _Bucket(str(rec.get("coordinator", "-")), float(REFUSAL_BURST), now)
                self._buckets[peer] = b
            b.tokens = min(float(REFUSAL_BURST), b.tokens + (now - b.at) * REFUSAL_LINES_PER_SECOND)
            b.at = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return True
            b.more += 1
            reason = str(rec.get("error", ""))[:200]
            if reason not in b.errors and len(b.errors) >= 5:
                reason = "(other reasons)"
            b.errors[reason] = b.errors.get(reason, 0) + 1
            rpc = str(rec.get("rpc", "Execute"))[:32]
            b.rpcs[rpc] = b.rpcs.get(rpc, 0) + 1
            b.last = _utc_now()
            b.first = b.first or b.last
            if b.timer is None:
                b.timer = threading.Timer(REFUSAL_SUMMARY_SECONDS, self._flush, (peer, b, summary))
                b.timer.daemon = True
                b.timer.start()
            return False

    def _flush(self, peer: str, b: _Bucket, summary: Callable[[dict[str, Any]], object]) -> None:
        with self._lock:
            n, errors, rpcs, first, last = b.more, b.errors, b.rpcs, b.first, b.last
            b.more, b.errors, b.rpcs, b.first, b.last, b.timer = 0, {}, {}, "", "", None
        if not n:
            return
        try:
            summary(
                {
                    "kind": "refusals",
                    "time": _utc_now(),
                    "peer": peer,
                    "coordinator": b.coordinator,
                    "authenticated": False,
                    "outcome": "refused",
                    "refused_more": n,
                    "summary": f"{n} more refused from {peer}",
                    "errors": errors,
                    "rpcs": rpcs,
                    "first": first,
                    "last": last,
                }
            )
        except Exception:  # a timer thread: nobody else would see it
            log.exception("the summary of %d refusals from %s was not audited", n, peer)
