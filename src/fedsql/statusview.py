"""What ``fedsql status`` and ``fedsql catalog`` say about agencies: their health in
a table of short cells (the details below it), and whether they share one hash key.

Computing and wording only; cli.py prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from fedsql.config import FederationConfig
from fedsql.resilience import AgencyHealth, links_for, probe

REASON_CELL = 32  # characters of a down agency's reason inside the table


def check(config: FederationConfig, timeout: float) -> list[AgencyHealth]:
    """Every connector's health, asked in parallel over fresh channels; no analyst is
    needed (GetStatus carries no principal), so no ``--user`` either."""
    links = links_for(config.connectors, config.connect_timeout_seconds, str(config.source))
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(links))) as pool:
            return list(pool.map(lambda link: probe(link, timeout), links.values()))
    finally:
        for link in links.values():
            link.close()


def status_table(rows: Sequence[AgencyHealth]) -> pa.Table:
    """One row per agency; a down agency's cell says why in a few words."""
    return pa.table(
        {
            "agency": [r.name for r in rows],
            "address": [r.address for r in rows],
            "health": ["up" if r.up else f"DOWN: {_cut(r.reason or 'unreachable')}" for r in rows],
            "version": [r.status.version if r.status else "" for r in rows],
            "latency ms": [round(r.latency_ms, 1) for r in rows],
            "tables": [r.status.tables if r.status else None for r in rows],
            "active": [r.status.active_fragments if r.status else None for r in rows],
            "hash key": [_key_cell(r) for r in rows],
        }
    )


def down_details(rows: Sequence[AgencyHealth]) -> list[str]:
    """For each agency down, the whole story: what is wrong and what to do."""
    return [f"{r.name}: {r.error}" for r in rows if not r.up]


def _key_cell(r: AgencyHealth) -> str:
    if r.status is None:
        return ""
    return r.status.hash_key_fingerprint or "none"


def _cut(text: str) -> str:
    return text if len(text) <= REASON_CELL else text[: REASON_CELL - 1] + "…"


def key_warnings(fingerprints: dict[str, str], coordinator: str = "") -> list[str]:
    """Warnings when the agencies (and the coordinator) hash with different keys.

    ``fingerprints``: agency → its hash key fingerprint ("" for none, ignored: an
    agency without a key has no hash masks). ``coordinator``: the coordinator's own
    (for its federation-level hash masks), "" for none.

    >>> key_warnings({"health": "hk:aa", "tax": "hk:aa"}, "hk:aa")
    []
    >>> print(key_warnings({"health": "hk:aa", "tax": "hk:bb", "trade": ""})[0])
    warning: the agencies hash with different keys (health hk:aa; tax hk:bb): hashed...
    """
    keyed = {a: f for a, f in sorted(fingerprints.items()) if f}
    if coordinator:
        keyed["(coordinator)"] = coordinator
    by_key: dict[str, list[str]] = {}
    for who, f in keyed.items():
        by_key.setdefault(f, []).append(who)
    if len(by_key) <= 1:
        return []
    groups = "; ".join(f"{', '.join(who)} {f}" for f, who in by_key.items())
    return [
        f"warning: the agencies hash with different keys ({groups}): hashed IDs from "
        "them never match, so joins on hashed columns return nothing. Give every "
        "connector (and the coordinator) the same hash_key_file (`fedsql keys init FILE` "
        "makes one; copy it, never regenerate it per agency)"
    ]
