"""``fedsql connector check AGENCY.toml``: a dry run of a connector's start, one finding per check.

What ``fedsql connector serve`` would meet, found without serving: the config,
the listen addresses, the certificates (present, the key matching, chained to
the CA, dates, names, usage, revocation), the hash key, the audit log's
directory, and the backend (opened read-only as at start; each exposed table
read; every mask, row filter and grant checked against the real columns), with
the database role's rights for backends that check them at start (PostgreSQL).

Certificates are checked in ``check_tls.py``, the backend in ``check_backend.py``.
Each check is the connector's own start-time code where there is one —
``load_agency``, ``trust.server_credentials``, ``signing.NodeKey`` (the key that
signs the audit log), ``opening.open_backend`` (which runs the role check of
``pgrole.py``), ``policy.load.validate`` — so that what passes here starts
there. Nothing is written: the audit log is opened for appending and closed, a
probe file is created and removed next to it, the ports are bound and released.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

from fedsql.audit.verify import verify_chain
from fedsql.connectors.check_backend import check_backend
from fedsql.connectors.check_tls import check_tls
from fedsql.connectors.config import AgencyConfig, load_agency
from fedsql.connectors.finding import FAIL, OK, WARN, Checks, Finding
from fedsql.errors import ConfigError
from fedsql.hashkey import fingerprint
from fedsql.policy.masks import HASH_KEY_ENV, load_hash_key

__all__ = ["FAIL", "OK", "WARN", "Finding", "check", "line", "summary"]
MIN_FREE_BYTES = 1 << 30  # free disk under the audit log below which we warn


def check(path: str | Path) -> Iterator[Finding]:
    """Every check of the connector configured in ``path``, in order."""
    try:
        cfg = load_agency(path)
    except ConfigError as e:
        yield Finding(FAIL, "config", f"{e}")
        return
    p = cfg.policy
    yield Finding(
        OK,
        "config",
        f"{cfg.source}: valid: connector '{cfg.name}', backend {cfg.backend.kind}, "
        f"{len(p.masks)} mask(s), {len(p.row_filters)} row filter(s), "
        + (
            "no [[grant]] (every exposed table open)"
            if cfg.grants is None
            else f"{len(cfg.grants)} grant(s)"
        ),
    )
    yield from _ports(cfg)
    yield from check_tls(cfg)
    key = yield from _hash_key(cfg)
    yield from _audit(cfg)
    yield from check_backend(cfg, key)


def line(f: Finding) -> str:
    return f"{f.status:<4} {f.check}: {f.message}"


def summary(found: list[Finding]) -> str:
    n = {s: sum(f.status == s for f in found) for s in (OK, WARN, FAIL)}
    verdict = (
        "the connector would not start or not work as configured: fix the FAIL lines"
        if n[FAIL]
        else "ready to serve" + (" (read the warnings)" if n[WARN] else "")
    )
    return f"{len(found)} checks: {n[OK]} ok, {n[WARN]} warnings, {n[FAIL]} failed; {verdict}"


# -- listen addresses --------------------------------------------------------------


def _ports(cfg: AgencyConfig) -> Checks:
    for key, addr in (("listen", cfg.listen), ("metrics_listen", cfg.metrics_listen)):
        if addr is None:
            continue
        what = f"[connector].{key} = {addr}"
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        if int(port) == 0:
            yield Finding(OK, key, f"{what}: a free port is chosen at start (printed then)")
            continue
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, int(port), type=socket.SOCK_STREAM
            )[0]
        except socket.gaierror as e:
            yield Finding(
                FAIL,
                key,
                f"{what}: cannot resolve '{host}' ({e.strerror}); give an "
                "address of this host, e.g. 0.0.0.0 (all) or its LAN address",
            )
            continue
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                s.bind(address)
            except OSError as e:
                yield Finding(*_bind_problem(e, key, what))
                continue
        wide = host in ("0.0.0.0", "::", "")
        note = (
            ": every interface; let only the coordinators' addresses reach it "
            "(docs/operations.md, Ports and firewalls)"
            if wide
            else ""
        )
        yield Finding(OK, key, f"{what}: free{note}")


def _bind_problem(e: OSError, key: str, what: str) -> tuple[str, str, str]:
    if e.errno == errno.EADDRINUSE:
        return (
            WARN,
            key,
            (
                f"{what}: in use: is this connector already running? Stop it before `serve`, "
                "or choose another port"
            ),
        )
    if e.errno == errno.EADDRNOTAVAIL:
        return FAIL, key, f"{what}: not an address of this host; use one of its own (or 0.0.0.0)"
    if e.errno == errno.EACCES:
        return (
            FAIL,
            key,
            f"{what}: not allowed (ports below 1024 need privileges); use 1024 or more",
        )
    return FAIL, key, f"{what}: cannot listen there ({e.strerror})"


# -- hash key and audit log -------------------------------------------------------------


def _hash_key(cfg: AgencyConfig) -> Generator[Finding, None, bytes | None]:
    hashed = [m for m in cfg.policy.masks if m.rule == "hash"]
    try:
        key = load_hash_key(cfg.hash_key_file, f"{cfg.source}: [connector]")
    except ConfigError as e:
        yield Finding(FAIL, "hash key", f"{e}")
        return None
    source = str(cfg.hash_key_file) if cfg.hash_key_file else f"${HASH_KEY_ENV}"
    if key is None and hashed:
        yield Finding(
            FAIL,
            "hash key",
            (
                f"{hashed[0].where}: a 'hash' mask needs the federation's key: set hash_key_file "
                f"under [connector] or {HASH_KEY_ENV} (every agency of the federation the same)"
            ),
        )
    elif key is not None:
        use = "used by the hash masks" if hashed else "no hash mask uses it"
        yield Finding(
            OK,
            "hash key",
            f"read from {source}: fingerprint {fingerprint(key)} ({use}); every agency of the "
            "federation must show the same (`fedsql status -c FEDERATION.toml` compares them)",
        )
    return key


def _audit(cfg: AgencyConfig) -> Checks:
    path = cfg.audit_log
    if path is None:
        yield Finding(
            WARN,
            "audit log",
            (
                "none: this connector would audit nothing; set audit_log under [connector] "
                "(docs/operations.md, The audit log)"
            ),
        )
        return
    exists = path.parent
    while not exists.exists() and exists != exists.parent:
        exists = exists.parent
    try:
        if not exists.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(exists))
        with tempfile.NamedTemporaryFile(dir=exists, prefix=".fedsql-check-"):
            pass
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except OSError as e:
        yield Finding(
            FAIL,
            "audit log",
            (
                f"{path}: cannot write {e.filename or path} ({e.strerror}); give the connector's "
                f"user write access to {exists} (only there: e.g. systemd ReadWritePaths)"
            ),
        )
        return
    rotation = cfg.audit
    rotates = " and ".join(
        ([f"at {rotation.rotate_bytes} bytes"] if rotation.rotate_bytes else [])
        + (["daily"] if rotation.rotate_daily else [])
    )
    how = (
        f"rotates {rotates}"
        if rotates
        else "never rotates (set audit_rotate_bytes or audit_rotate_daily)"
    )
    created = "" if path.parent.exists() else f" ({path.parent} will be created)"
    yield Finding(OK, "audit log", f"{path}: writable{created}; {how}")
    free = shutil.disk_usage(exists).free
    if free < MIN_FREE_BYTES:
        yield Finding(
            WARN,
            "audit disk",
            f"{exists}: only {free >> 20} MiB free: every call is "
            "audited, and a full disk stops the connector answering",
        )
    if path.exists() and path.stat().st_size:
        v = verify_chain([path])
        if v.ok:
            yield Finding(
                OK, "audit chain", f"{path}: intact, {v.lines} lines up to seq {v.last_seq}"
            )
        else:
            yield Finding(
                WARN,
                "audit chain",
                (
                    f"{path}: broken at line {v.broken_line}: {v.reason}; the connector continues "
                    f"after it: keep the file as evidence and run `fedsql audit verify {path}`"
                ),
            )
