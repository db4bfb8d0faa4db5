"""Benchmarks and result comparison (the oracle is a single DuckDB)."""
