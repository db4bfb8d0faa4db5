"""The connector's audit log: one signed, hash-chained JSON line per call.

Every Execute call, executed or refused, and every refused GetCatalog leaves
exactly one line, appended, flushed and fsync'ed before the fragment's last
result message (or its error) leaves the connector. The format, the chain and
the signatures are those of :mod:`fedsql.audit.chain`: each line names the
``hash`` of the line before, and a connector with ``[connector.tls]`` signs
every line with its node key; ``fedsql audit verify LOG [--ca ca.crt]``
names the first line that was edited, deleted, inserted, moved or signed by a
key not valid at its time.

Besides the fragment lines the log has a ``start`` line when the node starts
(the certificate that signs, when it is the first in the file or a new one),
a ``checkpoint`` line whenever it has been quiet for
``audit_checkpoint_seconds``, a ``stop`` line at a clean shutdown, a ``peer``
line with each calling coordinator's certificate the first time it appears in
a file (so the coordinators' signed principals kept in fragment lines can be
checked from the log alone), and, after rotation, a ``rotate`` line that
chains the new file to the old. A log whose last line is older than the
checkpoint interval and is not a ``stop`` was cut, or its node died.

A restarted connector continues the chain from the last line in the file.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlglot import exp

from fedsql.audit.chain import (
    GENESIS,
    MAX_AUDITED_SQL,
    ChainWriter,
    Peer,
    Rotation,
    Sealed,
    audited_sql,
    seal,
    utc_now,
)
from fedsql.audit.signing import SigningKey
from fedsql.audit.verify import Verdict, verify
from fedsql.connectors.guard import EXPOSED_META
from fedsql.version import __version__

__all__ = [
    "GENESIS",
    "MAX_AUDITED_SQL",
    "AuditLog",
    "Peer",
    "Rotation",
    "Verdict",
    "audited_sql",
    "public_message",
    "seal",
    "touched",
    "verify",
]
DEFAULT_CHECKPOINT_SECONDS = 300.0


class AuditLog:
    """The node's log (``path`` None: the node keeps none, and writes are no-ops)."""

    def __init__(
        self,
        path: Path | None,
        key: SigningKey | None = None,
        rotation: Rotation | None = None,
        name: str = "",
        checkpoint_seconds: float | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self.name = name
        self.checkpoint_seconds = checkpoint_seconds
        head = {"role": "connector", "name": name}
        self._w = ChainWriter(path, key, rotation or Rotation(), head) if path is not None else None
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._started = False

    def write(self, record: dict[str, Any], peers: tuple[Peer, ...] = ()) -> Sealed:
        """Append one line; returns its seq and hash (0 and "" without a log)."""
        if self._w is None:
            return Sealed(0, "")
        sealed = self._w.write(record, peers)
        self._last = time.monotonic()
        return sealed

    def start(self, **fields: Any) -> None:
        """The node's ``start`` line, then a checkpoint whenever it is quiet."""
        if self._w is None:
            return
        self.write(
            {
                "kind": "start",
                "time": utc_now(),
                "role": "connector",
                "name": self.name,
                "version": __version__,
                "signed": self.key is not None,
                "checkpoint_seconds": self.checkpoint_seconds,
                **fields,
            }
        )
        self._started = True
        if self.checkpoint_seconds:
            self._ticker = threading.Thread(target=self._tick, name="audit-checkpoint", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        assert self.checkpoint_seconds
        every = self.checkpoint_seconds
        while not self._stop.wait(max(0.05, self._last + every - time.monotonic())):
            if time.monotonic() - self._last >= every:
                try:
                    self.write({"kind": "checkpoint", "time": utc_now()})
                except (OSError, ValueError):
                    return  # the log is closed or the disk failed; fragments will say so

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        if self._w is None:
            return
        if self._started:
            self.write({"kind": "stop", "time": utc_now()})
            self._started = False
        self._w.close()


_DQUOTED = re.compile(r'"([^"]*)"')
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[\w.@+~-]+[/\\])+[\w.@+~-]*")


def public_message(msg: str, known: frozenset[str] = frozenset()) -> str:
    """An error message fit to leave the agency: string literals (they may be data
    values) and file paths are blanked; double-quoted names stay only if they are
    ``known`` table or column names (lower case).

    Messages quote values without escaping them, so a value may hold the quote
    itself (``'O'Brien'``): everything from the first single quote to the last is
    blanked as one, and from the first double-quoted text that is not a known name
    to the last double quote.

    >>> public_message("Could not convert string 'NID42' to INT32 in /srv/a/b.duckdb")
    "Could not convert string '…' to INT32 in <path>"
    >>> public_message("Could not convert string 'O'Brien, 1' to INT32")
    "Could not convert string '…' to INT32"
    >>> public_message('invalid input syntax for type integer: "a"b"c" in "people"', {"people"})
    'invalid input syntax for type integer: "…"'
    """
    first, last = msg.find("'"), msg.rfind("'")
    if first >= 0:
        msg = msg[:first] + "'…'" + (msg[last + 1 :] if last > first else "")
    for m in _DQUOTED.finditer(msg):
        if m.group(1).lower() not in known:
            end = msg.rfind('"')
            msg = msg[: m.start()] + '"…"' + msg[end + 1 :]
            break
    else:
        if msg.count('"') % 2:  # an unmatched quote: what follows it may be a value
            msg = msg[: msg.rfind('"')] + '"…"'
    return _PATH.sub("<path>", msg)


def touched(tree: exp.Expr, schemas: dict[str, pa.Schema]) -> tuple[list[str], list[str]]:
    """(exposed tables, their columns) a checked fragment reads, for the audit log.

    A column counts when its name is a column of a table the fragment reads
    (``*`` counts them all): an over-approximation, never an omission.
    """
    tables = sorted(
        {str(t.meta[EXPOSED_META]) for t in tree.find_all(exp.Table) if EXPOSED_META in t.meta}
    )
    star = any(not isinstance(s.parent, exp.Count) for s in tree.find_all(exp.Star))
    names = {c.name.lower() for c in tree.find_all(exp.Column)}
    cols = sorted(
        f"{t}.{f.name}" for t in tables for f in schemas[t] if star or f.name.lower() in names
    )
    return tables, cols
