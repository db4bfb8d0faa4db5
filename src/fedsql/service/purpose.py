"""The analyst's purpose as it reaches ``fedsql serve``: the ``x-fedsql-purpose`` header.

A client sends it with every call (the shell's ``.purpose``, ``fedsql shell
--purpose``, ADBC's ``adbc.flight.sql.rpc.call_header.x-fedsql-purpose`` option):
UTF-8, percent-encoded where a byte is not printable ASCII (``%`` itself
included), so a plain ASCII purpose travels as it is. The service runs the
call's queries with it, and every fragment carries it to the agencies' audit
logs, where ``require_purpose = true`` asks for one.

>>> read(["audit 2025/03: sample 5%25"])
'audit 2025/03: sample 5%'
>>> read(["Gesundheitsstatistik f%C3%BCr %C3%84mter"])
'Gesundheitsstatistik für Ämter'
>>> read([])
''
>>> read(["a%0Ab"])
Traceback (most recent call last):
...
ValueError: the x-fedsql-purpose header holds a control character; send printable text
"""

from __future__ import annotations

import contextvars
from urllib.parse import unquote

PURPOSE_HEADER = "x-fedsql-purpose"
MAX_PURPOSE = 500  # characters, decoded (the agencies' audit lines keep it whole)

# The purpose of the call this thread is handling (set for every call by the service).
current: contextvars.ContextVar[str] = contextvars.ContextVar("fedsql_purpose", default="")


def read(values: list[str] | list[bytes]) -> str:
    """The purpose in a call's ``x-fedsql-purpose`` header values ('' when absent)."""
    if not values:
        return ""
    if len(values) > 1:
        raise ValueError(f"send one {PURPOSE_HEADER} header, not {len(values)}")
    raw = values[0]
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    if len(raw) > 3 * MAX_PURPOSE:
        raise ValueError(f"the purpose is longer than {MAX_PURPOSE} characters; say it shorter")
    try:
        text = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"the {PURPOSE_HEADER} header is not UTF-8 once percent-decoded") from None
    if len(text) > MAX_PURPOSE:
        raise ValueError(f"the purpose is longer than {MAX_PURPOSE} characters; say it shorter")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        raise ValueError(
            f"the {PURPOSE_HEADER} header holds a control character; send printable text"
        )
    return text.strip()
