"""Benchmarks: `make bench` (see bench/RESULTS.md). Not part of the test suite."""
