"""Benchmarks are scripts run by ci/bench, never collected by pytest."""

collect_ignore_glob = ["*.py"]
