"""Peak RSS of exporting TPC-H lineitem to Parquet through the fedsql CLI.

    .venv/bin/python benchmarks/memory.py --sf 1

Writes benchmarks/results/memory-sf<SF>.json. The export streams: the CLI's
peak RSS stays near that of a query with a one-row result, far below the
size of the result in Arrow.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from fedsql.bench.memory import measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sf", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        figures = measure(args.sf, Path(d))
    for k, v in figures.items():
        print(f"{k:24} {v:,.1f}" if isinstance(v, float) else f"{k:24} {v}")
    out = Path(__file__).parent / "results" / f"memory-sf{args.sf:g}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
