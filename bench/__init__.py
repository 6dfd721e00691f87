"""Benchmarks: the runtime against reference bridges and ceilings (bench/run --help, bench/README.md)."""
