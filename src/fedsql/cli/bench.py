"""`fedsql demo`, `bench` and the commands whose module words the output."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsql.errors import FedSQLError
from fedsql.output import format_table


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


def cmd_lines(args: argparse.Namespace) -> int:
    """Commands whose module words the output (``args.lines``): print it."""
    for line in args.lines(args):
        print(line)
    return 0
