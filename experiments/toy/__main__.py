"""`python -m experiments.toy`."""
from experiments.toy import main

main()
