"""Benchmarks of systemprompt-scheduler: each runs as ``python -m bench.<name>`` (see bench/README.md)."""
