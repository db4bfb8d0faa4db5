"""``fedsql keys``: the federation's hash key (what ``hash`` masks are keyed with).

``keys init FILE`` makes one (random, 256 bits, mode 0600); ``keys fingerprint
FILE`` names a key file as connectors report theirs (``fedsql status``), to
check that two agencies hold the same key without showing it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from fedsql.hashkey import fingerprint, make_key_file
from fedsql.policy.masks import load_hash_key


def init(args: argparse.Namespace) -> list[str]:
    """Make the key; the lines to print."""
    path = Path(args.file)
    fp = make_key_file(path, force=args.force)
    return [
        f"federation hash key written to {path} (mode 0600; fingerprint {fp})",
        "copy this same file to every agency (never make one per agency: different keys",
        "hash equal IDs differently and joins on them match nothing), and name it:",
        f'  in each AGENCY.toml, under [connector]:   hash_key_file = "{path.resolve()}"',
        f'  in FEDERATION.toml, under [coordinator]:  hash_key_file = "{path.resolve()}"',
        "`fedsql status` shows each agency's fingerprint and warns when they differ",
    ]


def show_fingerprint(args: argparse.Namespace) -> list[str]:
    lines = []
    for name in args.file:
        key = load_hash_key(Path(name), name)
        lines.append(f"{name}: {fingerprint(key)}")
    return lines


def add_parser(sub: argparse._SubParsersAction, run: Callable[..., int]) -> None:  # type: ignore[type-arg]
    """``fedsql keys init|fingerprint``: ``run`` prints what ``args.lines(args)`` says."""
    k = sub.add_parser("keys", help="the federation hash key (for 'hash' masks)")
    k.set_defaults(func=run)
    ksub = k.add_subparsers(dest="keys_command", required=True)
    ki = ksub.add_parser("init", help="make a new random federation hash key in FILE")
    ki.add_argument("file", help="where to write it, e.g. federation.key")
    ki.add_argument("--force", action="store_true", help="replace an existing key file")
    ki.set_defaults(lines=init)
    kf = ksub.add_parser("fingerprint", help="the fingerprint of key files (never the key)")
    kf.add_argument("file", nargs="+", help="hash key files")
    kf.set_defaults(lines=show_fingerprint)
