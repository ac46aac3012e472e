"""Benchmarks: full-protocol studies and speed comparisons; each script records its numbers in
benchmarks/results/. Run one with ``python -m benchmarks.<name>``."""
