"""``fedsql audit reconcile``: hold each side's log against the other's evidence.

Connector logs and coordinator logs (files or directories, rotated files in
any order) are put into chains and verified, then matched both ways:

- every receipt a coordinator kept names a line (agency, seq, hash): the line
  must be in that agency's log with that hash. A receipt past the log's end
  means the log lost its tail (**truncated**); a line whose hash differs was
  **edited** (the fields that differ are named) or sits in a **rewritten**
  chain (same content, different history). Each receipt must verify with its
  certificate, valid at its time (**bad receipt**, **expired key**);
- every Execute line of a connector, asked by a coordinator whose log was
  given and at a time that log covers, must be among that coordinator's calls
  (matched by the request's nonce): otherwise the coordinator's log
  **dropped** it;
- every line that says a coordinator vouched for the request must carry that
  coordinator's principal signature, verifying with the certificate in the
  log (**forged principal**): who asked cannot be rewritten by the agency.

Exit status is 1 when anything is wrong.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsql.audit.files import line_time
from fedsql.audit.receipts import Receipt, from_log, signature_problem
from fedsql.audit.signing import Authority, algorithm_for, load_cert, verify_signature
from fedsql.audit.verify import Verdict, chains, records, verify_chain
from fedsql.errors import ConfigError

PLAINTEXT = "(plaintext: unauthenticated)"  # what connectors record for a plaintext caller
# A connector line up to this long before its coordinator's first line still counts
# as covered (the coordinator writes a query's line when the query ends).
SLACK = dt.timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # truncated, edited, rewritten, dropped, bad receipt, ...
    message: str
    error: bool = True


@dataclass
class _Connector:
    name: str
    verdict: Verdict
    lines: dict[int, tuple[Path, int, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class _Coordinator:
    name: str
    verdict: Verdict
    # (query line, one of its calls)
    calls: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    first: dt.datetime | None = None
    last: dt.datetime | None = None


@dataclass
class Reconciliation:
    findings: list[Finding] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    matched: int = 0

    @property
    def ok(self) -> bool:
        return not any(f.error for f in self.findings)


def _role(v: Verdict, first: dict[str, Any]) -> str:
    if v.role:
        return v.role
    if first.get("kind") in ("query", "query_end"):
        return "coordinator"
    return "connector"


def _name(v: Verdict, files: list[Path]) -> str:
    if v.name:
        return v.name
    stem = files[0].name.split(".")[0]
    return stem.removesuffix("-audit")


def _load(
    paths: Iterable[Path], authority: Authority | None, rec: Reconciliation
) -> tuple[dict[str, _Connector], dict[str, _Coordinator]]:
    connectors: dict[str, _Connector] = {}
    coordinators: dict[str, _Coordinator] = {}
    for files in chains(paths):
        v = verify_chain(files, authority)
        where = files[0].name + (f" (+{len(files) - 1} rotated)" if len(files) > 1 else "")
        if not v.ok:
            at = v.broken_file.name if v.broken_file else where
            rec.findings.append(Finding("broken", f"{at} line {v.broken_line} {v.reason}"))
        elif not v.signed:
            rec.findings.append(
                Finding("unsigned", f"{where}: not signed (hash chain only)", error=False)
            )
        good = v.lines - (0 if v.ok else 1)
        recs = [r for _, r in zip(range(good), records(files), strict=False)]
        first = recs[0][2] if recs else {}
        role, name = _role(v, first), _name(v, files)
        if role == "coordinator":  # its identity as connectors record it ("" over plaintext)
            name = next((str(r["coordinator"]) for _, _, r in recs if "coordinator" in r), name)
        if role == "connector":
            c = connectors.setdefault(name, _Connector(name, v))
            for path, n, r in recs:
                if "query_id" in r and "kind" not in r and r.get("rpc") != "GetCatalog":
                    c.lines[int(r["seq"])] = (path, n, r)
        else:
            k = coordinators.setdefault(name, _Coordinator(name, v))
            for _, _, r in recs:
                t, end = line_time(r.get("time")), line_time(r.get("ended", r.get("time")))
                if t is not None:
                    k.first = min(k.first or t, t)
                if end is not None:
                    k.last = max(k.last or end, end)
                if r.get("kind") in ("query", "query_end"):
                    k.calls += [(r, call) for call in r.get("fragments", [])]
        last = v.last_signed
        rec.summary.append(
            f"{role} {name}: {where}, {v.lines} lines"
            + (f", seq {v.first_seq}-{v.last_seq}" if v.last_seq else "")
            + (f", last signed seq {last.seq} at {last.time}" if last else "")
        )
    return connectors, coordinators


_FIELDS = (
    ("query_id", "query_id"),
    ("sql_sha256", "sql_sha256"),
    ("outcome", "outcome"),
    ("rows", "rows"),
    ("ipc_bytes", "bytes"),
    ("user", "user"),
    ("coordinator", "coordinator"),
    ("nonce", "nonce"),
)


def _against_line(r: Receipt, c: _Connector, where: str, out: Reconciliation) -> None:
    v = c.verdict
    if r.audit_seq == 0:
        out.findings.append(Finding("no log", f"{where}: agency {c.name} keeps no log", False))
        return
    if r.audit_seq > v.last_seq and not v.ok:
        return  # past the place where the chain breaks, which is reported already
    if r.audit_seq > v.last_seq:
        last = v.last_signed
        ends = f"ends at seq {v.last_seq}" + (f" (last signed at {last.time})" if last else "")
        out.findings.append(
            Finding(
                "truncated",
                f"{where}: the coordinator holds agency {c.name}'s receipt for its line "
                f"seq {r.audit_seq} ({r.outcome}, {r.rows} rows, signed "
                f"{r.time:%Y-%m-%d %H:%M:%S} UTC), but its log {ends}: lines were cut off",
            )
        )
        return
    got = c.lines.get(r.audit_seq)
    if got is None:
        if r.audit_seq < v.first_seq or not v.ok:
            out.findings.append(
                Finding("not covered", f"{where}: {c.name} seq {r.audit_seq} not given", False)
            )
        else:
            out.findings.append(
                Finding("edited", f"{where}: {c.name} seq {r.audit_seq} is not a fragment line")
            )
        return
    path, n, line = got
    if line.get("hash") == r.audit_hash:
        out.matched += 1
        return
    diff = [
        f"{lk} {line.get(lk)!r} (receipt: {getattr(r, rk)!r})"
        for rk, lk in _FIELDS
        if lk in line and line.get(lk) != getattr(r, rk)
    ]
    at = f"{path.name} line {n} (seq {r.audit_seq})"
    if diff:
        out.findings.append(
            Finding("edited", f"{at} differs from the receipt {where}: " + "; ".join(diff))
        )
    else:
        out.findings.append(
            Finding(
                "rewritten",
                f"{at}: its content matches the receipt {where} but its hash does not: "
                "the chain before it was rewritten",
            )
        )


def _principal_problem(line: dict[str, Any], connector: str, certs: dict[str, bytes]) -> str:
    """Why a line's claim that its coordinator vouched for it does not hold ("" if it does)."""
    sig, fp = line.get("principal_sig"), line.get("coordinator_cert")
    if not sig:
        return "it is marked authenticated but keeps no principal signature"
    if fp not in certs:
        return "its coordinator's certificate is not in the log"
    doc = {
        "v": 1,
        "rpc": "Execute",
        "connector": connector,
        "query_id": "" if line.get("query_id") == "-" else line.get("query_id"),
        "sql_sha256": line.get("sql_sha256"),
        "keys_sha256": line.get("keys_sha256", hashlib.sha256().hexdigest()),
        "user": line.get("user"),
        "roles": sorted(set(line.get("roles") or [])),
        "purpose": line.get("purpose", ""),
        "issued_unix_ms": line.get("issued_unix_ms"),
        "nonce": line.get("nonce"),
    }
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    cert = load_cert(certs[str(fp)])
    try:
        alg = algorithm_for(cert.public_key())
    except ConfigError:
        return "its coordinator's key type cannot sign"
    if not verify_signature(cert, alg, payload, base64.b64decode(str(sig))):
        return (
            "the coordinator's principal signature does not verify: user, roles, purpose "
            "or SQL in the line were changed"
        )
    return ""


