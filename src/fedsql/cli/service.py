"""`fedsql serve`, `passwd`, `queries`, `cancel` and `shell`: the service and its clients."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow as pa

from fedsql.errors import FedSQLError
from fedsql.output import RESULT_FORMATS, format_table


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
