"""dmlscope's deep-metric-learning core: pure torch/numpy, importable without the server."""
import os

# Cores here are shared (server, training worker, tests): OpenMP threads that spin while they wait made torch
# 10–40× slower under contention on 2 cores; waiting passively costs little when the cores are free. It must be
# set before torch loads, so the packages set it on import (a user's own setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
