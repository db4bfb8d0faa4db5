"""The README's two-minute tour, run as written (issue 15, item 10): its shell lines
make trade.duckdb, its trade.toml and federation.toml serve it, and its status and
query lines answer. Only the port changes (50051 may be taken on a test machine)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from fedsql.local import start_connector

README = Path(__file__).resolve().parents[1] / "README.md"


def _tour() -> str:
    text = README.read_text()
    start = text.index("## Two-minute tour")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sh(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_the_tour_works_as_written(tmp_path: Path) -> None:
    tour = _tour()
    make, use = _blocks(tour, "sh")[:2]
    for line in make.strip().splitlines():
        if line.startswith(". .venv"):
            continue  # the test runs in the venv already
        r = _sh(line, tmp_path)
        assert r.returncode == 0, f"{line}\n{r.stderr}"
    assert (tmp_path / "trade.duckdb").is_file()
    trade, federation = _blocks(tour, "toml")[:2]
    port = str(_free_port())
    (tmp_path / "trade.toml").write_text(trade.replace("50051", port))
    (tmp_path / "federation.toml").write_text(federation.replace("50051", port))
    node = start_connector(tmp_path / "trade.toml")
    try:
        lines = {ln.split("#")[0].strip() for ln in use.splitlines()}
        status = next(ln for ln in lines if ln.startswith("fedsql status"))
        r = _sh(status, tmp_path)
        assert r.returncode == 0 and "| up" in r.stdout, r.stdout + r.stderr
        query = next(ln for ln in lines if ln.startswith("fedsql query") and "--user" in ln)
        r = _sh(query, tmp_path)
        assert r.returncode == 0, r.stderr
        assert "1-URGENT" in r.stdout and "5-LOW" in r.stdout
    finally:
        node.stop()
