"""``fedsql audit verify``: check a log's chain, signatures and certificates.

A log is one chain of lines over one or more files (rotation). Given files or
directories, :func:`chains` puts them in chain order; :func:`verify_chain`
then checks every line: it parses, links to the line before (``prev``, ``seq``,
across files through the ``rotate`` line), matches its own ``hash``, and, when
signed, verifies with the certificate the log carries for its signer, that
certificate having been valid at the line's time (and issued by the
federation CA when one is given). The verdict names the first bad line and
the last signed line (seq, time, hash): lines cut off after it leave no trace
in the file itself, but the connector's quiet-time checkpoints bound when it
happened, and the coordinators' receipts name the lines they were given.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fedsql.audit.chain import (
    GENESIS,
    LINE_CONTEXT,
    body_hash,
    canonical,
    digest,
    link_of,
)
from fedsql.audit.files import (
    LOG_SUFFIXES,
    chains,
    line_time,
    log_files,
    parse_line,
    read_lines,
)
from fedsql.audit.signing import (
    Authority,
    common_name,
    fingerprint,
    load_cert,
    valid_at,
    verify_signature,
)

_DER = Encoding.DER


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed line: the chain up to ``seq`` ends at ``hash``, signed at ``time``."""

    seq: int
    time: str
    hash: str
    file: str


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    lines: int  # lines checked, up to and including the first broken one
    head: str  # hash of the last good line (GENESIS for an empty log)
    broken_line: int | None = None  # line number in broken_file
    reason: str = ""
    outcomes: tuple[tuple[str, int], ...] = ()  # (outcome, count) over intact lines
    files: tuple[Path, ...] = ()
    broken_file: Path | None = None
    role: str = ""  # "connector" or "coordinator" (from its start/rotate lines)
    name: str = ""  # the node's name
    signers: tuple[str, ...] = ()  # common names of the certificates that signed
    signed_lines: int = 0
    unsigned_lines: int = 0
    last_signed: Checkpoint | None = None
    first_seq: int = 0
    last_seq: int = 0
    last_time: str = ""
    stopped: bool = False  # the last line is a clean shutdown's "stop"
    checkpoint_seconds: float | None = None  # the node's quiet-time checkpoint interval
    continues: str = ""  # the first file continues this file, which was not given
    warnings: tuple[str, ...] = ()
    ca_checked: bool = False
    peers: dict[str, bytes] = field(default_factory=dict)  # peer and signer certs (DER) by SHA-256

    @property
    def signed(self) -> bool:
        return self.signed_lines > 0 and self.unsigned_lines == 0


class _State:
    def __init__(self, authority: Authority | None) -> None:
        self.authority = authority
        self.prev: str | None = None
        self.seq = 0
        self.n = 0
        self.counts: dict[str, int] = {}
        self.certs: dict[str, x509.Certificate] = {}
        self.algs: dict[str, str] = {}
        self.peers: dict[str, bytes] = {}
        self.signers: dict[str, str] = {}
        self.signed = self.unsigned = 0
        self.signed_since = 0  # line count at which the log became signed (0: not yet)
        self.last_signed: Checkpoint | None = None
        self.role = self.name = self.continues = self.last_time = ""
        self.first_seq = 0
        self.stopped = False
        self.checkpoint: float | None = None
        self.warnings: list[str] = []
        self.ca_ok: dict[tuple[str, str], str] = {}


def _link(st: _State, rec: dict[str, Any], n: int, index: int, files: list[Path]) -> str:
    """Why ``rec`` does not continue the chain ("" when it does)."""
    kind = rec.get("kind")
    if st.prev is None:
        if rec["prev"] == GENESIS and rec["seq"] == 1:
            return ""
        if kind == "rotate" and rec["prev"] == rec.get("prev_head"):
            if rec["seq"] != int(rec.get("prev_seq", -1)) + 1:
                return "its seq does not follow the previous file's"
            st.continues = str(rec.get("prev_file", "?"))
            return ""
        return "does not start the chain: lines were removed from the start"
    if n == 1 and index > 0:
        what = f"does not continue {files[index - 1].name}"
        if kind != "rotate":
            return f"{what}: it is not a rotation's first line"
        if rec["prev"] != st.prev or rec.get("prev_head") != st.prev:
            return f"{what}, whose last line is not the head it names: that file was cut or changed"
        if rec.get("prev_seq") != st.seq:
            return f"{what}: it names seq {rec.get('prev_seq')}, that file ends at {st.seq}"
        if rec.get("prev_file") != files[index - 1].name:
            st.warnings.append(
                f"{files[index].name} names its predecessor {rec.get('prev_file')!r}; "
                f"it continues {files[index - 1].name} (renamed?)"
            )
    if rec["prev"] != st.prev:
        return (
            f"does not follow line {n - 1}: a line before it was edited, deleted, inserted or moved"
            if n > 1
            else "does not follow the previous file's last line"
        )
    if rec["seq"] != st.seq + 1:
        return f"is record #{rec['seq']}, expected #{st.seq + 1}: lines were deleted or moved"
    return ""


