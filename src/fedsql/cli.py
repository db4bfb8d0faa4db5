"""The fedsql command line. The only module that prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pyarrow as pa

from fedsql.errors import FedSQLError


def format_table(table: pa.Table, max_rows: int = 50) -> str:
    """An aligned text table (at most ``max_rows`` rows shown)."""
    names = table.column_names
    rows = table.slice(0, max_rows).to_pylist()
    cells = [[_cell(r[n]) for n in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    numeric = [
        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        for f in table.schema
    ]

    def line(vals: list[str]) -> str:
        return " | ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(vals, widths, numeric, strict=True)
        ).rstrip()

    out = [line(names), "-+-".join("-" * w for w in widths)]
    out += [line(c) for c in cells]
    more = table.num_rows - len(rows)
    out.append(
        f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}"
        + (f", {more} not shown" if more > 0 else "")
        + ")"
    )
    return "\n".join(out)


def _cell(v: object) -> str:
    return "NULL" if v is None else str(v)


def _write_result(table: pa.Table, fmt: str, output: str | None) -> None:
    if fmt == "table":
        text = format_table(table, max_rows=table.num_rows if output else 1000)
        _emit(text + "\n", output)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        _emit(sink.getvalue().to_pybytes().decode(), output)
    elif fmt == "json":
        _emit("\n".join(json.dumps(r, default=str) for r in table.to_pylist()) + "\n", output)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        if not output:
            raise FedSQLError("--format parquet needs --output FILE")
        pq.write_table(table, output)


def _emit(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)


def _stats_line(fed) -> str:  # type: ignore[no-untyped-def]
    st = fed.last_stats
    parts = [
        f"{a}: {s.rows} rows, {s.bytes / 1e3:.1f} kB, {s.seconds:.3f} s"
        for a, s in sorted(st.connectors.items())
    ]
    return (
        f"{st.result_rows} rows in {st.total_seconds:.3f} s (plan {st.plan_seconds:.3f} s); "
        + "; ".join(parts)
    )


def _sql_arg(args: argparse.Namespace) -> str:
    if args.sql == "-":
        return sys.stdin.read()
    if args.file:
        return Path(args.file).read_text()
    if args.sql is None:
        raise FedSQLError("give the SQL as an argument, '-' for standard input, or -f FILE")
    return str(args.sql)


def cmd_query(args: argparse.Namespace) -> int:
    import fedsql

    with fedsql.connect(args.config, user=args.user) as fed:
        table = fed.sql(_sql_arg(args), timeout=args.timeout)
        _write_result(table, args.format, args.output)
        if not args.quiet:
            print(_stats_line(fed), file=sys.stderr)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import fedsql

    with fedsql.connect(args.config, user=args.user) as fed:
        print(fed.explain(_sql_arg(args), analyze=args.analyze))
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    import fedsql

    with fedsql.connect(args.config, user=args.user) as fed:
        who = f"user {fed.principal.user}" + (
            f" (roles: {', '.join(fed.principal.roles)})" if fed.principal.roles else ""
        )
        print(f"Tables as {who} sees them; 'mask' is what you get, 'rules' what is configured.")
        for agency, cat in fed.catalog.catalogs.items():
            for t in cat.tables:
                est = f"~{t.row_count_estimate} rows" if t.row_count_estimate >= 0 else "rows: ?"
                print(f"\n{agency}.{t.full_name}  ({est}, backend {cat.backend})")
                for f in t.row_filters:
                    state = "applies to you" if t.row_filtered else "not for you"
                    print(f"  row filter: {f}  ({state})")
                masks = dict(t.masks)
                rules: dict[str, list[str]] = {}
                for c, r in t.mask_rules:
                    rules.setdefault(c, []).append(r)
                rows = [
                    (f.name, str(f.type), masks.get(f.name, "-"), "; ".join(rules.get(f.name, [])))
                    for f in t.arrow_schema
                ]
                print(
                    format_table(
                        pa.table(
                            {
                                "column": [r[0] for r in rows],
                                "type": [r[1] for r in rows],
                                "mask": [r[2] for r in rows],
                                "rules": [r[3] for r in rows],
                            }
                        )
                    ).rsplit("\n", 1)[0]
                )
    return 0


def cmd_serve_connector(args: argparse.Namespace) -> int:
    from fedsql.config import load_agency
    from fedsql.connectors.server import serve

    serve(load_agency(args.agency_config))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from fedsql.config import load_federation
    from fedsql.service.server import start

    cfg = load_federation(args.config)
    server = start(cfg, args.listen)
    host = (args.listen or cfg.service.listen).rpartition(":")[0]
    scheme = "grpc+tcp" if cfg.service.insecure else "grpc+tls"
    users = ", ".join(server.signin.users)
    print(f"fedsql serve: Flight SQL at {scheme}://{host}:{server.port} (users: {users})")
    print(f"listening on {host}:{server.port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.shutdown_federations()
    print("fedsql serve: stopped", file=sys.stderr)
    return 0


def _password(args: argparse.Namespace) -> str:
    """The analyst's password: --password-file, $FEDSQL_PASSWORD, or a prompt."""
    import getpass
    import os

    if args.password_file:
        return Path(args.password_file).read_text().rstrip("\n")
    if os.environ.get("FEDSQL_PASSWORD"):
        return os.environ["FEDSQL_PASSWORD"]
    if not sys.stdin.isatty():
        raise FedSQLError("give the password with --password-file FILE or $FEDSQL_PASSWORD")
    return getpass.getpass(f"password for {args.user}: ")


