"""The audit log both sides keep: signed, hash-chained JSON lines, durable, rotating.

One line per event, UTF-8 canonical JSON (keys sorted, separators ``,`` ``:``).
Each line carries

- ``v``: 2 (lines without it are the unsigned v1 format, still verified);
- ``seq``: its position in the chain, 1-based, continuing across rotated files;
- ``prev``: the ``hash`` of the line before (the first line of a chain has
  ``GENESIS``; a v1 line is linked by the SHA-256 of its bytes);
- ``hash``: hex SHA-256 of the line's canonical JSON without ``hash`` and
  ``sig`` — so it commits to the line and, through ``prev``, to every line
  before it. Receipts name a line by this hash;
- ``signer`` and ``sig`` when the node has a key: the SHA-256 of the signing
  certificate (DER) and the base64 signature over ``LINE_CONTEXT + hash``
  (algorithm: see :mod:`fedsql.audit.signing`, from the certificate's key).
  The first line a signer writes in a file, and the first after another
  signer's, also carries that certificate (``cert``, PEM) and the algorithm
  (``alg``), so every file can be checked on its own.

Why every line is signed, rather than a signed checkpoint every N lines and M
seconds: each line is already made durable on its own (``fsync`` before the
fragment's result leaves; ~200 µs on this VM's disk, milliseconds on many
others), and an ECDSA P-256 or Ed25519 signature costs ~35 µs of it — a sixth
of the cheapest fsync, measured per fragment in the README. In exchange there
is no unsigned tail: with checkpoints, whoever can write the file could rewrite
the lines after the last checkpoint undetected, and a single line could only be
proven together with every line up to the next checkpoint; signed, any one line
(or one receipt) is evidence by itself. RSA keys cost more (0.9 ms at 3072
bits, 1.5 ms at 4096) and serialize the log to ~700 lines/s: still far above a
node's fragment rate. What signatures cannot show is the end of the log being
cut off; for that the connector writes a signed ``checkpoint`` line whenever
it has been quiet for ``audit_checkpoint_seconds`` (a heartbeat: a log whose
last line is older than that, with no ``stop`` line, was cut or its node
died), and each coordinator keeps the connector's receipts, which name lines
by seq and hash.

Rotation (``rotate_bytes``, ``rotate_daily``) renames the file to
``NAME.YYYYMMDDTHHMMSSZ.SUFFIX`` and starts a new one at the configured path
whose first line (``kind = "rotate"``) chains from the old head and names the
old file, its head and its seq. Writers take an exclusive ``flock`` around each
append, so several processes (coordinators run from the CLI) can share a log.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsql.audit.signing import NodeKey, SigningKey, current

GENESIS = hashlib.sha256(b"fedsql audit log v1").hexdigest()
VERSION = 2
LINE_CONTEXT = b"fedsql audit line v2\n"
_CHAIN_KEYS = ("v", "prev", "seq", "hash", "signer", "sig", "cert", "alg")


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def body_hash(rec: dict[str, Any]) -> str:
    """The ``hash`` a v2 line must carry."""
    return digest(canonical({k: v for k, v in rec.items() if k not in ("hash", "sig")}))


def link_of(rec: dict[str, Any], line: str) -> str:
    """What the next line's ``prev`` must be."""
    return str(rec["hash"]) if rec.get("v", 1) >= 2 else digest(line)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def seal(
    record: dict[str, Any], prev: str, seq: int, key: NodeKey | None = None, with_cert: bool = False
) -> str:
    """The line (without newline) for ``record`` after a line linking to ``prev``;
    signed with ``key`` when given (``with_cert``: the line carries its certificate)."""
    return seal_line(record, prev, seq, key, with_cert)[0]


def seal_line(
    record: dict[str, Any], prev: str, seq: int, key: NodeKey | None = None, with_cert: bool = False
) -> tuple[str, str]:
    """(the line, its hash): see :func:`seal`."""
    body = {k: v for k, v in record.items() if k not in _CHAIN_KEYS}
    body.update(v=VERSION, prev=prev, seq=seq)
    if key is not None:
        body["signer"] = key.fingerprint
        if with_cert:
            body.update(cert=key.cert_pem, alg=key.alg)
    h = body_hash(body)
    body["hash"] = h
    if key is not None:
        body["sig"] = base64.b64encode(key.sign(LINE_CONTEXT + h.encode())).decode()
    return canonical(body), h


