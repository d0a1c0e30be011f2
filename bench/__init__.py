"""Benchmarks (run the scripts directly; this makes ``bench.apps`` importable by replicas)."""