def _remote(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from fedsql.service.remote import Remote

    if not args.user:
        raise FedSQLError("--url needs --user NAME (a [user.NAME] of the service)")
    return Remote(
        args.url,
        args.user,
        _password(args),
        ca_file=Path(args.ca) if args.ca else None,
        verify=not args.insecure_skip_verify,
    )


def cmd_passwd(args: argparse.Namespace) -> int:
    import getpass

    from fedsql.service.auth import hash_password

    if sys.stdin.isatty():
        pw = getpass.getpass("new password: ")
        if pw != getpass.getpass("again: "):
            raise FedSQLError("the passwords differ; nothing printed")
    else:
        pw = sys.stdin.readline().rstrip("\n")
    if len(pw) < 8:
        raise FedSQLError("use at least 8 characters")
    print(hash_password(pw))
    who = args.user or "NAME"
    print(f'paste it into FEDERATION.toml: [user.{who}] password_hash = "..."', file=sys.stderr)
    return 0


def cmd_queries(args: argparse.Namespace) -> int:
    remote = _remote(args)
    try:
        rows = remote.queries()
    finally:
        remote.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "user": [r["user"] for r in rows],
            "state": [r["state"] for r in rows],
            "seconds": [r["seconds"] for r in rows],
            "rows": [r["rows"] for r in rows],
            "agencies": [
                ", ".join(
                    f"{a} {v['rows']} rows/{v['bytes'] / 1e3:.0f} kB"
                    for a, v in r["agencies"].items()
                )
                for r in rows
            ],
            "sql": [r["sql"][:60] for r in rows],
        }
    )
    print(format_table(table, max_rows=1000))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    remote = _remote(args)
    try:
        outcome = remote.cancel(args.query_id)
    finally:
        remote.close()
    messages = {
        "cancelled": f"query {args.query_id}: cancelled (its agencies were told to stop)",
        "finished": f"query {args.query_id} has already finished",
        "unknown": f"no query {args.query_id} of yours; `fedsql queries` lists them",
    }
    print(messages.get(outcome, outcome))
    return 0 if outcome == "cancelled" else 1


def cmd_shell(args: argparse.Namespace) -> int:
    from fedsql import shell

    if args.url:
        remote = _remote(args)
        sh = shell.Shell(shell.RemoteBackend(remote), format_table)
        banner = f"fedsql shell: {args.user} at {remote.url}. .help for help; end statements with ;"
        try:
            return shell.run(sh, banner)
        finally:
            remote.close()
    if not args.config:
        raise FedSQLError("give -c FEDERATION.toml (embedded) or --url URL (a fedsql serve)")
    import fedsql

    with fedsql.connect(args.config, user=args.user) as fed:
        sh = shell.Shell(shell.EmbeddedBackend(fed), format_table)
        who = f" as {args.user}" if args.user else ""
        banner = f"fedsql shell{who}: {args.config}. .help for help; end statements with ;"
        return shell.run(sh, banner)


def cmd_demo(args: argparse.Namespace) -> int:
    from fedsql.demo import run_demo

    run_demo(format_table, sf=args.sf)
    return 0


