"""`fedsql connector`, `certs` and `audit`: what an agency runs and checks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from fedsql.errors import FedSQLError

if TYPE_CHECKING:
    from fedsql.audit.signing import Authority

from fedsql.output import format_table


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
