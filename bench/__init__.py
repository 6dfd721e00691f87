"""Benchmark of the runtime against two reference bridges (see bench/run --help)."""
