"""Peer runner: DuckDB 1.4 attaching the agencies' PostgreSQL databases.

Run by :mod:`fedsql.bench.peers` with the Python of a separate virtualenv
(``duckdb==1.4.4`` + ``duckdb-ext-postgres``, whose wheel ships the postgres
extension file, since DuckDB cannot download extensions here). Standard library
and ``duckdb`` only: this file is executed as a script, not imported.

Input (JSON on stdin): ``extension`` (path), ``pg_port``, ``agencies``
({agency: [tables]}), ``queries`` ({"N": sql}), ``runs``, ``out_dir``.
Output: one JSON line per query on stdout — ``query``, ``seconds`` (median),
``bytes`` (PostgreSQL wire bytes sent to DuckDB, from one extra metered run),
``result`` (Parquet file of that run's result, for the caller to check) or ``error``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import duckdb

try:
    from fedsql.bench.meter import ByteMeter
except ImportError:  # run as a script in the peer virtualenv
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from meter import ByteMeter  # type: ignore[no-redef]


def attach(extension: str, port: int, agencies: dict[str, list[str]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.load_extension(extension)
    for agency, tables in agencies.items():
        dsn = f"host=127.0.0.1 port={port} dbname={agency} user=postgres"
        con.execute(f"ATTACH '{dsn}' AS {agency} (TYPE postgres, READ_ONLY)")
        for t in tables:
            con.execute(f'CREATE VIEW "{t}" AS SELECT * FROM {agency}.public."{t}"')
    return con


def main() -> None:
    args = json.load(sys.stdin)
    direct = attach(args["extension"], args["pg_port"], args["agencies"])
    meter = ByteMeter(args["pg_port"])
    metered = attach(args["extension"], meter.port, args["agencies"])
    for tables in args["agencies"].values():  # load the catalog before metering
        for t in tables:
            metered.execute(f'DESCRIBE "{t}"').fetchall()
    out_dir = Path(args["out_dir"])
    for n, sql in args["queries"].items():
        row: dict[str, object] = {"query": int(n)}
        try:
            times = []
            for _ in range(args["runs"]):
                t = time.perf_counter()
                direct.execute(sql).fetchall()
                times.append(time.perf_counter() - t)
            row["seconds"] = statistics.median(times)
            meter.reset()
            result = out_dir / f"attach-q{int(n):02d}.parquet"
            metered.execute(f"COPY ({sql.strip().rstrip(';')}) TO '{result}' (FORMAT parquet)")
            row["bytes"] = meter.reset()
            row["result"] = str(result)
        except duckdb.Error as e:
            row["error"] = str(e).splitlines()[0][:300]
        print(json.dumps(row), flush=True)
    meter.close()


if __name__ == "__main__":
    main()
