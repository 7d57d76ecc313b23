"""dmlscope's deep-metric-learning core: pure torch/numpy, importable without the server."""
