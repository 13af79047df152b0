"""Benchmarks that print figures and assert nothing (run with `python -m streams.benchmarks.X`)."""
