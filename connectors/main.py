"""The connector's own command: ``fedsql-connector AGENCY.toml`` or
``python -m fedsql.connectors AGENCY.toml``.

The same node as ``fedsql connector serve AGENCY.toml``, started without the
coordinator's CLI, so an agency's host needs only ``pip install
'fedsql[connector]'`` and imports nothing of the planner, executor, client,
service or shell (``tests/test_layers.py`` starts one with those blocked).
"""

from __future__ import annotations

import argparse
import logging
import sys

from fedsql.errors import FedSQLError
from fedsql.version import __version__

LOG_FORMAT = "time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"  # logfmt


def run(agency_toml: str) -> int:
    """Load, check and serve one AGENCY.toml until SIGTERM/SIGINT."""
    from fedsql.connectors.config import load_agency
    from fedsql.connectors.node import serve

    serve(load_agency(agency_toml))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fedsql-connector", description="run one fedsql connector node"
    )
    p.add_argument("agency_config", metavar="AGENCY.toml", help="the agency's connector config")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    p.add_argument("--version", action="version", version=f"fedsql-connector {__version__}")
    args = p.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format=LOG_FORMAT)
    try:
        return run(args.agency_config)
    except FedSQLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