def reconcile(paths: Iterable[Path], authority: Authority | None = None) -> Reconciliation:
    out = Reconciliation()
    connectors, coordinators = _load(paths, authority, out)
    certs: dict[str, bytes] = {}
    for v in [x.verdict for x in connectors.values()] + [x.verdict for x in coordinators.values()]:
        certs.update(v.peers)
    nonces: dict[str, list[str]] = {}
    missing_agencies: set[str] = set()
    for k in coordinators.values():
        for query, call in k.calls:
            nonces.setdefault(k.name, []).append(str(call.get("nonce")))
            doc = call.get("receipt")
            if not isinstance(doc, dict):
                continue
            where = f"(query {query.get('query_id')} of coordinator {k.name or PLAINTEXT})"
            try:
                r = from_log(doc, certs)
            except (ValueError, KeyError):
                out.findings.append(Finding("bad receipt", f"{where}: a receipt cannot be read"))
                continue
            if r.signature:
                why, _ = signature_problem(r, authority)
                if why:
                    kind = "expired key" if "valid" in why or "expired" in why else "bad receipt"
                    out.findings.append(Finding(kind, f"{where}, agency {r.connector}: {why}"))
            if call.get("receipt_problem"):
                out.findings.append(
                    Finding(
                        "rejected",
                        f"{where}: the coordinator rejected agency {call.get('agency')}'s "
                        f"receipt: {call['receipt_problem']}",
                        error=False,
                    )
                )
                continue
            c = connectors.get(r.connector)
            if c is None:
                missing_agencies.add(r.connector)
                continue
            _against_line(r, c, where, out)
    if missing_agencies:
        names = ", ".join(sorted(missing_agencies))
        out.summary.append(f"receipts not checked against a log (none given): {names}")
    seen = {k: set(v) for k, v in nonces.items()}
    for c in connectors.values():
        for seq, (path, n, line) in sorted(c.lines.items()):
            who = str(line.get("coordinator", ""))
            if line.get("authenticated"):
                why = _principal_problem(line, c.name, certs)
                if why:
                    out.findings.append(
                        Finding("forged principal", f"{path.name} line {n} (seq {seq}): {why}")
                    )
            asker = coordinators.get("" if who == PLAINTEXT else who)
            t = line_time(line.get("time"))
            if asker is None or t is None or asker.first is None or asker.last is None:
                continue
            if not (asker.first - SLACK <= t <= asker.last) or not line.get("nonce"):
                continue
            if line["nonce"] not in seen.get(asker.name, set()):
                out.findings.append(
                    Finding(
                        "dropped",
                        f"agency {c.name} served query {line.get('query_id')} for user "
                        f"{line.get('user')} at {line.get('time')} ({path.name} line {n}, seq "
                        f"{seq}, {line.get('outcome')}, {line.get('rows', 0)} rows) but "
                        f"coordinator {who}'s log has no such call",
                    )
                )
    return out
