"""Local federations: TPC-H data split over agencies, connectors as subprocesses.

Used by ``fedsql demo``, ``fedsql bench`` and the integration tests; each
connector is a real ``fedsql connector serve`` process on a free loopback port.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fedsql.errors import ConfigError, FedSQLError
from fedsql.pgserver import PostgresServer

TPCH_SPLIT: dict[str, tuple[str, ...]] = {
    "trade": ("orders", "lineitem"),
    "registry": ("customer", "nation", "region"),
    "industry": ("part", "partsupp", "supplier"),
}
TPCH_TABLES = tuple(t for ts in TPCH_SPLIT.values() for t in ts)
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


def _tpchgen() -> str:
    exe = Path(sys.executable).parent / "tpchgen-cli"
    if exe.exists():
        return str(exe)
    found = shutil.which("tpchgen-cli")
    if found:
        return found
    raise FedSQLError(
        "tpchgen-cli is not installed; run `pip install 'fedsql[coordinator]'` (make does)"
    )


def generate_tpch(sf: float, out_dir: Path) -> Path:
    """TPC-H parquet files at scale ``sf`` in ``out_dir`` (reused when already complete)."""
    marker = out_dir / ".complete"
    if marker.exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [_tpchgen(), "parquet", "-s", f"{sf:g}", "--output-dir", str(out_dir)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    missing = [t for t in TPCH_TABLES if not (out_dir / f"{t}.parquet").exists()]
    if missing:
        raise FedSQLError(f"tpchgen-cli did not write {', '.join(missing)} in {out_dir}")
    marker.write_text(f"sf={sf}\n")
    return out_dir


def central_duckdb(parquet_dir: Path, db_path: Path, tables: tuple[str, ...] = TPCH_TABLES) -> Path:
    """One DuckDB file holding ``tables`` (the oracle, and agencies' own databases)."""
    import duckdb

    tmp = db_path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        for t in tables:
            src = str(parquet_dir / f"{t}.parquet").replace("'", "''")
            con.execute(f"CREATE TABLE \"{t}\" AS SELECT * FROM read_parquet('{src}')")
    finally:
        con.close()
    tmp.replace(db_path)
    return db_path


def split_agencies(
    parquet_dir: Path,
    work: Path,
    backend: str | dict[str, str] = "duckdb",
    split: dict[str, tuple[str, ...]] = TPCH_SPLIT,
    pg: PostgresServer | None = None,
) -> dict[str, tuple[str, str]]:
    """Give each agency its own data in its backend; returns agency → (kind, location).

    ``backend`` is one kind for all agencies or a kind per agency, any registered
    (``fedsql.connectors.registry``); each kind makes its own sample data (its
    ``KIND.sample``) and says where it is: a path, or for PostgreSQL a database
    of its own on ``pg``, loaded by the superuser and read by a least-privilege
    role ``<agency>_reader`` (what the connector's start-up check asks of agencies).
    """
    from fedsql.connectors.kind import Sample
    from fedsql.connectors.registry import make_sample

    out: dict[str, tuple[str, str]] = {}
    for agency, tables in split.items():
        kind = backend if isinstance(backend, str) else backend[agency]
        sample = Sample(parquet_dir, tables, work, agency, pg, TPCH_INDEXES)
        try:
            out[agency] = (kind, make_sample(kind, sample))
        except ValueError as e:
            raise ConfigError(f"agency {agency}: {e} (pg=PostgresServer())") from None
    return out


# Keys an agency's real database would have (TPC-H spec 1.4.2: primary keys; plus
# the foreign-key indexes every TPC-H setup on PostgreSQL adds).
TPCH_INDEXES = {
    "orders": ["PRIMARY KEY (o_orderkey)", "INDEX (o_custkey)"],
    "lineitem": [
        "PRIMARY KEY (l_orderkey, l_linenumber)",
        "INDEX (l_partkey, l_suppkey)",
        "INDEX (l_suppkey)",
    ],
    "customer": ["PRIMARY KEY (c_custkey)"],
    "nation": ["PRIMARY KEY (n_nationkey)"],
    "region": ["PRIMARY KEY (r_regionkey)"],
    "part": ["PRIMARY KEY (p_partkey)"],
    "partsupp": ["PRIMARY KEY (ps_partkey, ps_suppkey)", "INDEX (ps_suppkey)"],
    "supplier": ["PRIMARY KEY (s_suppkey)"],
}


def write_agency_toml(
    path: Path, name: str, backend: str, data: Path | str, extra: str = ""
) -> Path:
    from fedsql.connectors.registry import kind

    path.write_text(
        f"""[connector]
name = "{name}"
listen = "127.0.0.1:0"
insecure = true
audit_log = "{name}-audit.jsonl"

[backend]
kind = "{backend}"
{kind(backend).location} = "{data}"
{extra}"""
    )
    return path


@dataclass
class LocalConnector:
    name: str
    address: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


SERVE = ("fedsql", "connector", "serve")  # python -m fedsql connector serve TOML
STANDALONE = ("fedsql.connectors",)  # python -m fedsql.connectors TOML (no CLI)


def start_connector(
    toml: Path,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    entry: tuple[str, ...] = SERVE,
) -> LocalConnector:
    """Start ``fedsql connector serve TOML`` (or another ``python -m`` ``entry``) and
    wait until it listens (``env``: extra environment variables for it)."""
    log_path = toml.with_suffix(".log")
    with log_path.open("wb") as errf:
        proc = subprocess.Popen(
            [sys.executable, "-m", *entry, str(toml)],
            stdout=subprocess.PIPE,
            stderr=errf,
            stdin=subprocess.DEVNULL,
            cwd=toml.parent,
            env={**os.environ, **env} if env else None,
        )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < end:
        if proc.poll() is not None and not sel.select(0):
            break
        if sel.select(0.2):
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            m = _LISTENING.search(buf.decode(errors="replace"))
            if m:
                sel.close()
                name = buf.decode().split("'")[1]
                return LocalConnector(name, f"{m.group(1)}:{m.group(2)}", proc, log_path)
    sel.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    err = log_path.read_text(errors="replace").strip().splitlines()
    raise FedSQLError(
        f"connector {toml} did not start: "
        + (err[-1] if err else "no output; see " + str(log_path))
    )


COORDINATOR = "coordinator"  # the local federation's coordinator identity (its cert's CN)


def secure_agency(toml: Path, pki: Path) -> Path:
    """Switch a plaintext (``insecure = true``) AGENCY.toml to mutual TLS: issue the
    connector a certificate from the CA in ``pki`` and allow the local coordinator."""
    import tomllib

    from fedsql import certs

    text = toml.read_text()
    if not re.search(r"(?m)^insecure = true$", text):
        return toml
    name = tomllib.loads(text)["connector"]["name"]
    got = certs.issue(pki, "connector", name, pki, local=True)  # local development
    text = re.sub(
        r"(?m)^insecure = true$", f'allowed_coordinators = ["{COORDINATOR}"]', text, count=1
    )
    toml.write_text(
        text.rstrip("\n")
        + f'\n\n[connector.tls]\ncert = "{got.cert}"\nkey = "{got.key}"\n'
        + f'client_ca = "{pki / certs.CA_CERT}"\n'
    )
    return toml


def local_pki(work: Path) -> Path:
    """The local federation's CA and coordinator certificate in ``work/pki``."""
    from fedsql import certs

    pki = work / "pki"
    if not (pki / certs.CA_CERT).exists():
        certs.init_ca(pki, name="fedsql local federation CA")
    if not (pki / f"{COORDINATOR}.crt").exists():
        certs.issue(pki, "coordinator", COORDINATOR, pki)
    return pki


class LocalFederation:
    """Connectors started from AGENCY.toml files, and a FEDERATION.toml naming them.

    With ``tls`` (the default) every connector whose AGENCY.toml says
    ``insecure = true`` is switched to mutual TLS first (certificates from a CA
    made in ``work/pki``), and the coordinator connects with its own certificate.
    """

    def __init__(
        self, work: Path, agency_tomls: list[Path], users: str = "", tls: bool = True
    ) -> None:
        self.work = work
        self.connectors: list[LocalConnector] = []
        self.pki = local_pki(work) if tls else None
        try:
            for t in agency_tomls:
                if self.pki is not None:
                    secure_agency(t, self.pki)
                self.connectors.append(start_connector(t))
        except BaseException:
            self.stop()
            raise
        lines = []
        for c in self.connectors:
            lines += ["[[connector]]", f'name = "{c.name}"', f'address = "{c.address}"']
            if self.pki is None:
                lines += ["insecure = true"]
            else:
                lines += [
                    "[connector.tls]",
                    f'ca = "{self.pki / "ca.crt"}"',
                    f'cert = "{self.pki / (COORDINATOR + ".crt")}"',
                    f'key = "{self.pki / (COORDINATOR + ".key")}"',
                ]
            lines.append("")
        self.config_path = work / "federation.toml"
        self.config_path.write_text("\n".join(lines) + "\n" + users)

    def stop(self) -> None:
        for c in self.connectors:
            c.stop()

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tpch_federation(
    work: Path,
    sf: float,
    backend: str | dict[str, str] = "duckdb",
    data_dir: Path | None = None,
    pg: PostgresServer | None = None,
) -> tuple[LocalFederation, Path]:
    """TPC-H at ``sf`` split over trade/registry/industry, connectors running.

    Returns the federation and the parquet directory (for a central copy).
    """
    parquet = generate_tpch(sf, data_dir or (work / f"tpch-sf{sf:g}"))
    data = split_agencies(parquet, work, backend, pg=pg)
    tomls = [
        write_agency_toml(work / f"{a}.toml", a, kind, where) for a, (kind, where) in data.items()
    ]
    return LocalFederation(work, tomls), parquet
