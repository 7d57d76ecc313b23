"""The per-epoch refresh of a data-estimated distance (relative Mahalanobis' M = (Σ + εI)⁻¹) in training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import RunConfig
from models.progress import Cancelled
from models.refresh import refresh_distance
from models.checkpoint import load_checkpoint
from models.inference import load_model
from models.runfolder import CHECKPOINT
from models.trainer import build_distance, build_model, train

TINY = {"embedding_dim": 8, "epochs": 2, "steps_per_epoch": 3, "classes_per_batch": 2, "samples_per_class": 4,
        "device": "cpu", "amp": False, "distance": {"name": "relative_mahalanobis"}}


def shrunk_inverse_covariance(x: torch.Tensor, shrinkage: float) -> torch.Tensor:
    x = x.double()
    centred = x - x.mean(dim=0)
    cov = centred.T @ centred / (len(x) - 1)
    return torch.linalg.inv(cov + shrinkage * torch.trace(cov) / len(cov) * torch.eye(len(cov), dtype=x.dtype))


def test_refresh_uses_the_eval_embeddings_of_a_seeded_training_sample(train_split, monkeypatch) -> None:
    import models.refresh

    monkeypatch.setattr(models.refresh, "REFRESH_SAMPLE", 10)  # a strict subset, so the sample itself matters
    image_set, train_idx = train_split
    config = RunConfig(**TINY)
    pixels = image_set.pixels(16)
    model = build_model(config, image_set.channels, 16, image_set.mean, image_set.std).train()
    distance = build_distance(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_state = torch.get_rng_state()
    refresh_distance(model, distance, pixels, train_idx, seed=3, epoch=1, device=torch.device("cpu"))
    sample = np.sort(np.random.default_rng([3, 1]).choice(train_idx, size=10, replace=False))
    with torch.no_grad():
        expected = shrunk_inverse_covariance(model.eval().embed(torch.from_numpy(pixels[sample])), 0.1)
    torch.testing.assert_close(distance.metric_matrix().double(), expected.float().double(), rtol=1e-4, atol=1e-5)
    model.train()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm stats untouched
    assert torch.equal(torch.get_rng_state(), rng_state)  # the run's random stream untouched
    fixed = build_distance(RunConfig(**{**TINY, "distance": {"name": "relative_mahalanobis",
                                                             "params": {"metric": "identity"}}}))
    refresh_distance(model, fixed, pixels, train_idx, seed=3, epoch=1, device=torch.device("cpu"))  # a no-op
    refresh_distance(model, build_distance(RunConfig(device="cpu")), pixels, train_idx, 3, 1, torch.device("cpu"))


def test_training_refreshes_M_keeps_it_in_the_checkpoint_and_resumes_exactly(train_split, tmp_path: Path) -> None:
    image_set, train_idx = train_split
    config = RunConfig(**TINY)
    result = train(config, image_set, train_idx, tmp_path / "a")
    M = result.distance.metric_matrix().detach()
    assert not torch.allclose(M / M[0, 0], torch.eye(8))  # refreshed, not the initial identity
    torch.testing.assert_close(load_model(tmp_path / "a", device="cpu").distance.metric_matrix(), M)
    # M of the last epoch = from the model as it was at that epoch's start, i.e. the epoch-1 checkpoint's model
    calls = iter(range(10_000))
    with pytest.raises(Cancelled):
        train(config, image_set, train_idx, tmp_path / "b", should_cancel=lambda: next(calls) >= 4)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT)["epoch"] == 1
    at_epoch_1 = load_model(tmp_path / "b", device="cpu")
    pixels = image_set.pixels(16)
    with torch.no_grad():
        expected = shrunk_inverse_covariance(at_epoch_1.model.embed(torch.from_numpy(pixels[np.sort(train_idx)])), 0.1)
    torch.testing.assert_close(M.double(), expected, rtol=1e-3, atol=1e-4)
    resumed = train(config, image_set, train_idx, tmp_path / "b")
    torch.testing.assert_close(resumed.distance.metric_matrix(), M, rtol=0, atol=0)
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
