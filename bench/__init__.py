"""Benchmarks, run on demand: `python -m bench` (see bench/run.py)."""
