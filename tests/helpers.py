"""Helpers shared by test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsql.errors import FedSQLError
from fedsql.local import start_connector


def start_error(toml: Path) -> str:
    """The error a connector gives when it refuses to start; a connector that starts
    anyway is stopped (never left running) and the test fails."""
    try:
        c = start_connector(toml, timeout=30)
    except FedSQLError as e:
        return str(e)
    c.stop()
    pytest.fail(f"the connector for {toml} started, but it should have refused to")
