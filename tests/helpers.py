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


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway self-signed TLS certificate for ``host`` (and localhost): (cert, key)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsql test service")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "service.crt", directory / "service.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


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
