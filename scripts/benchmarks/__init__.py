"""The measurement groups that `scripts/benchmark.py` runs, one module per group."""
