"""The fedsql command line. The only module that prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from fedsql.errors import FedSQLError

if TYPE_CHECKING:
    from fedsql.audit.signing import Authority


def _numeric(schema: pa.Schema) -> list[bool]:
    return [
        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        for f in schema
    ]


def _rows(table: pa.Table) -> list[tuple[object, ...]]:
    """Rows as tuples, by position (two columns may share a name: SELECT a.x, b.x)."""
    return list(zip(*(c.to_pylist() for c in table.columns), strict=True))


def format_table(table: pa.Table, max_rows: int = 50) -> str:
    """An aligned text table (at most ``max_rows`` rows shown)."""
    names = table.column_names
    rows = _rows(table.slice(0, max_rows))
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    numeric = _numeric(table.schema)

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


def csv_text(table: pa.Table) -> str:
    """CSV with a header line (Arrow's writer: strings quoted)."""
    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    try:
        pacsv.write_csv(table, sink)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise FedSQLError(f"cannot write this result as CSV ({e}): use JSON or Parquet") from None
    return str(sink.getvalue().to_pybytes().decode())


def _json_value(v: object) -> str:
    """One value as JSON; a decimal as the exact JSON number (json.dumps would need a float).

    >>> _json_value({"d": Decimal("711.56"), "z": [Decimal("0E-2"), None]})
    '{"d": 711.56, "z": [0.00, null]}'
    """
    if isinstance(v, Decimal):
        return f"{v:f}" if v.is_finite() else "null"
    if isinstance(v, dict):
        items = (f"{json.dumps(str(k))}: {_json_value(x)}" for k, x in v.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_json_value(x) for x in v) + "]"
    return json.dumps(v, default=str)


def json_lines(table: pa.Table) -> str:
    """One JSON object a row (JSON Lines), decimals as numbers."""
    return "".join(_json_value(r) + "\n" for r in table.to_pylist())


def markdown_table(table: pa.Table) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""

    def esc(v: object) -> str:
        return _cell(v).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(esc(n) for n in table.column_names) + " |",
        "|" + "|".join("---:" if num else "---" for num in _numeric(table.schema)) + "|",
    ]
    lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in _rows(table)]
    return "\n".join(lines) + "\n"


# `fedsql shell`'s result modes besides "table" (.mode)
RESULT_FORMATS = {"csv": csv_text, "json": json_lines, "markdown": markdown_table}


def _write_result(table: pa.Table, fmt: str, output: str | None, max_rows: int = 1000) -> None:
    if fmt == "table":
        limit = table.num_rows if output or max_rows <= 0 else max_rows
        text = format_table(table, max_rows=limit)
        if limit < table.num_rows:  # say so, and how to get every row
            text = text.rsplit("\n", 1)[0] + (
                f"\n… {limit:,} of {table.num_rows:,} rows shown; "
                "--max-rows N (0: all) or --format csv for all"
            )
        _emit(text + "\n", output)
    elif fmt == "csv":
        _emit(csv_text(table), output)
    elif fmt == "json":
        _emit(json_lines(table), output)
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
    return (
        f"{st.result_rows} rows in {st.total_seconds:.3f} s (plan {st.plan_seconds:.3f} s); "
        + st.per_agency(seconds=True)
    )


def _sql_arg(args: argparse.Namespace) -> str:
    if args.sql == "-":
        return sys.stdin.read()
    if args.file:
        return Path(args.file).read_text()
    if args.sql is None:
        raise FedSQLError("give the SQL as an argument, '-' for standard input, or -f FILE")
    return str(args.sql)


