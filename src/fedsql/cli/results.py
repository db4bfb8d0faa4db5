"""`fedsql query`, `status`, `explain` and `catalog`: a federation's answers, written out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa

from fedsql.errors import FedSQLError
from fedsql.output import csv_text, format_table, json_lines


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