@dataclass(frozen=True, slots=True)
class Sealed:
    """Where a record went: its seq and hash (what receipts name)."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Peer:
    """The other side's certificate, written once per file before lines that name it."""

    role: str  # "coordinator" (in a connector's log) or "connector"
    name: str
    fingerprint: str
    pem: str


@dataclass(frozen=True, slots=True)
class Rotation:
    rotate_bytes: int | None = None  # start a new file before this size is passed
    daily: bool = False  # start a new file on the first write of each UTC day


def _parse(line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def read_tail(path: Path) -> tuple[str, int, str]:
    """(what the next line's prev is, the last seq, the last line's signer) of a log."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return GENESIS, 0, ""
    if size == 0:
        return GENESIS, 0, ""
    with path.open("rb") as f:
        back = min(size, 1 << 16)
        while True:
            f.seek(size - back)
            lines = f.read(back).rstrip(b"\n").split(b"\n")
            if len(lines) > 2 or back == size:
                break
            back = min(size, back * 4)
    last = lines[-1].decode("utf-8", "replace")
    rec = _parse(last)
    if rec is None or "hash" not in rec:
        # A damaged last line: chain from its bytes (verify reports it), seq after the one before.
        before = _parse(lines[-2].decode("utf-8", "replace")) if len(lines) > 1 else None
        seq = int(before.get("seq", 0)) + 1 if before else 0
        return digest(last), seq, ""
    return link_of(rec, last), int(rec.get("seq", 0)), str(rec.get("signer", ""))


def _first_day(path: Path) -> str:
    try:
        with path.open("rb") as f:
            rec = _parse(f.readline().decode("utf-8", "replace"))
    except FileNotFoundError:
        return ""
    return str(rec.get("time", ""))[:10] if rec else ""


def archive_name(path: Path, when: dt.datetime) -> Path:
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    suffix = path.suffix or ".jsonl"
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    out = path.with_name(f"{stem}.{stamp}{suffix}")
    n = 1
    while out.exists():
        out = path.with_name(f"{stem}.{stamp}-{n}{suffix}")
        n += 1
    return out


class ChainWriter:
    """Appends records to one log: chained, signed with ``key`` (if any), fsync'ed
    before ``write`` returns; thread-safe, and safe between processes (flock)."""

    def __init__(
        self,
        path: Path,
        key: SigningKey | None = None,
        rotation: Rotation = Rotation(),
        head: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self.rotation = rotation
        self.head = head or {}  # fields of every rotate line (role, name)
        self._lock = threading.Lock()
        self._peers: set[str] = set()
        self._prev, self._seq, self._signer = GENESIS, 0, ""
        self._resume = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        st = os.fstat(self._fd)
        self._ino = st.st_ino
        self._size = -1  # unknown: read the tail on the next write
        self._peers = set()
        if st.st_size and not _ends_with_newline(self.path):
            # A line cut short by a crash: end it, so that it stays one (broken) line
            # that verify reports, instead of gluing the next record onto it.
            os.write(self._fd, b"\n")
        self._day = _first_day(self.path)

    def _lock_file(self) -> None:
        """Take the flock on the file now at ``path`` (another process may have
        rotated it: follow it by inode)."""
        while True:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                ino = self.path.stat().st_ino
            except FileNotFoundError:
                ino = -1
            if ino == self._ino:
                return
            known = (self._prev, self._seq) if self._size >= 0 else None
            os.close(self._fd)  # releases the lock on the old file
            self._fd = -1  # never closed twice: the number may be another's by then
            self._open()
            if known is not None and os.fstat(self._fd).st_size == 0:
                # The file vanished or was replaced by an empty one: continue the
                # chain from what this writer knows, and say so in the log.
                self._prev, self._seq = known
                self._signer, self._size = "", 0
                self._resume = True

    def _synced(self) -> None:
        """Under the flock: pick up what other processes appended."""
        size = os.fstat(self._fd).st_size
        if size != self._size:
            self._prev, self._seq, self._signer = read_tail(self.path)
            self._size = size

    def _lines(self, records: Iterable[dict[str, Any]]) -> tuple[bytes, Sealed]:
        out: list[str] = []
        sealed = Sealed(0, "")
        key = current(self.key)
        for rec in records:
            first_in_file = self._size == 0 and not out
            with_cert = key is not None and (first_in_file or self._signer != key.fingerprint)
            line, h = seal_line(rec, self._prev, self._seq + 1, key, with_cert)
            out.append(line)
            self._seq += 1
            self._prev = h
            self._signer = key.fingerprint if key else ""
            sealed = Sealed(self._seq, self._prev)
        data = "".join(x + "\n" for x in out).encode("utf-8")
        return data, sealed

    def _append(self, data: bytes) -> None:
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)
        self._size += len(data)

    def write(self, record: dict[str, Any], peers: Iterable[Peer] = ()) -> Sealed:
        """Append ``record`` (after a line for each peer certificate not yet in this
        file); returns its seq and hash once it is on disk."""
        with self._lock:
            if self._fd < 0:
                raise ValueError("the audit log is closed")
            self._lock_file()
            try:
                self._synced()
                self._maybe_rotate()
                fresh = [p for p in peers if p.fingerprint not in self._peers]
                recs = [
                    {
                        "kind": "peer",
                        "time": utc_now(),
                        "role": p.role,
                        "name": p.name,
                        "peer_sha256": p.fingerprint,
                        "peer_cert": p.pem,
                    }
                    for p in fresh
                ]
                if self._resume:
                    recs.insert(0, self._continuation("(missing)"))
                    self._resume = False
                data, sealed = self._lines([*recs, record])
                self._append(data)
                self._peers |= {p.fingerprint for p in fresh}
                if not self._day:
                    self._day = str(record.get("time", utc_now()))[:10]
                return sealed
            finally:
                if self._fd >= 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _maybe_rotate(self) -> None:
        r = self.rotation
        if self._size <= 0:
            return
        now = dt.datetime.now(dt.UTC)
        due = (r.rotate_bytes is not None and self._size >= r.rotate_bytes) or (
            r.daily and bool(self._day) and self._day != now.date().isoformat()
        )
        if not due:
            return
        old = archive_name(self.path, now)
        os.rename(self.path, old)  # others follow by inode once we release the lock
        prev, seq = self._prev, self._seq
        old_fd = self._fd
        self._open()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.close(old_fd)  # releases the old file's lock
        self._prev, self._seq, self._signer, self._size = prev, seq, "", 0
        data, _ = self._lines([self._continuation(old.name)])
        self._append(data)
        self._day = now.date().isoformat()

    def _continuation(self, prev_file: str) -> dict[str, Any]:
        """The first line of a file that continues the chain of ``prev_file``."""
        return {
            **self.head,
            "kind": "rotate",
            "time": utc_now(),
            "prev_file": prev_file,
            "prev_head": self._prev,
            "prev_seq": self._seq,
        }

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


MAX_AUDITED_SQL = 64 * 1024  # characters of a query's or fragment's SQL kept in its line


def audited_sql(sql: str) -> dict[str, Any]:
    """SQL as an audit line keeps it: all of it up to :data:`MAX_AUDITED_SQL`
    characters, else the start, its length and its SHA-256 (one request must not
    write megabytes to the log)."""
    if len(sql) <= MAX_AUDITED_SQL:
        return {"sql": sql}
    return {
        "sql": sql[:MAX_AUDITED_SQL],
        "sql_truncated": True,
        "sql_chars": len(sql),
        "sql_sha256": hashlib.sha256(sql.encode("utf-8", "surrogatepass")).hexdigest(),
    }


def sql_sha256(sql: str) -> str:
    """Hex SHA-256 of a fragment's UTF-8 SQL (as principals and receipts name it)."""
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()
