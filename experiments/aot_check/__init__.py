"""`make aot-check`: every program compiled for GPUs and TPUs on a machine without one, what each costs, and a cost
model of GPU time fitted to a real run (`python -m experiments.aot_check`; see its __main__)."""