def cmd_bench_tpch(args: argparse.Namespace) -> int:
    from fedsql.bench import tpch

    queries = [int(q) for q in args.queries.split(",")] if args.queries else None
    print(tpch.HEADER)
    report = tpch.run(
        args.sf,
        runs=args.runs,
        queries=queries,
        json_path=Path(args.json) if args.json else None,
        backend=args.backend,
    )
    print()
    print(tpch.summary(report))
    if args.link:
        print(tpch.link_summary(report, tpch.Link.parse(args.link)))
    if args.json:
        print(f"figures written to {args.json}")
    return 0 if all(q.ok for q in report.queries) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedsql", description="Federated SQL that leaves data in place."
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True)

    def add_sql(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", required=True, help="FEDERATION.toml")
        sp.add_argument("--user", help="analyst name from [user.NAME] in the config")
        sp.add_argument("-f", "--file", help="read the SQL from this file")
        sp.add_argument("sql", nargs="?", help="the SQL text ('-' reads standard input)")

    q = sub.add_parser("query", help="run a federated query")
    add_sql(q)
    q.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    q.add_argument("-o", "--output", help="write the result to this file")
    q.add_argument("--timeout", type=float, help="deadline in seconds")
    q.add_argument("-q", "--quiet", action="store_true", help="no stats line on stderr")
    q.set_defaults(func=cmd_query)

    e = sub.add_parser("explain", help="show fragments per connector and the residual query")
    add_sql(e)
    e.add_argument("--analyze", action="store_true", help="run it; rows, bytes, time per fragment")
    e.set_defaults(func=cmd_explain)

    cat = sub.add_parser("catalog", help="tables and columns, with the masks you would get")
    cat.add_argument("-c", "--config", required=True, help="FEDERATION.toml")
    cat.add_argument("--user", help="analyst name from [user.NAME] in the config")
    cat.set_defaults(func=cmd_catalog)

    c = sub.add_parser("connector", help="connector node commands")
    csub = c.add_subparsers(dest="connector_command", required=True)
    s = csub.add_parser("serve", help="run one connector node")
    s.add_argument("agency_config", help="AGENCY.toml")
    s.set_defaults(func=cmd_serve_connector)

    def add_remote(sp: argparse.ArgumentParser, required: bool) -> None:
        sp.add_argument(
            "--url", required=required, help="a fedsql serve, e.g. grpc+tls://host:8815"
        )
        sp.add_argument("--password-file", help="read the password from this file")
        sp.add_argument("--ca", help="PEM file of the CA that signed the service's certificate")
        sp.add_argument(
            "--insecure-skip-verify",
            action="store_true",
            help="do not verify the service's TLS certificate (testing only)",
        )

    sv = sub.add_parser("serve", help="run the coordinator as an Arrow Flight SQL service")
    sv.add_argument("-c", "--config", required=True, help="FEDERATION.toml")
    sv.add_argument("--listen", help="HOST:PORT (default: [service].listen, 127.0.0.1:8815)")
    sv.set_defaults(func=cmd_serve)

    sh = sub.add_parser("shell", help="interactive SQL (embedded, or --url a fedsql serve)")
    sh.add_argument("-c", "--config", help="FEDERATION.toml (embedded coordinator)")
    sh.add_argument("--user", help="analyst name from [user.NAME]")
    add_remote(sh, required=False)
    sh.set_defaults(func=cmd_shell)

    pw = sub.add_parser("passwd", help="hash a password for [user.NAME] password_hash")
    pw.add_argument("--user", help="the user it is for (only shown in the hint)")
    pw.set_defaults(func=cmd_passwd)

    qs = sub.add_parser("queries", help="running and recent queries of a fedsql serve")
    qs.add_argument("--user", required=True, help="your user name at the service")
    add_remote(qs, required=True)
    qs.add_argument("--json", action="store_true", help="print JSON")
    qs.set_defaults(func=cmd_queries)

    cn = sub.add_parser("cancel", help="cancel a running query of a fedsql serve")
    cn.add_argument("query_id", help="the id `fedsql queries` shows")
    cn.add_argument("--user", required=True, help="your user name at the service")
    add_remote(cn, required=True)
    cn.set_defaults(func=cmd_cancel)

    d = sub.add_parser("demo", help="self-contained demo: three agencies on loopback")
    d.add_argument("--sf", type=float, default=0.01, help="TPC-H scale factor (default 0.01)")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    t = bsub.add_parser("tpch", help="TPC-H: federated vs a centralized DuckDB copy")
    t.add_argument("--sf", type=float, default=0.1, help="scale factor (default 0.1)")
    t.add_argument("--runs", type=int, default=3, help="runs per query; medians are reported")
    t.add_argument("--queries", help="comma-separated query numbers (default: all 22)")
    t.add_argument("--json", help="write the figures as JSON to this file")
    t.add_argument("--link", help="also model a slower link: MBPS[,RTT_MS], e.g. 100,20")
    t.add_argument(
        "--backend",
        choices=["duckdb", "files", "sqlite", "postgres"],
        default="duckdb",
        help="the agencies' databases (postgres: a throwaway "
        "PostgreSQL 15 server with one database per agency)",
    )
    t.set_defaults(func=cmd_bench_tpch)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except FedSQLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
