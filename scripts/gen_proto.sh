#!/usr/bin/env bash
# Regenerates src/fedsql/v1/*_pb2*.py from proto/. The output is committed;
# never edit it by hand. Needs grpcio-tools (pip install -e '.[dev]').
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src --grpc_python_out=src proto/fedsql/v1/connector.proto
# The Arrow Flight SQL messages spoken by `fedsql serve` (messages only, no service).
"$PY" -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src proto/fedsql/v1/flight_sql.proto
touch src/fedsql/v1/__init__.py
