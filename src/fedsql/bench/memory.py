"""Peak memory of a streamed export: ``fedsql query --format parquet -o FILE``
of ``SELECT * FROM big.lineitem`` through a real connector, measured as the
peak resident set size (VmHWM, Linux) of the CLI process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fedsql.local import generate_tpch, start_connector, write_agency_toml

EXPORT = "SELECT * FROM big.lineitem"
BASELINE = "SELECT count(*) FROM big.lineitem"


@dataclass(frozen=True, slots=True)
class Peak:
    returncode: int
    peak_bytes: int
    seconds: float
    stderr: str


def peak_rss(cmd: list[str], poll: float = 0.02) -> Peak:
    """Run ``cmd``; its peak RSS from /proc/PID/status VmHWM (the kernel's high-water
    mark, so sampling late still sees the peak)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status = Path(f"/proc/{proc.pid}/status")
    peak = 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (OSError, ValueError):
            pass
        time.sleep(poll)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    return Peak(proc.returncode, peak, time.perf_counter() - t0, err)


def big_agency(sf: float, work: Path) -> Path:
    """AGENCY.toml of 'big': TPC-H lineitem at ``sf`` as one Parquet file."""
    parquet = generate_tpch(sf, Path.home() / ".cache" / "fedsql" / f"tpch-sf{sf:g}")
    d = work / "big-files"
    d.mkdir(parents=True, exist_ok=True)
    dst = d / "lineitem.parquet"
    if not dst.exists():
        try:
            os.link(parquet / "lineitem.parquet", dst)
        except OSError:
            shutil.copyfile(parquet / "lineitem.parquet", dst)
    return write_agency_toml(work / "big.toml", "big", "files", d)


def measure(sf: float, work: Path, query: str = EXPORT) -> dict[str, float]:
    """Peak RSS of the export and of a baseline: the same command with a one-row result."""
    import pyarrow.parquet as pq

    c = start_connector(big_agency(sf, work))
    try:
        cfg = work / "federation.toml"
        cfg.write_text(f'[[connector]]\nname = "big"\naddress = "{c.address}"\ninsecure = true\n')
        fedsql = [sys.executable, "-m", "fedsql", "query", "-q", "-c", str(cfg)]
        # The same command with a one-row result: what the process needs anyway.
        base = peak_rss([*fedsql, "--format", "parquet", "-o", str(work / "one.parquet"), BASELINE])
        out = work / "lineitem.parquet"
        export = peak_rss([*fedsql, "--format", "parquet", "-o", str(out), query])
        for r in (base, export):
            if r.returncode != 0:
                raise RuntimeError(f"fedsql query failed: {r.stderr.strip()}")
        meta = pq.read_metadata(out)
        arrow_bytes = pq.read_table(out).nbytes
        return {
            "sf": sf,
            "rows": meta.num_rows,
            "result_arrow_mb": arrow_bytes / 1e6,
            "parquet_mb": out.stat().st_size / 1e6,
            "baseline_peak_rss_mb": base.peak_bytes / 1e6,
            "export_peak_rss_mb": export.peak_bytes / 1e6,
            "export_extra_mb": (export.peak_bytes - base.peak_bytes) / 1e6,
            "export_seconds": export.seconds,
        }
    finally:
        c.stop()
