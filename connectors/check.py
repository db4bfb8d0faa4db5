"""``fedsql connector check AGENCY.toml``: a dry run of a connector's start, one finding per check.

What ``fedsql connector serve`` would meet, found without serving: the config,
the listen addresses, the certificates (present, the key matching, chained to
the CA, dates, names, usage, revocation), the hash key, the audit log's
directory, and the backend (opened read-only as at start; each exposed table
read; every mask, row filter and grant checked against the real columns), with
the database role's rights for backends that check them at start (PostgreSQL).

Each check is the connector's own start-time code where there is one —
``load_agency``, ``trust.server_credentials``, ``signing.NodeKey`` (the key that
signs the audit log), ``server.open_backend`` (which runs the role check of
``pgrole.py``), ``policy.load.validate`` — so that what passes here starts
there. Nothing is written: the audit log is opened for appending and closed, a
probe file is created and removed next to it, the ports are bound and released.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlglot import exp

from fedsql.audit.signing import NodeKey, common_name, names
from fedsql.audit.verify import verify_chain
from fedsql.certs import load_crl
from fedsql.connectors.backend import Backend
from fedsql.connectors.config import AgencyConfig, load_agency
from fedsql.connectors.server import open_backend
from fedsql.errors import ConfigError
from fedsql.hashkey import fingerprint
from fedsql.policy.load import validate
from fedsql.policy.masks import HASH_KEY_ENV, load_hash_key
from fedsql.policy.model import Policy
from fedsql.tomlconf import ServerTLS
from fedsql.trust import server_credentials

OK, WARN, FAIL = "ok", "warn", "FAIL"
EXPIRY_WARNING_DAYS = 30  # a certificate this close to its end is a warning
MIN_FREE_BYTES = 1 << 30  # free disk under the audit log below which we warn
ISSUE = "fedsql certs issue --ca CA_DIR connector {name}"


@dataclass(frozen=True, slots=True)
class Finding:
    status: str  # OK, WARN or FAIL
    check: str  # what was checked: "config", "tls cert", "table visits", ...
    message: str  # what was found; for WARN and FAIL also what to do


Checks = Generator[Finding, None, None]


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
    yield from _tls(cfg)
    key = yield from _hash_key(cfg)
    yield from _audit(cfg)
    yield from _backend(cfg, key)


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


# -- certificates ------------------------------------------------------------------


def _tls(cfg: AgencyConfig) -> Checks:
    tls = cfg.tls
    if tls is None:
        yield Finding(
            WARN,
            "tls",
            (
                "insecure = true: plaintext gRPC; anyone who reaches the port can query, and "
                "users and roles are not authenticated. Local development only: issue a "
                f"certificate (`{ISSUE.format(name=cfg.name)}`) and set [connector.tls]"
            ),
        )
        return
    cert = yield from _certificate(tls.cert, "tls cert", cfg.name)
    if cert is not None:
        yield _key(cfg, tls)
        todo = f"issue a new one (`{ISSUE.format(name=cfg.name)}`) and restart the connector"
        yield from _dates("tls cert", cert, todo)
        yield from _names(cert, cfg.name)
    cas = yield from _authorities(tls)
    if cert is not None and cas:
        yield from _chain(cert, cas, tls.client_ca)
        yield from _revocation(tls, cert)
    yield Finding(OK, "coordinators", "allowed: " + ", ".join(cfg.allowed_coordinators))


def _key(cfg: AgencyConfig, tls: ServerTLS) -> Finding:
    """The key as the connector reads it at start: for gRPC, and to sign the audit log."""
    try:
        server_credentials(tls, str(cfg.source))
        signing = NodeKey.load(tls.key, tls.cert, f"{cfg.source}: [connector.tls]")
    except ConfigError as e:
        return Finding(FAIL, "tls key", f"{e}")
    loose = os.name == "posix" and tls.key.stat().st_mode & 0o077
    return Finding(
        WARN if loose else OK,
        "tls key",
        f"{tls.key}: matches the certificate, signs the audit log ({signing.alg})"
        + (f"; readable by other users: chmod 600 {tls.key}" if loose else ""),
    )


def _certificate(
    path: Path, what: str, name: str
) -> Generator[Finding, None, x509.Certificate | None]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        yield Finding(
            FAIL,
            what,
            (
                f"{path}: not found; issue one (`{ISSUE.format(name=name)}`) or fix the path "
                "(relative paths resolve against AGENCY.toml's directory)"
            ),
        )
        return None
    except OSError as e:
        yield Finding(
            FAIL, what, f"{path}: cannot read it ({e.strerror}); the connector's user must"
        )
        return None
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        yield Finding(FAIL, what, f"{path}: not a PEM certificate (a key? a DER file?)")
        return None


def _authorities(tls: ServerTLS) -> Generator[Finding, None, list[x509.Certificate]]:
    try:
        cas = x509.load_pem_x509_certificates(tls.client_ca.read_bytes())
    except FileNotFoundError:
        yield Finding(
            FAIL,
            "tls client_ca",
            (
                f"{tls.client_ca}: not found; copy the federation CA's ca.crt there (from "
                "`fedsql certs init`)"
            ),
        )
        return []
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) else "not a PEM certificate"
        yield Finding(FAIL, "tls client_ca", f"{tls.client_ca}: {why}")
        return []
    for ca in cas:
        yield from _dates(
            "tls CA",
            ca,
            "the federation must move to a new CA (every node's certificate is reissued from it)",
        )
    return cas


def _dates(what: str, cert: x509.Certificate, todo: str) -> Checks:
    now = dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    span = f"'{common_name(cert)}' valid {start:%Y-%m-%d} to {end:%Y-%m-%d}"
    left = (end - now).days
    if now < start:
        yield Finding(
            FAIL,
            what,
            f"not valid before {start:%Y-%m-%d %H:%M} UTC ({span}): "
            "check this host's clock, or wait",
        )
    elif now > end:
        yield Finding(FAIL, what, f"expired {(now - end).days} day(s) ago ({span}): {todo}")
    elif left < EXPIRY_WARNING_DAYS:
        yield Finding(WARN, what, f"expires in {left} day(s) ({span}): {todo} soon")
    else:
        yield Finding(OK, what, f"{span}, {left} days left")


def _names(cert: x509.Certificate, name: str) -> Checks:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        server = ExtendedKeyUsageOID.SERVER_AUTH in usage
    except x509.ExtensionNotFound:
        server = True  # no EKU: any use
    held = sorted(names(cert))
    if not server:
        yield Finding(
            FAIL,
            "tls names",
            (
                f"certificate '{common_name(cert)}' is not for a server (no serverAuth usage; a "
                f"coordinator's?): issue a connector certificate (`{ISSUE.format(name=name)}`)"
            ),
        )
    elif name.lower() not in (n.lower() for n in held):
        yield Finding(
            FAIL,
            "tls names",
            (
                f"the certificate names {', '.join(held) or 'nothing'}, not '{name}': coordinators "
                f"check that it names the agency; issue one for it (`{ISSUE.format(name=name)}`)"
            ),
        )
    else:
        yield Finding(OK, "tls names", f"names {', '.join(held)} (coordinators expect '{name}')")


def _chain(cert: x509.Certificate, cas: list[x509.Certificate], ca_path: Path) -> Checks:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        yield Finding(OK, "tls chain", f"issued by '{common_name(ca)}' ({ca_path})")
        return
    yield Finding(
        FAIL,
        "tls chain",
        (
            f"not issued by the CA in {ca_path} (it names issuer {cert.issuer.rfc4514_string()}): "
            "coordinators trusting the federation CA refuse it; issue it from that CA"
        ),
    )


def _revocation(tls: ServerTLS, cert: x509.Certificate) -> Checks:
    if tls.crl is None:
        yield Finding(
            OK,
            "tls crl",
            "none configured ([connector.tls] crl): revoked "
            "coordinator certificates are not refused before they expire",
        )
        return
    where = f"[connector.tls].crl {tls.crl}"
    try:
        crl = load_crl(tls.crl.read_bytes(), tls.client_ca.read_bytes(), where)
    except OSError as e:
        yield Finding(FAIL, "tls crl", f"{where}: cannot read it ({e.strerror})")
        return
    except ConfigError as e:
        yield Finding(FAIL, "tls crl", f"{e}")
        return
    if cert.serial_number in crl.serials:
        yield Finding(
            FAIL,
            "tls crl",
            f"this connector's own certificate is revoked by {tls.crl}: issue it a new one",
        )
    elif crl.next_update is not None and crl.next_update < dt.datetime.now(dt.UTC):
        yield Finding(
            WARN,
            "tls crl",
            f"{tls.crl}: out of date since {crl.next_update:%Y-%m-%d}; "
            "publish a fresh one (`fedsql certs crl --ca CA_DIR`)",
        )
    else:
        yield Finding(OK, "tls crl", f"{tls.crl}: signed by the CA, {len(crl.serials)} revoked")


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


# -- backend, tables, policies, role -------------------------------------------------------


def _backend(cfg: AgencyConfig, key: bytes | None) -> Checks:
    role_error: ConfigError | None = None
    first: ConfigError | None = None
    backend: Backend | None = None
    with _Captured() as said:
        try:
            backend = open_backend(cfg, key)
        except ConfigError as e:
            first = e
        if backend is None and _checks_role(cfg) and not cfg.backend.allow_writable_role:
            # Was it the role? Open as allow_writable_role would (a loud warning, not a refusal).
            opts = replace(cfg.backend.options, allow_writable_role=True)
            try:
                backend = open_backend(
                    replace(cfg, backend=replace(cfg.backend, options=opts)), key
                )
                role_error = first
            except ConfigError:
                pass
    if backend is None:
        yield Finding(FAIL, "backend", f"{first}")
        return
    try:
        tables = backend.tables()
        where = cfg.backend.path if cfg.backend.path is not None else "the database of its dsn"
        scope = "listed in [backend].tables" if cfg.backend.tables is not None else "all it has"
        yield Finding(
            OK if tables else WARN,
            "backend",
            (
                f"{cfg.backend.kind} at {where} opened read-only: {len(tables)} table(s) exposed "
                f"({scope})" + ("" if tables else "; analysts will see nothing")
            ),
        )
        role = [r for r in said if r.module == "pgrole"]
        for r in said:
            if r not in role:
                yield Finding(WARN, "backend", r.getMessage())
        if role_error is not None:
            yield Finding(FAIL, "database role", f"{role_error}")
        elif role:
            yield from (Finding(WARN, "database role", r.getMessage()) for r in role)
        elif _checks_role(cfg):
            yield Finding(
                OK,
                "database role",
                "may only read: no write, DDL, ownership or "
                "escalation, no SELECT beyond the exposed tables",
            )
        schemas = {t.full_name.lower(): t.arrow_schema for t in tables}
        for t in tables:
            yield _table(cfg, backend, t.schema, t.name, len(t.arrow_schema))
        yield from _policies(cfg, schemas)
    finally:
        backend.close()


def _checks_role(cfg: AgencyConfig) -> bool:
    """Whether the backend checks its database role at start (``allow_writable_role``)."""
    return hasattr(cfg.backend.options, "allow_writable_role")


def _table(cfg: AgencyConfig, backend: Backend, schema: str, name: str, columns: int) -> Finding:
    full = f"{schema}.{name}" if schema else name
    rules = [f"{m.column} ({m.rule})" for m in cfg.policy.masks if m.table.lower() == full.lower()]
    filters = sum(f.table.lower() == full.lower() for f in cfg.policy.row_filters)
    sql = exp.select("*").from_(exp.table_(name, db=schema or None, quoted=True)).limit(0)
    try:
        running = backend.execute(sql.sql(dialect=backend.dialect), 1024)
        try:
            for _ in running.reader:  # no rows: LIMIT 0; the schema and the read are the point
                pass
        finally:
            running.close()
    except Exception as e:  # noqa: BLE001 - whatever the backend says is the finding
        return Finding(
            FAIL,
            f"table {full}",
            f"cannot be read: {str(e).splitlines()[0]}; the "
            "connector's database user needs SELECT on it (and its files, read access)",
        )
    policy = (["masks " + ", ".join(rules)] if rules else []) + (
        [f"{filters} row filter(s)"] if filters else []
    )
    return Finding(
        OK,
        f"table {full}",
        f"{columns} columns, readable" + (f"; {'; '.join(policy)}" if policy else ""),
    )


def _policies(cfg: AgencyConfig, schemas: dict[str, pa.Schema]) -> Checks:
    bad = 0
    rules = [Policy(masks=(m,)) for m in cfg.policy.masks]
    rules += [Policy(row_filters=(f,)) for f in cfg.policy.row_filters]
    for one in rules:
        try:
            validate(one, schemas, f"connector '{cfg.name}'")
        except ConfigError as e:
            bad += 1
            yield Finding(FAIL, "policy", f"{e}")
    if rules and not bad:
        yield Finding(
            OK,
            "policy",
            f"{len(rules)} mask(s) and row filter(s) name real tables and columns of fitting types",
        )
    for g in cfg.grants or ():
        if g.table != "*" and g.table not in schemas:
            yield Finding(
                WARN,
                "grant",
                (
                    f"[[grant]] table = '{g.table}' is not an exposed table, so it opens nothing "
                    f"(exposed: {', '.join(sorted(schemas)) or 'none'})"
                ),
            )


class _Captured(logging.Handler):
    """The warnings the connector's modules log while the backend opens (the role
    check's among them), kept for the findings instead of printed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._log = logging.getLogger("fedsql")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> list[logging.LogRecord]:
        self._was = self._log.propagate, self._log.level
        self._log.addHandler(self)
        self._log.propagate = False
        if self._log.getEffectiveLevel() > logging.WARNING:
            self._log.setLevel(logging.WARNING)
        return self.records

    def __exit__(self, *exc: object) -> None:
        self._log.removeHandler(self)
        self._log.propagate, level = self._was
        self._log.setLevel(level)