def _signature(st: _State, rec: dict[str, Any], n: int, path: Path) -> str:
    """Check the line's certificate and signature; why not ("" when good)."""
    if "cert" in rec:
        try:
            cert = load_cert(str(rec["cert"]))
        except ValueError:
            return "carries a certificate that cannot be read"
        fp = fingerprint(cert)
        if rec.get("signer") != fp:
            return "carries a certificate that is not its signer's"
        st.certs[fp] = cert
        st.algs[fp] = str(rec.get("alg", ""))
        st.peers[fp] = cert.public_bytes(_DER)
    signer = rec.get("signer")
    if signer is None and "sig" not in rec:
        if st.authority is not None:
            return "is not signed (the log must be signed by a node certificate of the federation)"
        if st.signed_since and rec.get("kind") != "start":
            return (
                f"is not signed, though the log is signed since line {st.signed_since}: "
                "a line written without the node's key (inserted or rewritten)"
            )
        if st.signed_since:
            st.warnings.append(
                f"from line {n} of {path.name} the log is unsigned: the node restarted keyless"
            )
            st.signed_since = 0
        st.unsigned += 1
        return ""
    if rec.get("v", 1) < 2 or not isinstance(signer, str) or "sig" not in rec:
        return "has a malformed signature"
    signing = st.certs.get(signer)
    if signing is None:
        return "is signed by a certificate the log does not carry"
    cert = signing
    try:
        sig = base64.b64decode(str(rec["sig"]), validate=True)
    except ValueError:
        return "has a malformed signature"
    if not verify_signature(cert, st.algs[signer], LINE_CONTEXT + str(rec["hash"]).encode(), sig):
        return (
            f"its signature does not verify with certificate '{common_name(cert)}': "
            "the line was changed, or signed with another key"
        )
    when = line_time(rec.get("time"))
    if when is None:
        return "is signed but has no valid time"
    why = valid_at(cert, when)
    if not why and st.authority is not None:
        why = st.authority.problem(cert, when)
    if why:
        return f"was signed at {when:%Y-%m-%d %H:%M:%S} UTC, {why}"
    st.signers.setdefault(signer, common_name(cert))
    st.signed += 1
    st.signed_since = st.signed_since or n
    st.last_signed = Checkpoint(
        int(rec["seq"]), str(rec.get("time", "")), str(rec["hash"]), path.name
    )
    return ""


def _note(st: _State, rec: dict[str, Any]) -> None:
    kind = rec.get("kind")
    if kind in ("start", "rotate"):
        st.role = str(rec.get("role", st.role))
        st.name = str(rec.get("name", st.name))
        if kind == "start" and rec.get("checkpoint_seconds"):
            st.checkpoint = float(rec["checkpoint_seconds"])
    if kind == "peer" and isinstance(rec.get("peer_cert"), str):
        try:
            cert = load_cert(rec["peer_cert"])
            if fingerprint(cert) == rec.get("peer_sha256"):
                st.peers[fingerprint(cert)] = cert.public_bytes(_DER)
        except ValueError:
            pass
    if kind == "query":
        st.role = st.role or "coordinator"
    st.stopped = kind == "stop"
    if "outcome" in rec and kind in (None, "query", "query_end") and rec["outcome"] != "streaming":
        out = str(rec["outcome"])
        st.counts[out] = st.counts.get(out, 0) + 1
    st.last_time = str(rec.get("time", st.last_time))


