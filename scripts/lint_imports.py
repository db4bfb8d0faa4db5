"""Run import-linter's contracts (``[tool.importlinter]`` in pyproject.toml).

The connector lives in ``connectors/`` and is installed as ``fedsql.connectors``
(a ``package-dir`` mapping); import-linter reads a package from one directory,
so this lays ``src/fedsql`` and ``connectors/`` out as one ``fedsql`` package in
a temporary directory (copies of the sources only), puts it first on the path
and runs ``lint-imports`` there with the project's contracts.

    python scripts/lint_imports.py        # what `make test` runs
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="fedsql-layers-") as tmp:
        tree = Path(tmp) / "fedsql"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "src" / "fedsql", tree, ignore=ignore)
        shutil.copytree(ROOT / "connectors", tree / "connectors", ignore=ignore)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, os.environ.get("PYTHONPATH", "")])}
        exe = Path(sys.executable).parent / "lint-imports"
        cmd = [str(exe) if exe.exists() else "lint-imports", str(ROOT / "pyproject.toml")]
        return subprocess.run([*cmd, "--no-cache"], cwd=tmp, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
