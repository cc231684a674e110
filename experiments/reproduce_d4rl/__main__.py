"""`python -m experiments.reproduce_d4rl` (flags and usage: experiments/reproduce_d4rl/__init__.py)."""
from experiments import cli, reproduce_d4rl

reproduce_d4rl.define_flags()
cli.run(reproduce_d4rl.main)
