"""Shared test settings: small, deterministic, CPU-only, and no network."""
import os

import pytest

import models  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
import torch

os.environ.setdefault("DMLSCOPE_DEVICE", "cpu")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