def _write_stream(reader: pa.RecordBatchReader, fmt: str, output: str) -> None:
    """Write batches as they arrive: memory stays at a few batches, not the result."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(output, reader.schema) as pw:
            for batch in reader:
                pw.write_batch(batch)
    else:
        import pyarrow.csv as pacsv

        with pacsv.CSVWriter(output, reader.schema) as cw:
            for batch in reader:
                cw.write_batch(batch)


def _return_big_buffers_to_the_os() -> None:
    """glibc keeps freed multi-megabyte buffers (IPC chunks, batches) in its heap
    once its adaptive mmap threshold has grown; a fixed threshold hands them back,
    so a streamed export's RSS stays flat (mallopt(3), M_MMAP_THRESHOLD)."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 256 << 10)  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        pass


def cmd_query(args: argparse.Namespace) -> int:
    import fedsql
    from fedsql.interrupt import run_cancellable

    partial = True if args.allow_partial else None
    with fedsql.connect(args.config, user=args.user, purpose=args.purpose) as fed:
        sql = _sql_arg(args)
        if args.format == "parquet" and not args.output:
            raise FedSQLError("--format parquet needs --output FILE")
        # Ctrl-C cancels the query, its merge included, and exits 130 (main).
        if args.output and args.format in ("parquet", "csv"):
            _return_big_buffers_to_the_os()
            run_cancellable(
                lambda w: _write_stream(
                    fed.stream(sql, timeout=args.timeout, allow_partial=partial, watch=w),
                    args.format,
                    args.output,
                )
            )
        else:
            table = run_cancellable(
                lambda w: fed.sql(sql, timeout=args.timeout, allow_partial=partial, watch=w)
            )
            _write_result(table, args.format, args.output, args.max_rows)
        st = fed.last_stats
        if st is not None and st.missing:
            print(
                f"warning: partial result: agencies {', '.join(st.missing)} could not be "
                "reached and contributed no rows",
                file=sys.stderr,
            )
        if not args.quiet and st is not None:
            print(_stats_line(fed), file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from fedsql import statusview
    from fedsql.config import load_federation
    from fedsql.hashkey import fingerprint
    from fedsql.policy.masks import load_hash_key

    config = load_federation(args.config)
    rows = statusview.check(config, args.timeout)
    own = fingerprint(load_hash_key(config.hash_key_file, f"{config.source}: [coordinator]"))
    print(format_table(statusview.status_table(rows)).rsplit("\n", 1)[0])
    keys = {r.name: r.status.hash_key_fingerprint for r in rows if r.status}
    for line in statusview.key_warnings(keys, own):
        print(line, file=sys.stderr)
    if args.latency:
        from fedsql.latency import latency_table

        lat = latency_table((r.name, r.status) for r in rows)
        print("\nfragment latency since each connector started (from its histogram):")
        print(format_table(lat, lat.num_rows).rsplit("\n", 1)[0] if lat.num_rows else "none yet")
    down = [r.name for r in rows if not r.up]
    if down:
        for line in statusview.down_details(rows):
            print(line, file=sys.stderr)
        print(
            f"{len(down)} of {len(rows)} agencies down ({', '.join(down)}): see above",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import fedsql

    with fedsql.connect(args.config, user=args.user, purpose=args.purpose) as fed:
        print(fed.explain(_sql_arg(args), analyze=args.analyze))
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    import fedsql
    from fedsql.policy.shown import federation_rules, table_names
    from fedsql.sqltypes import sql_type

    with fedsql.connect(args.config, user=args.user) as fed:
        who = f"user {fed.principal.user}" + (
            f" (roles: {', '.join(fed.principal.roles)})" if fed.principal.roles else ""
        )
        print(f"Tables as {who} sees them; 'mask' is what you get, 'rules' what is configured.")
        keys = {a: c.hash_key_fingerprint for a, c in fed.catalog.catalogs.items()}
        from fedsql.statusview import key_warnings

        for warning in key_warnings(keys):
            print(warning, file=sys.stderr)
        for agency, cat in fed.catalog.catalogs.items():
            print(f"\n{agency}: backend {cat.backend}, hash key {keys[agency] or 'none'}")
            for t in cat.tables:
                est = f"~{t.row_count_estimate} rows" if t.row_count_estimate >= 0 else "rows: ?"
                print(f"\n{agency}.{t.full_name}  ({est}, backend {cat.backend})")
                for f in t.row_filters:
                    state = "applies to you" if t.row_filtered else "not for you"
                    shown = f if f.startswith("row filter") else f"row filter: {f}"
                    print(f"  {shown}  ({state})")
                masks = dict(t.masks)
                rules: dict[str, list[str]] = {}
                for c, r in t.mask_rules:
                    rules.setdefault(c, []).append(r)
                names = table_names(agency, t.schema, t.name, cat.default_schema)
                policy, roles = fed.config.policy, fed.principal.roles
                columns = t.arrow_schema.names
                for line in federation_rules(policy, roles, names, columns, masks, rules):
                    print(f"  {line}")
                rows = [
                    (
                        f.name,
                        sql_type(f.type),
                        masks.get(f.name, "-"),
                        "; ".join(rules.get(f.name, [])),
                    )
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
    from fedsql.connectors.main import run  # the connector's own entry (fedsql-connector)

    return run(args.agency_config)


def cmd_connector_check(args: argparse.Namespace) -> int:
    from fedsql.connectors.check import FAIL, check, line, summary

    found = []
    for f in check(args.agency_config):
        print(line(f), flush=True)
        found.append(f)
    print(summary(found))
    return 1 if any(f.status == FAIL for f in found) else 0


def cmd_certs_init(args: argparse.Namespace) -> int:
    from fedsql import certs

    ca = certs.init_ca(Path(args.dir), name=args.name, days=args.days)
    print(f"federation CA '{ca.subject}' valid until {ca.not_after:%Y-%m-%d}:")
    print(f"  {ca.cert}  (give this to every connector and coordinator)")
    print(f"  {ca.key}  (the CA's private key: keep it offline; it signs every node)")
    print(f"next: fedsql certs issue --ca {args.dir} connector NAME")
    return 0


def cmd_certs_issue(args: argparse.Namespace) -> int:
    from fedsql import certs

    out = Path(args.out or args.ca)
    got = certs.issue(
        Path(args.ca),
        args.kind,
        args.name,
        out,
        hosts=tuple(args.host or ()),
        days=args.days,
        local=args.local,
    )
    ca = Path(args.ca) / certs.CA_CERT
    print(
        f"{args.kind} certificate '{got.subject}' (serial {got.serial}) "
        f"valid until {got.not_after:%Y-%m-%d}:"
    )
    print(f"  {got.cert}\n  {got.key}  (private key, mode 0600: never share it)")
    if args.kind == "service":
        print("in FEDERATION.toml (the analysts' tools trust the CA with --ca):")
        print(f'  [service.tls]\n  cert = "{got.cert}"\n  key = "{got.key}"')
        print(f"analysts: fedsql shell --url grpc+tls://{got.subject}:8815 --ca {ca} --user NAME")
    elif args.kind == "connector":
        print("in the connector's AGENCY.toml:")
        print(f'  [connector.tls]\n  cert = "{got.cert}"\n  key = "{got.key}"')
        print(f'  client_ca = "{ca}"')
    else:
        print("in FEDERATION.toml:")
        print(f'  [coordinator.tls]\n  ca = "{ca}"\n  cert = "{got.cert}"\n  key = "{got.key}"')
        print("and in each connector's AGENCY.toml, under [connector]:")
        print(f'  allowed_coordinators = ["{got.subject}"]')
    return 0


def cmd_certs_revoke(args: argparse.Namespace) -> int:
    from fedsql import certs

    r = certs.revoke(Path(args.ca), args.what, Path(args.out) if args.out else None)
    who = f" ('{r.name}')" if r.name else ""
    print(f"serial {r.serial}{who} {'was already' if r.already else 'is now'} revoked")
    print(f"CRL written: {r.crl}")
    print("give it to every connector ([connector.tls] crl = ...); they reload it within seconds")
    return 0


def cmd_certs_crl(args: argparse.Namespace) -> int:
    from fedsql import certs

    out = certs.write_crl(Path(args.ca), Path(args.out) if args.out else None, days=args.days)
    print(f"CRL written: {out} (valid {args.days} days; write it again before then)")
    return 0


def cmd_certs_show(args: argparse.Namespace) -> int:
    from fedsql import certs

    for path in args.cert:
        print(certs.describe(Path(path)))
    return 0


def _audit_paths(args: argparse.Namespace) -> tuple[list[Path], Authority | None]:
    from fedsql.audit.signing import Authority

    paths = [Path(p) for p in args.log]
    for p in paths:
        if not p.exists():
            raise FedSQLError(f"{p}: no such audit log or directory")
    ca = getattr(args, "ca", None)
    return paths, (Authority.load(Path(ca), "--ca") if ca else None)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from fedsql.audit.verify import chains, describe, verify_chain

    paths, authority = _audit_paths(args)
    found = chains(paths)
    if not found:
        raise FedSQLError("no audit logs in " + ", ".join(map(str, paths)))
    ok = True
    for files in found:
        v = verify_chain(files, authority)
        print("\n".join(describe(v)))
        ok = ok and v.ok
    return 0 if ok else 1


def cmd_audit_reconcile(args: argparse.Namespace) -> int:
    from fedsql.audit.reconcile import reconcile

    paths, authority = _audit_paths(args)
    r = reconcile(paths, authority)
    for line in r.summary:
        print(line)
    print(f"{r.matched} receipts match their agencies' lines")
    for f in r.findings:
        print(f"{'PROBLEM' if f.error else 'note'} {f.kind}: {f.message}")
    print("reconciled: both sides agree" if r.ok else "NOT reconciled: see the problems above")
    return 0 if r.ok else 1


def cmd_audit_report(args: argparse.Namespace) -> int:
    from fedsql.audit import report

    paths, _ = _audit_paths(args)
    try:
        since = report.parse_since(args.since) if args.since else None
    except ValueError as e:
        raise FedSQLError(str(e)) from None
    keep = report.Filters(args.user, args.agency, since, args.table)
    items = [a for a in report.accesses(paths) if keep.keep(a)]
    rows = report.summary(items)
    chart = report.bar_chart(items)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=list(report.COLUMNS))
        w.writeheader()
        w.writerows(rows)
    else:
        table = pa.Table.from_pylist(rows) if rows else pa.table({c: [] for c in report.COLUMNS})
        print(format_table(table, max_rows=len(rows) or 1))
    # The chart on stdout beside a table; on stderr beside CSV/JSON, which stay parsable.
    print("\n" + chart, file=sys.stdout if args.format == "table" else sys.stderr)
    if args.chart:
        why = report.png_chart(items, Path(args.chart))
        print(why or f"chart written to {args.chart}", file=sys.stderr)
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
    import os

    # gRPC's own log lines (a failed TLS handshake at INFO) would come before our one
    # error line, which says the same in words; GRPC_VERBOSITY=INFO brings them back.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from fedsql.service.remote import Remote

    if not args.user:
        raise FedSQLError("--url needs --user NAME (a [user.NAME] of the service)")
    return Remote(
        args.url,
        args.user,
        _password(args),
        ca_file=Path(args.ca) if args.ca else None,
        verify=not args.insecure_skip_verify,
        purpose=getattr(args, "purpose", None),
        connect_timeout=args.connect_timeout,
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
    from fedsql.execute import human_bytes

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
            "started": [_when(r.get("started")) for r in rows],
            "time": [_duration(r["seconds"]) for r in rows],
            "rows": ["" if r["rows"] is None else f"{r['rows']:,}" for r in rows],
            "agencies": [
                ", ".join(
                    f"{a} {v['rows']} rows/{human_bytes(v['bytes'])}"
                    for a, v in r["agencies"].items()
                )
                for r in rows
            ],
            "error": [_cut(r.get("error") or "", ERROR_SHOWN) for r in rows],
            "sql": [r["sql"][:60] for r in rows],
        }
    )
    print(format_table(table, max_rows=1000))
    return 0


ERROR_SHOWN = 120  # characters of a failed query's error in `fedsql queries` (--json: all)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _when(epoch: float | None) -> str:
    """A service time (seconds since the epoch) as local time; the date only if not today."""
    if epoch is None:
        return ""
    t = time.localtime(epoch)
    today = time.localtime()[:3] == t[:3]
    return time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S", t)


def _duration(seconds: float) -> str:
    """
    >>> [_duration(s) for s in (0.0042, 1.25, 75, 3725)]
    ['4 ms', '1.25 s', '1 min 15 s', '1 h 2 min']
    """
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m} min {s} s"
    return f"{m // 60} h {m % 60} min"


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

    purpose = f" (purpose: {args.purpose})" if args.purpose else ""
    if args.url:
        remote = _remote(args)
        sh = shell.Shell(shell.RemoteBackend(remote), format_table, formats=RESULT_FORMATS)
        banner = (
            f"fedsql shell: {args.user} at {remote.url}{purpose}. "
            ".help for help; end statements with ;"
        )
        try:
            return shell.run(sh, banner)
        finally:
            remote.close()
    if not args.config:
        raise FedSQLError("give -c FEDERATION.toml (embedded) or --url URL (a fedsql serve)")
    import fedsql

    with fedsql.connect(args.config, user=args.user, purpose=args.purpose) as fed:
        sh = shell.Shell(shell.EmbeddedBackend(fed), format_table, formats=RESULT_FORMATS)
        who = f" as {args.user}" if args.user else ""
        banner = f"fedsql shell{who}: {args.config}{purpose}. .help for help; end statements with ;"
        return shell.run(sh, banner)


