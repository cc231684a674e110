import os

# Keep the test process on the CPU, with one device (the multi-device test starts its own subprocess).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