def verify_chain(files: list[Path], authority: Authority | None = None) -> Verdict:
    """Check one chain (files in order); the verdict names the first bad line."""
    st = _State(authority)

    def verdict(path: Path | None = None, n: int | None = None, why: str = "") -> Verdict:
        return Verdict(
            ok=not why,
            lines=st.n,
            head=st.prev or GENESIS,
            broken_line=n,
            reason=why,
            outcomes=tuple(sorted(st.counts.items())),
            files=tuple(files),
            broken_file=path,
            role=st.role,
            name=st.name or next(iter(st.signers.values()), ""),
            signers=tuple(dict.fromkeys(st.signers.values())),
            signed_lines=st.signed,
            unsigned_lines=st.unsigned,
            last_signed=st.last_signed,
            first_seq=st.first_seq,
            last_seq=st.seq,
            last_time=st.last_time,
            stopped=st.stopped,
            checkpoint_seconds=st.checkpoint,
            continues=st.continues,
            warnings=tuple(st.warnings),
            ca_checked=authority is not None,
            peers=dict(st.peers),
        )

    for index, path in enumerate(files):
        for n, line in read_lines(path):
            st.n += 1
            rec = parse_line(line)
            if rec is None:
                return verdict(path, n, "is not a JSON line (edited or truncated)")
            if not {"prev", "seq", "hash"} <= rec.keys() or not isinstance(rec["seq"], int):
                return verdict(path, n, "is not an audit record (no prev/seq/hash)")
            why = _link(st, rec, n, index, files)
            if why:
                return verdict(path, n, why)
            if rec.get("v", 1) >= 2:
                intact = body_hash(rec) == rec["hash"]
            else:  # v1: the hash covers everything but itself
                body = {k: v for k, v in rec.items() if k != "hash"}
                intact = digest(canonical(body)) == rec["hash"]
            if not intact or canonical(rec) != line:
                return verdict(path, n, "its content does not match its hash: the line was edited")
            why = _signature(st, rec, n, path)
            if why:
                return verdict(path, n, why)
            st.first_seq = st.first_seq or int(rec["seq"])
            st.prev, st.seq = link_of(rec, line), int(rec["seq"])
            _note(st, rec)
    return verdict()


def records(files: list[Path]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Every parsable line of a chain, in order (for reconcile and report)."""
    for path in files:
        for n, line in read_lines(path):
            rec = parse_line(line)
            if rec is not None:
                yield path, n, rec


def verify(path: Path, authority: Authority | None = None) -> Verdict:
    """One file as one chain."""
    return verify_chain([path], authority)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def describe(v: Verdict, now: dt.datetime | None = None) -> list[str]:
    """What ``fedsql audit verify`` says about one chain (the CLI prints it)."""
    now = now or dt.datetime.now(dt.UTC)
    shown = str(v.files[0]) + (f" (+{len(v.files) - 1} later files)" if len(v.files) > 1 else "")
    counts = ", ".join(f"{n} {o}" for o, n in v.outcomes) or "no records"
    last = v.last_signed
    checkpoint = (
        f"last signed checkpoint: seq {last.seq} at {last.time}, head {last.hash} ({last.file})"
        if last
        else "no signed line"
    )
    if not v.ok:
        at = v.broken_file if v.broken_file is not None and len(v.files) > 1 else shown
        out = [f"{at}: chain broken at line {v.broken_line}: line {v.broken_line} {v.reason}"]
        before = (v.broken_line or 1) - 1
        out.append(f"  lines 1-{before} are intact ({counts})" if before else "  no line before it")
        out.append(f"  {checkpoint} (before the break)")
        return out + [f"  warning: {w}" for w in v.warnings]
    who = ", ".join(f"'{s}'" for s in v.signers)
    out = [f"{shown}: intact, {v.lines} lines ({counts}); head {v.head}"]
    if v.signed:
        ca = (
            "; its certificate was issued by the federation CA and valid at each line's time"
            if v.ca_checked
            else "; certificates valid at each line's time (give --ca to check the issuer)"
        )
        out.append(f"  signed: every line, by {who}{ca}")
    elif v.signed_lines:
        out.append(f"  partly signed: {v.signed_lines} lines by {who}, {v.unsigned_lines} unsigned")
    else:
        out.append(
            "  UNSIGNED: a hash chain only (its node has no key: plaintext); whoever can "
            "write the file can rewrite it undetected"
        )
    out.append(f"  {checkpoint}")
    if v.continues:
        out.append(f"  continues {v.continues}, not given: give it too to check the link")
    end = line_time(v.last_time)
    if v.stopped:
        out.append(f"  ends with its node's clean stop at {v.last_time}")
    elif end is not None and v.checkpoint_seconds:
        age = (now - end).total_seconds()
        if age > v.checkpoint_seconds * 1.5 + 5:
            out.append(
                f"  ends {_ago(age)} ago without a stop line, though its node writes a checkpoint "
                f"every {v.checkpoint_seconds:g} s when quiet: lines after seq {v.last_seq} were "
                "cut off, or the node died; coordinators' receipts show which "
                "(`fedsql audit reconcile`)"
            )
        else:
            out.append(f"  last line {_ago(max(0.0, age))} ago: its node is running")
    return out + [f"  warning: {w}" for w in v.warnings]


__all__ = [  # chains and log_files live in files.py; importers find them here too
    "LOG_SUFFIXES",
    "Checkpoint",
    "Verdict",
    "chains",
    "describe",
    "log_files",
    "records",
    "verify",
    "verify_chain",
]
