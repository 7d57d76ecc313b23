"""The training loop: determinism, exact resume after an interrupt, cancel, divergence, checkpoint contents."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import models.trainer as trainer
from models.config import RunConfig
from models.progress import Cancelled, Progress
from models.checkpoint import load_checkpoint
from models.runfolder import CHECKPOINT, HISTORY
from models.trainer import TrainingDiverged, select_device, train

TINY = {"embedding_dim": 8, "epochs": 3, "steps_per_epoch": 3, "classes_per_batch": 2, "samples_per_class": 4,
        "device": "cpu", "amp": False}
# Every kind of trained state: flow + dueling branch (det), a learnable distance L, proxies, Adam moments.
FLOW_MAHALANOBIS = {**TINY, "flow": {"enabled": True, "depth": 2, "hidden": 8, "dueling": True},
                    "distance": {"name": "mahalanobis"}, "regularizers": [{"name": "det", "weight": 0.05},
                                                                           {"name": "density", "weight": 0.1}]}
PROXY = {**TINY, "loss": {"name": "proxy_anchor"}, "miner": {"name": "none"}}


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [FLOW_MAHALANOBIS, PROXY], ids=["flow+mahalanobis+det", "proxy_anchor"])
def test_same_seed_same_weights_and_resume_after_interrupt_is_exact(train_split, tmp_path: Path, overrides) -> None:
    image_set, train_idx = train_split
    config = RunConfig(**overrides)
    first = train(config, image_set, train_idx, tmp_path / "a")
    again = train(config, image_set, train_idx, tmp_path / "b")
    _assert_same(_weights(first.model), _weights(again.model))
    _assert_same(_weights(first.criterion), _weights(again.criterion))

    # Interrupt in the middle of epoch 2 (after 4 steps), then resume from the epoch-1 checkpoint.
    calls = iter(range(10_000))
    with pytest.raises(Cancelled):
        train(config, image_set, train_idx, tmp_path / "c", should_cancel=lambda: next(calls) >= 4)
    assert load_checkpoint(tmp_path / "c" / CHECKPOINT)["epoch"] == 1
    torch.manual_seed(1234)  # whatever the process did in between must not matter
    np.random.seed(99)
    resumed = train(config, image_set, train_idx, tmp_path / "c")
    assert resumed.epochs_trained == 2
    _assert_same(_weights(first.model), _weights(resumed.model))
    _assert_same(_weights(first.criterion), _weights(resumed.criterion))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in first.history]


def test_different_seed_different_weights(train_split, tmp_path: Path) -> None:
    image_set, train_idx = train_split
    a = train(RunConfig(**TINY), image_set, train_idx, tmp_path / "a")
    b = train(RunConfig(**TINY, seed=1), image_set, train_idx, tmp_path / "b")
    assert not torch.equal(a.model.head.weight, b.model.head.weight)


def test_progress_terms_checkpoint_and_history(train_split, tmp_path: Path) -> None:
    image_set, train_idx = train_split
    events: list[Progress] = []
    result = train(RunConfig(**FLOW_MAHALANOBIS), image_set, train_idx, tmp_path, on_progress=events.append)
    assert len(events) == 3 * 3
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    last = events[-1]
    assert (last.epoch, last.epochs, last.step, last.steps) == (3, 3, 3, 3)
    assert set(last.terms) == {"loss", "det", "density"}
    assert last.loss == pytest.approx(sum(last.terms.values()))
    assert {"active_fraction", "embedding_norm"} <= set(last.diagnostics)
    assert last.samples_per_s > 0 and last.eta_s == pytest.approx(0.0)

    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)  # tensors and plain types only
    assert ckpt["epoch"] == 3 and len(ckpt["history"]) == 3
    assert {"model", "criterion", "distance", "optimizer", "rng", "config"} <= set(ckpt)
    assert "L" in "".join(ckpt["distance"])  # the learnable Mahalanobis matrix is saved with the run
    history = (tmp_path / HISTORY).read_text()
    assert '"det"' in history and result.history[-1]["terms"]["density"] >= 0
    assert not result.model.training  # handed back ready for inference


def test_cancel_before_the_first_epoch_ends_saves_nothing(train_split, tmp_path: Path) -> None:
    image_set, train_idx = train_split
    with pytest.raises(Cancelled):
        train(RunConfig(**TINY), image_set, train_idx, tmp_path, should_cancel=lambda: True)
    assert not (tmp_path / CHECKPOINT).exists()


def test_divergence_names_the_term_and_keeps_the_last_good_checkpoint(train_split, tmp_path: Path, monkeypatch) -> None:
    image_set, train_idx = train_split
    real = trainer._batch_loss
    calls = {"n": 0}

    def nan_on_step_5(*args, **kwargs):  # the real loss, with a NaN injected into the density term at step 5
        total, terms, diagnostics = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            terms["density"] = terms["density"] * float("nan")
        return sum(terms.values()), terms, diagnostics

    monkeypatch.setattr(trainer, "_batch_loss", nan_on_step_5)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2: the 'density' term is nan") as err:
        train(RunConfig(**FLOW_MAHALANOBIS), image_set, train_idx, tmp_path)
    assert (err.value.epoch, err.value.step, err.value.term) == (2, 2, "density")
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_non_finite_weights_are_never_checkpointed(train_split, tmp_path: Path, monkeypatch) -> None:
    image_set, train_idx = train_split
    real_step = torch.optim.Adam.step

    def poisoning_step(self, *args, **kwargs):  # the real step, then one weight turned to inf on the 6th
        out = real_step(self, *args, **kwargs)
        poisoning_step.calls += 1
        if poisoning_step.calls == 6:
            self.param_groups[0]["params"][0].data.view(-1)[0] = float("inf")
        return out

    poisoning_step.calls = 0
    monkeypatch.setattr(torch.optim.Adam, "step", poisoning_step)
    with pytest.raises(TrainingDiverged, match="epoch 2, step 3: the model weights are no longer finite"):
        train(RunConfig(**TINY), image_set, train_idx, tmp_path)
    assert load_checkpoint(tmp_path / CHECKPOINT)["epoch"] == 1


def test_huge_learning_rate_diverges_with_a_clear_error(train_split, tmp_path: Path) -> None:
    image_set, train_idx = train_split
    config = RunConfig(**{**TINY, "epochs": 20, "optimizer": {"name": "sgd", "lr": 10.0, "momentum": 0.99},
                          "loss": {"name": "contrastive"}, "miner": {"name": "all"},
                          "regularizers": [{"name": "l2_embedding", "weight": 1.0}]})
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train(config, image_set, train_idx, tmp_path)


def test_resume_refuses_a_checkpoint_of_another_config(train_split, tmp_path: Path) -> None:
    image_set, train_idx = train_split
    train(RunConfig(**{**TINY, "epochs": 1}), image_set, train_idx, tmp_path)
    with pytest.raises(ValueError, match="different config"):
        train(RunConfig(**{**TINY, "epochs": 1, "embedding_dim": 4}), image_set, train_idx, tmp_path)
    longer = train(RunConfig(**{**TINY, "epochs": 2}), image_set, train_idx, tmp_path)  # more epochs is fine
    assert longer.epochs_trained == 1 and len(longer.history) == 2


def test_model_normalises_raw_pixels_with_the_dataset_statistics(train_split) -> None:
    image_set, _ = train_split
    model = trainer.build_model(RunConfig(**TINY), image_set.channels, 16, image_set.mean, image_set.std)
    pixels = torch.from_numpy(image_set.pixels(16)[:4])
    x = model.normalise(pixels)
    mean = torch.tensor(image_set.mean).view(1, -1, 1, 1)
    std = torch.tensor(image_set.std).view(1, -1, 1, 1)
    assert torch.allclose(x, (pixels.float() / 255 - mean) / std)
    model.eval()
    assert torch.equal(model.embed(pixels), model(pixels).embedding)


def test_cuda_on_a_machine_without_one_is_an_error() -> None:
    if torch.cuda.is_available():
        assert select_device("auto").type == "cuda"
    else:
        assert select_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no CUDA GPU"):
            select_device("cuda")
