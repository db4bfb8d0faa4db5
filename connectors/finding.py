"""What ``fedsql connector check`` reports: one finding per check (``check.py``)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "FAIL"
ISSUE = "fedsql certs issue --ca CA_DIR connector {name}"  # how to get a certificate


@dataclass(frozen=True, slots=True)
class Finding:
    status: str  # OK, WARN or FAIL
    check: str  # what was checked: "config", "tls cert", "table visits", ...
    message: str  # what was found; for WARN and FAIL also what to do


Checks = Generator[Finding, None, None]
