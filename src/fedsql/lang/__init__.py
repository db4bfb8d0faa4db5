"""The fragment language: the SQL a connector accepts, and the coordinator too.

- ``bounds``: limits on the text before any parser runs, and on the tree after;
- ``spec``: the allow-list (node kinds, clauses, functions), versioned;
- ``check``: a tree is in the language, or the construct that is not is named;
- ``bind``: every table reference resolved by scope, or refused.

``docs/fragment-language.md`` is generated from ``spec`` (``python -m fedsql.lang``).
"""

from __future__ import annotations

from fedsql.lang.bind import RESERVED_PREFIX, Binding, bind
from fedsql.lang.bounds import measure, parse, precheck, round_trip
from fedsql.lang.check import check
from fedsql.lang.errors import BadSyntax, BindError, NotInLanguage, Refused, TooComplex
from fedsql.lang.spec import VERSION

DIALECT = "duckdb"  # the SQL dialect fragments are written in (sqlglot's name)

__all__ = [
    "DIALECT",
    "RESERVED_PREFIX",
    "VERSION",
    "BadSyntax",
    "BindError",
    "Binding",
    "NotInLanguage",
    "Refused",
    "TooComplex",
    "bind",
    "check",
    "measure",
    "parse",
    "precheck",
    "round_trip",
]
