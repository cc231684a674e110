"""`python -m experiments.validate` (flags and usage: experiments/validate/__init__.py)."""
from experiments import cli, validate

validate.define_flags()
cli.run(validate.main)
