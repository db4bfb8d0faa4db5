"""The fedsql command line. Only the CLI and the shell print.

One module per family of commands (results, admin, service, bench), the parser in
``parser.py``; result formatting is ``fedsql.output``."""

from __future__ import annotations

import logging
import sys

from fedsql.cli.parser import build_parser
from fedsql.errors import FedSQLError
from fedsql.output import format_table

# What `pip install fedsql[coordinator]` adds (pyproject's coordinator extra).
COORDINATOR_EXTRAS = frozenset({"prompt_toolkit"})


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
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] not in COORDINATOR_EXTRAS:
            raise
        # A connector-only install (fedsql[connector]) asked for an analyst's command.
        print(
            f"error: this command needs {e.name.split('.')[0]}, which comes with the "
            "coordinator's extras: pip install 'fedsql[coordinator]'",
            file=sys.stderr,
        )
        return 1


__all__ = ["build_parser", "format_table", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
