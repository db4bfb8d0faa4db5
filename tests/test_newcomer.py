"""A newcomer's first day, end to end through the `fedsql` command (issue 15, items
6, 7, 10, 11, 17, 19): the hash key and its fingerprints, the service certificate,
what a missing --user means, --version and -v, and errors said once and briefly."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedsql.local import LocalConnector, start_connector
from fedsql.service.auth import hash_password
from tests.helpers import start_service


def fedsql(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedsql", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _agency(d: Path, name: str, key: Path | None, extra: str = "") -> Path:
    data = d / f"{name}-data"
    data.mkdir()
    (data / "people.csv").write_text("id,name\n1,ann\n2,bo\n")
    toml = d / f"{name}.toml"
    hk = f'hash_key_file = "{key.name}"\n' if key else ""
    toml.write_text(
        f'[connector]\nname = "{name}"\nlisten = "127.0.0.1:0"\ninsecure = true\n'
        f'audit_log = "{name}-audit.jsonl"\n{hk}'
        f'[backend]\nkind = "files"\npath = "{data.name}"\n{extra}'
    )
    return toml


def _federation(d: Path, agencies: dict[str, str], extra: str = "") -> Path:
    path = d / "federation.toml"
    path.write_text(
        "".join(
            f'[[connector]]\nname = "{n}"\naddress = "{a}"\ninsecure = true\n'
            for n, a in agencies.items()
        )
        + extra
    )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """Agencies 'health' and 'tax', each with a hash key made by `fedsql keys init` —
    but two different ones (the mistake the fingerprint is there to show)."""
    d = tmp_path_factory.mktemp("keys")
    fps = {}
    for name in ("health", "tax"):
        r = fedsql("keys", "init", str(d / f"{name}.key"))
        assert r.returncode == 0, r.stderr
        fps[name] = re.search(r"fingerprint (hk:[0-9a-f]{16})", r.stdout).group(1)  # type: ignore[union-attr]
        assert (d / f"{name}.key").stat().st_mode & 0o777 == 0o600
    nodes = [start_connector(_agency(d, n, d / f"{n}.key")) for n in ("health", "tax")]
    try:
        yield _federation(d, {c.name: c.address for c in nodes}), fps
    finally:
        for c in nodes:
            c.stop()


def test_keys_init_refuses_to_replace_a_key(tmp_path: Path) -> None:
    key = tmp_path / "federation.key"
    assert fedsql("keys", "init", str(key)).returncode == 0
    before = key.read_bytes()
    r = fedsql("keys", "init", str(key))
    assert r.returncode == 1 and "already exists" in r.stderr and "--force" in r.stderr
    assert key.read_bytes() == before
    shown = fedsql("keys", "fingerprint", str(key))
    assert shown.returncode == 0 and re.search(r": hk:[0-9a-f]{16}$", shown.stdout.strip())
    assert before.strip().decode() not in shown.stdout


def test_status_and_catalog_show_fingerprints_and_warn_when_keys_differ(
    two_keys: tuple[Path, dict[str, str]],
) -> None:
    fed, fps = two_keys
    keys = [(fed.parent / f"{n}.key").read_text().strip() for n in fps]
    r = fedsql("status", "-c", str(fed))
    assert r.returncode == 0, r.stderr
    assert fps["health"] in r.stdout and fps["tax"] in r.stdout
    assert "hash with different keys" in r.stderr and "fedsql keys init" in r.stderr
    c = fedsql("catalog", "-c", str(fed))
    assert c.returncode == 0, c.stderr
    assert f"health: backend files, hash key {fps['health']}" in c.stdout
    assert "hash with different keys" in c.stderr
    for out in (r.stdout, r.stderr, c.stdout, c.stderr):
        assert not any(k in out for k in keys)  # the key itself never shows


def test_one_agency_down_short_in_the_table_details_below_said_once(
    two_keys: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    fed, _ = two_keys
    text = (
        fed.read_text()
        + f'[[connector]]\nname = "trade"\naddress = "127.0.0.1:{_free_port()}"\ninsecure = true\n'
    )
    cfg = tmp_path / "federation.toml"
    cfg.write_text(text)
    r = fedsql("status", "-c", str(cfg))
    assert r.returncode == 1
    row = next(line for line in r.stdout.splitlines() if line.startswith("trade"))
    assert "DOWN: not listening" in row and len(row) < 120
    assert "trade: nothing listens at" in r.stderr and "1 of 3 agencies down" in r.stderr
    q = fedsql("query", "-c", str(cfg), "SELECT count(*) FROM trade.people")
    assert q.returncode == 1
    assert q.stderr.count("nothing listens at") == 1, q.stderr  # once: no log line before it


def test_version_and_verbose_after_the_subcommand(tmp_path: Path) -> None:
    r = fedsql("--version")
    assert r.returncode == 0 and re.fullmatch(r"fedsql \d+\.\d+\.\d+\S*", r.stdout.strip())
    key = tmp_path / "k"
    r = fedsql("keys", "init", str(key), "-v")
    assert r.returncode == 0, r.stderr
    r = fedsql("status", "-c", str(tmp_path / "missing.toml"), "-vv")
    assert r.returncode == 1 and "unrecognized arguments" not in r.stderr


def test_certs_show_says_a_missing_file_is_missing(tmp_path: Path) -> None:
    r = fedsql("certs", "show", str(tmp_path / "nope.crt"))
    assert r.returncode == 1 and "nope.crt: no such file" in r.stderr
    assert "not a PEM" not in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "garbage.crt").write_text("hello")
    r = fedsql("certs", "show", str(tmp_path / "garbage.crt"))
    assert r.returncode == 1 and "not a PEM or DER certificate" in r.stderr


def test_service_certificate_role_serves_flight_sql(
    two_keys: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    fed, _ = two_keys
    ca = tmp_path / "pki"
    assert fedsql("certs", "init", str(ca)).returncode == 0
    r = fedsql(
        "certs", "issue", "--ca", str(ca), "service", "analytics", "--local", "--out", str(tmp_path)
    )
    assert r.returncode == 0, r.stderr
    assert "[service.tls]" in r.stdout
    shown = fedsql("certs", "show", str(tmp_path / "analytics.crt"))
    assert "service CN=analytics (analytics, localhost, 127.0.0.1)" in shown.stdout
    (tmp_path / "alice.hash").write_text(hash_password("alice-secret-1") + "\n")
    (tmp_path / "alice.pw").write_text("alice-secret-1\n")
    cfg = tmp_path / "federation.toml"
    cfg.write_text(
        fed.read_text()
        + '[user.alice]\nroles = ["analyst"]\npassword_hash_file = "alice.hash"\n'
        + '[service.tls]\ncert = "analytics.crt"\nkey = "analytics.key"\n'
    )
    svc = start_service(cfg, ca=ca / "ca.crt")
    try:
        q = fedsql(
            "queries", "--url", svc.url, "--ca", str(ca / "ca.crt"), "--user", "alice",
            "--password-file", str(tmp_path / "alice.pw"),
        )  # fmt: skip
        assert q.returncode == 0, q.stderr
    finally:
        svc.stop()


def test_without_user_the_analyst_is_anonymous_with_nothing_granted(tmp_path: Path) -> None:
    grants = '[[grant]]\ntable = "people"\nroles = ["analyst"]\n'
    node: LocalConnector = start_connector(_agency(tmp_path, "health", None, grants))
    try:
        cfg = _federation(tmp_path, {"health": node.address}, '[user.alice]\nroles = ["analyst"]\n')
        ok = fedsql("query", "-c", str(cfg), "--user", "alice", "SELECT count(*) AS n FROM people")
        assert ok.returncode == 0 and "2" in ok.stdout, ok.stderr
        r = fedsql("query", "-c", str(cfg), "SELECT count(*) FROM health.people")
        assert r.returncode == 1 and "people" in r.stderr  # no grant opens it to anonymous
        c = fedsql("catalog", "-c", str(cfg))
        assert "user anonymous" in c.stdout and "health.people" not in c.stdout
        named = tmp_path / "named.toml"
        named.write_text(cfg.read_text() + '[user.anonymous]\nroles = ["analyst"]\n')
        r = fedsql("query", "-c", str(named), "SELECT 1")
        assert r.returncode == 1 and "give --user NAME" in r.stderr
    finally:
        node.stop()
