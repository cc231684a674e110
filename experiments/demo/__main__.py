"""`python -m experiments.demo`."""
from experiments.demo import main

main()
