"""`python -m experiments.bench` (flags and usage: experiments/bench/__init__.py)."""
from experiments import bench, cli

cli.run(bench.main)
