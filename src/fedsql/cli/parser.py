"""The argument parser of every `fedsql` command."""

from __future__ import annotations

import argparse

from fedsql.cli.admin import (
    cmd_audit_reconcile,
    cmd_audit_report,
    cmd_audit_verify,
    cmd_certs_crl,
    cmd_certs_init,
    cmd_certs_issue,
    cmd_certs_revoke,
    cmd_certs_show,
    cmd_connector_check,
    cmd_serve_connector,
)
from fedsql.cli.bench import cmd_bench_scenario, cmd_bench_tpch, cmd_demo, cmd_lines
from fedsql.cli.results import cmd_catalog, cmd_explain, cmd_query, cmd_status
from fedsql.cli.service import cmd_cancel, cmd_passwd, cmd_queries, cmd_serve, cmd_shell


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedsql", description="Federated SQL that leaves data in place."
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)

    def add_sql(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", required=True, help="FEDERATION.toml")
        sp.add_argument("--user", help="analyst name from [user.NAME] in the config")
        sp.add_argument("--purpose", help="why you run the query (in every agency's audit log)")
        sp.add_argument("-f", "--file", help="read the SQL from this file")
        sp.add_argument("sql", nargs="?", help="the SQL text ('-' reads standard input)")

    q = sub.add_parser("query", help="run a federated query")
    add_sql(q)
    q.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    q.add_argument("-o", "--output", help="write the result to this file")
    q.add_argument(
        "--max-rows",
        type=int,
        default=1000,
        metavar="N",
        help="rows a table shows on the terminal (default 1000; 0: all; -o and csv: all)",
    )
    q.add_argument(
        "--timeout", type=float, help="deadline in seconds (default: [coordinator] timeout_seconds)"
    )
    q.add_argument(
        "--allow-partial",
        action="store_true",
        help="if an agency cannot be reached, answer without its rows (with a warning)",
    )
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

    st = sub.add_parser("status", help="each connector's health, version, latency and load")
    st.add_argument("-c", "--config", required=True, help="FEDERATION.toml")
    st.add_argument("--timeout", type=float, default=5.0, help="seconds to wait per connector")
    st.add_argument(
        "--latency", action="store_true", help="fragment latency per agency and outcome"
    )
    st.set_defaults(func=cmd_status)

    c = sub.add_parser("connector", help="connector node commands")
    csub = c.add_subparsers(dest="connector_command", required=True)
    s = csub.add_parser("serve", help="run one connector node")
    s.add_argument("agency_config", help="AGENCY.toml")
    s.set_defaults(func=cmd_serve_connector)
    ck = csub.add_parser(
        "check", help="a dry run: config, certificates, audit log, backend, database role"
    )
    ck.add_argument("agency_config", help="AGENCY.toml")
    ck.set_defaults(func=cmd_connector_check)

    ce = sub.add_parser("certs", help="the federation's CA and node certificates (mutual TLS)")
    cesub = ce.add_subparsers(dest="certs_command", required=True)
    ci = cesub.add_parser("init", help="create a federation CA in DIR (ca.crt, ca.key)")
    ci.add_argument("dir", help="directory for ca.crt and ca.key")
    ci.add_argument("--name", default="fedsql federation CA", help="the CA's common name")
    ci.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    ci.set_defaults(func=cmd_certs_init)
    cs = cesub.add_parser("issue", help="a certificate for a connector, coordinator or service")
    cs.add_argument("--ca", required=True, help="the CA directory (from certs init)")
    cs.add_argument("kind", choices=["connector", "coordinator", "service"])
    cs.add_argument(
        "name",
        help="connector: its [connector].name; coordinator: its identity (CN); "
        "service: the `fedsql serve` host name analysts connect to",
    )
    cs.add_argument(
        "--host", action="append", help="connector/service: extra DNS name or IP (repeat)"
    )
    cs.add_argument("--out", help="directory for NAME.crt and NAME.key (default: the CA's)")
    cs.add_argument("--days", type=int, default=397, help="validity (default 397)")
    cs.add_argument(
        "--local",
        action="store_true",
        help="local development: also name localhost and 127.0.0.1 (allows loopback --host)",
    )
    cs.set_defaults(func=cmd_certs_issue)
    cr = cesub.add_parser("revoke", help="revoke a certificate and write the CA's CRL")
    cr.add_argument("--ca", required=True, help="the CA directory (from certs init)")
    cr.add_argument("what", help="the certificate file, or its serial in hex (certs show)")
    cr.add_argument("--out", help="where to write the CRL (default: CA_DIR/ca.crl)")
    cr.set_defaults(func=cmd_certs_revoke)
    cc = cesub.add_parser("crl", help="write the CA's CRL (every revoked serial), signed")
    cc.add_argument("--ca", required=True, help="the CA directory (from certs init)")
    cc.add_argument("--out", help="where to write it (default: CA_DIR/ca.crl)")
    cc.add_argument("--days", type=int, default=30, help="validity (default 30)")
    cc.set_defaults(func=cmd_certs_crl)
    csh = cesub.add_parser("show", help="subject, issuer, usage and validity of certificates")
    csh.add_argument("cert", nargs="+", help="PEM certificate file(s)")
    csh.set_defaults(func=cmd_certs_show)

    au = sub.add_parser("audit", help="connector and coordinator audit logs")
    ausub = au.add_subparsers(dest="audit_command", required=True)
    av = ausub.add_parser("verify", help="check audit logs' chains, signatures and certificates")
    av.add_argument("log", nargs="+", help="audit log files or directories (rotated files too)")
    av.add_argument("--ca", help="the federation CA (ca.crt): signers must be its certificates")
    av.set_defaults(func=cmd_audit_verify)
    ar = ausub.add_parser(
        "reconcile", help="match coordinators' receipts and connectors' lines, both ways"
    )
    ar.add_argument("log", nargs="+", help="connector and coordinator logs, or directories")
    ar.add_argument("--ca", help="the federation CA (ca.crt)")
    ar.set_defaults(func=cmd_audit_reconcile)
    ap = ausub.add_parser("report", help="who accessed which agency's tables, how often, why")
    ap.add_argument("log", nargs="+", help="connector and/or coordinator logs, or directories")
    ap.add_argument("--user", help="only this user")
    ap.add_argument("--agency", help="only this agency")
    ap.add_argument("--since", help="only from this ISO date or time (UTC unless given)")
    ap.add_argument("--table", help="only this table (name or agency.name)")
    ap.add_argument("--format", choices=["table", "csv", "json"], default="table")
    ap.add_argument("--chart", help="also draw accesses over time to this PNG (matplotlib)")
    ap.set_defaults(func=cmd_audit_report)

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
        sp.add_argument(
            "--connect-timeout",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="how long the sign-in may take (default 10)",
        )

    sv = sub.add_parser("serve", help="run the coordinator as an Arrow Flight SQL service")
    sv.add_argument("-c", "--config", required=True, help="FEDERATION.toml")
    sv.add_argument("--listen", help="HOST:PORT (default: [service].listen, 127.0.0.1:8815)")
    sv.set_defaults(func=cmd_serve)

    sh = sub.add_parser("shell", help="interactive SQL (embedded, or --url a fedsql serve)")
    sh.add_argument("-c", "--config", help="FEDERATION.toml (embedded coordinator)")
    sh.add_argument("--user", help="analyst name from [user.NAME]")
    sh.add_argument(
        "--purpose",
        help="why you query, sent with every query to the agencies' audit logs "
        "(also .purpose TEXT in the shell)",
    )
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
    t.add_argument(
        "--peers",
        default="auto",
        help="with --backend postgres, also run the peers on the same agencies: "
        "attach (DuckDB 1.4 attaching them), fdw (postgres_fdw), comma-separated, or "
        "none; auto = both up to SF 0.1, attach beyond",
    )
    t.add_argument(
        "--pg-locale",
        default="default",
        help="with --backend postgres, the server's initdb --locale: default (initdb's "
        "default, the environment's locale, e.g. C.UTF-8: what agencies run) or C",
    )
    t.set_defaults(func=cmd_bench_tpch)
    sc = bsub.add_parser("scenario", help="the agency scenario: the cost of masks and row filters")
    sc.add_argument("--people", type=int, default=200_000, help="persons (default 200000)")
    sc.add_argument("--runs", type=int, default=3, help="runs per query; medians are reported")
    sc.add_argument("--json", help="write the figures as JSON (and .md) to this file")
    sc.set_defaults(func=cmd_bench_scenario)

    from fedsql import keys_cli

    keys_cli.add_parser(sub, cmd_lines)
    _verbose_everywhere(p)
    return p


def _version() -> str:
    from fedsql.version import __version__

    return f"fedsql {__version__}"


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose after the subcommand too (``fedsql query -v ...``); not given
    there, it leaves the count given before the subcommand alone."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sp in action.choices.values():
            if not any("-v" in a.option_strings for a in sp._actions):
                sp.add_argument(
                    "-v",
                    "--verbose",
                    action="count",
                    default=argparse.SUPPRESS,
                    help="more logging (-vv: debug)",
                )
            _verbose_everywhere(sp)
