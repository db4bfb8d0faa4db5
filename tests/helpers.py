"""Helpers shared by test modules."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
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


@dataclass
class LocalService:
    """A `fedsql serve` process."""

    proc: subprocess.Popen[bytes]
    port: int
    url: str
    config: Path
    ca: Path | None
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def start_service(config: Path, ca: Path | None = None, timeout: float = 60.0) -> LocalService:
    """Start ``fedsql serve -c CONFIG --listen 127.0.0.1:0`` and wait until it listens."""
    log = config.with_suffix(".serve.log")
    with log.open("wb") as errf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedsql", "-v", "serve", "-c", str(config)]
            + ["--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=errf,
            stdin=subprocess.DEVNULL,
        )
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < end and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            buf += chunk
            m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", buf)
            if m:
                port = int(m.group(1))
                scheme = "grpc+tls" if ca else "grpc+tcp"
                return LocalService(proc, port, f"{scheme}://127.0.0.1:{port}", config, ca, log)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    raise AssertionError(f"fedsql serve did not start: {log.read_text(errors='replace')[-2000:]}")