def cmd_demo(args: argparse.Namespace) -> int:
    from fedsql.demo import run_demo

    run_demo(format_table, sf=args.sf)
    return 0


def _peers_arg(args: argparse.Namespace) -> tuple[str, ...]:
    if args.backend != "postgres" or args.peers == "none":
        return ()
    if args.peers == "auto":  # postgres_fdw needs minutes per query beyond SF 0.1
        return ("attach", "fdw") if args.sf <= 0.1 else ("attach",)
    chosen = tuple(p.strip() for p in args.peers.split(",") if p.strip())
    unknown = [p for p in chosen if p not in ("attach", "fdw")]
    if unknown:
        raise FedSQLError(f"unknown peer {unknown[0]!r}; choose from attach, fdw, auto, none")
    return chosen


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
        peers=_peers_arg(args),
        pg_locale=None if args.pg_locale == "default" else args.pg_locale,
    )
    print()
    print(tpch.summary(report))
    if args.link:
        print(tpch.link_summary(report, tpch.Link.parse(args.link)))
    if args.json:
        print(f"figures written to {args.json}")
    return 0 if all(q.ok for q in report.queries) else 1


def cmd_bench_scenario(args: argparse.Namespace) -> int:
    from fedsql.bench import scenario as bench_scenario

    report = bench_scenario.run(
        args.people, runs=args.runs, json_path=Path(args.json) if args.json else None
    )
    print()
    print(bench_scenario.summary(report))
    if args.json:
        print(f"figures written to {args.json}")
    return 0 if all(q.auditor_equals_plain for q in report.queries) else 1


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


def cmd_lines(args: argparse.Namespace) -> int:
    """Commands whose module words the output (``args.lines``): print it."""
    for line in args.lines(args):
        print(line)
    return 0


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    # key=value lines (logfmt); messages carry query_id=... where they concern a query
    logging.basicConfig(
        level=level, format="time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
    )
    try:
        return int(args.func(args))
    except FedSQLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Reaching here, the query's calls were cancelled and its agencies told to stop.
        print("interrupted: the query was cancelled", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
