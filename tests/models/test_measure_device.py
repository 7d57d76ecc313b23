"""The measuring stages on an explicit device (issue 13): each stage given `device` runs there and, on the CPU,
gives exactly what its default path gives; `measure_model` hands the run's one device to every stage, and the
summary records it. The CUDA tests at the end run the same code on a GPU (skipped without one): values equal
within float32 tolerance, k-NN ids identical."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from models import measure
from models.config import RunConfig, SplitConfig
from models.data import ImageSet, import_builtin, zero_shot_split
from models.distances import create_distance, list_distances
from models.embeddings_import import EmbeddingsFile, measure_embeddings_file, save_input
from models.evaluate import evaluate
from models.geometry import common_space_stats
from models.inference import embed_passes
from models.measure import Stages, measure_model
from models.network import EmbeddingNet
from models.progress import ignore_progress, never_cancel
from models.query_gallery import query_ranks
from models.retrieval import device_of
from models.runfolder import RunFolder
from models.stats import class_stats

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    return import_builtin("synthetic", tmp_path_factory.mktemp("data") / "shapes", num_classes=4, per_class=6,
                          size=12).image_set


def _distance(name: str, x: np.ndarray):
    distance = create_distance(name, dim=x.shape[1])
    if name == "relative_mahalanobis":
        distance.refresh(torch.from_numpy(x))  # a whitening (a buffer) that is not the identity
    if name == "mahalanobis":
        with torch.no_grad():  # a learned L (a parameter) that is not the identity
            distance.L.add_(0.2 * torch.from_numpy(np.random.default_rng(3).normal(size=distance.L.shape)).float())
    return distance


def _clustered(n: int = 120, dim: int = 6, classes: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (rng.normal(size=(n, dim)) + 1.5 * rng.normal(size=(classes, dim))[y]).astype(np.float32), y


def _tiny_net(flow: bool) -> EmbeddingNet:
    torch.manual_seed(0)
    config = RunConfig(embedding_dim=4, flow={"enabled": flow, "depth": 2, "hidden": 8})
    return EmbeddingNet(config, in_channels=3, image_size=12, mean=[0.5] * 3, std=[0.25] * 3).eval()


@pytest.mark.parametrize("name", list_distances())
def test_class_stats_on_an_explicit_device_equal_the_default_path(name: str) -> None:
    x, y = _clustered()
    distance = _distance(name, x)
    default = class_stats(x, y, distance)
    explicit = class_stats(x, y, distance, device=torch.device("cpu"))
    np.testing.assert_array_equal(explicit.pop("centroids"), default.pop("centroids"))
    assert explicit == default  # every value bit for bit, not approximately


def test_common_space_and_query_gallery_on_an_explicit_device_equal_the_default_path() -> None:
    x, y = _clustered(seed=1)
    assert common_space_stats(x, y, device="cpu") == common_space_stats(x, y)
    for name in ("euclidean", "cosine", "snr", "mahalanobis"):
        distance = _distance(name, x)
        ranks = query_ranks(x[:40], y[:40], x[40:], y[40:], distance)
        np.testing.assert_array_equal(query_ranks(x[:40], y[:40], x[40:], y[40:], distance, device="cpu"), ranks)
        assert (ranks >= -1).all() and (ranks >= 0).any()


def test_amp_leaves_the_cpu_embedding_pass_unchanged() -> None:
    """AMP is CUDA's: on the CPU the embedding pass is the float32 one whatever the run's `amp` says."""
    net = _tiny_net(flow=True)
    pixels = np.random.default_rng(0).integers(0, 256, (10, 3, 12, 12), dtype=np.uint8)
    plain, amp = (embed_passes(net, pixels, np.arange(10), amp=a) for a in (False, True))
    assert plain.keys() == amp.keys() == {"embedding", "features", "lipschitz_input"}
    for key in plain:
        assert plain[key].dtype == np.float32
        np.testing.assert_array_equal(amp[key], plain[key])


@pytest.mark.parametrize("stage", ["evaluate", "class_stats", "common_space_stats", "query_ranks"])
def test_a_stage_puts_its_work_on_the_device_it_is_given(stage: str) -> None:
    """On "meta" (shapes, no data) a stage's products run, but no value can come back to the CPU: the stage
    fails at its first result exactly when it placed that work on the device it was given (on the CPU the same
    calls finish)."""
    x, y = _clustered(seed=4)
    call = {"evaluate": lambda d: evaluate(x, y, create_distance("euclidean"), device=d),
            "class_stats": lambda d: class_stats(x, y, create_distance("cosine"), device=d),
            "common_space_stats": lambda d: common_space_stats(x, y, device=d),
            "query_ranks": lambda d: query_ranks(x[:40], y[:40], x[40:], y[40:], create_distance("snr"), device=d)}
    call[stage]("cpu")
    with pytest.raises(NotImplementedError, match="meta"):
        call[stage]("meta")


def test_a_distance_is_where_its_parameters_or_buffers_are() -> None:
    """The explicit device must hold the distance: measure_embeddings moves it there, and `device_of` (the
    default device of every stage) sees buffers too, e.g. relative Mahalanobis's whitener."""
    x, _ = _clustered()
    whitened = _distance("relative_mahalanobis", x)
    assert not list(whitened.parameters()) and device_of(whitened).type == "cpu"
    assert device_of(whitened.to("meta")).type == "meta"
    assert device_of(create_distance("euclidean").to("meta")).type == "cpu"  # nothing to place: any device works


def _spy(monkeypatch: pytest.MonkeyPatch, name: str, seen: dict[str, list], where: Callable[..., Any]) -> None:
    """Wrap models.measure.`name` (the real function still computes) and record where each call runs."""
    real = getattr(measure, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        seen.setdefault(name, []).append(where(*args, **kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(measure, name, call)


def test_measure_model_runs_every_stage_on_the_runs_device(shapes: ImageSet, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    device = torch.device("cpu")
    seen: dict[str, list] = {}
    _spy(monkeypatch, "embed_passes", seen, lambda model, *a, **k: next(model.parameters()).device)
    _spy(monkeypatch, "evaluate", seen, lambda *a, device, **k: device)
    _spy(monkeypatch, "split_query_gallery", seen, lambda *a, device, **k: device)
    _spy(monkeypatch, "class_stats", seen, lambda *a: a[4])
    _spy(monkeypatch, "common_space_stats", seen, lambda *a: a[2])
    _spy(monkeypatch, "logdet_map", seen, lambda flow, *a, **k: device_of(flow))
    _spy(monkeypatch, "local_lipschitz", seen, lambda fn, x, **k: x.device)
    _spy(monkeypatch, "network_lipschitz", seen, lambda model, *a: next(model.parameters()).device)
    train_idx, test_idx = zero_shot_split(shapes, SplitConfig())
    split = {"train": train_idx, "test": test_idx}
    stages = Stages(ignore_progress, never_cancel, measure.SPANS_IMPORTED)
    heads, timings = measure_model(_tiny_net(flow=True), create_distance("euclidean"), shapes, split,
                                   RunFolder(tmp_path), stages, None, 0, device=device, amp=True)
    stages_run = {"embed_passes", "evaluate", "split_query_gallery", "class_stats", "common_space_stats",
                  "logdet_map", "local_lipschitz", "network_lipschitz"}
    assert seen.keys() == stages_run
    for name, devices in seen.items():
        assert devices == [device] * 2, name  # once per split, each on the run's device
    assert {"embed_s", "evaluate_s", "stats_s"} <= timings.keys()
    assert all(np.isfinite(heads[s]["lipschitz_median"]) for s in ("train", "test"))


def _embeddings_run(shapes: ImageSet, run_dir: Path) -> None:
    ids = np.arange(len(shapes.labels))
    vectors = _clustered(len(ids), 5, seed=2)[0] + 3 * shapes.labels[:, None].astype(np.float32)
    RunFolder(run_dir).dir.mkdir(parents=True, exist_ok=True)
    save_input(RunFolder(run_dir).embeddings_input_path, EmbeddingsFile(vectors, None, ids, None), ids)


def test_the_summary_records_the_device_the_run_was_measured_on(shapes: ImageSet, tmp_path: Path) -> None:
    _embeddings_run(shapes, tmp_path / "cpu")
    summary = measure_embeddings_file(shapes, tmp_path / "cpu", RunConfig(embedding_dim=5, device="cpu"))
    assert summary["device"] == "cpu" and summary["test"]["recall_at_1"] is not None
    if not torch.cuda.is_available():  # the one decision fails before any work, as training's does
        _embeddings_run(shapes, tmp_path / "cuda")
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            measure_embeddings_file(shapes, tmp_path / "cuda", RunConfig(embedding_dim=5, device="cuda"))


# ---- the same code on a GPU ------------------------------------------------------------------------------------
# float32 reductions run in another order there: values agree to this relative tolerance (absolute near 0: a
# margin is a difference of two distances), k-NN ids exactly (models/knn.py reranks in float64 on the CPU).
GPU_RTOL, GPU_ATOL = 1e-4, 1e-5


def _close(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _close(u, v)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=GPU_RTOL, abs=GPU_ATOL)
    else:
        assert a == b


@CUDA
@pytest.mark.parametrize("name", list_distances())
def test_class_stats_on_the_gpu_equal_the_cpu(name: str) -> None:
    x, y = _clustered(n=3000, dim=16, classes=60)
    distance = _distance(name, x)
    cpu = class_stats(x, y, distance, device="cpu")
    gpu = class_stats(x, y, distance.to("cuda"), device="cuda")
    np.testing.assert_array_equal(gpu.pop("centroids"), cpu.pop("centroids"))  # summed on the CPU in both
    _close(gpu, cpu)


@CUDA
def test_measure_model_on_the_gpu_equals_the_cpu(shapes: ImageSet, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # torch's default TF32 convolutions round the embedding to ~1e-3 on a GPU (as in training): off here, so the
    # comparison checks the measuring path, not the convolution's precision
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    train_idx, test_idx = zero_shot_split(shapes, SplitConfig())
    split = {"train": train_idx, "test": test_idx}
    heads = {}
    for device in ("cpu", "cuda"):
        stages = Stages(ignore_progress, never_cancel, measure.SPANS_IMPORTED)
        heads[device], _ = measure_model(_tiny_net(flow=True), create_distance("euclidean"), shapes, split,
                                         RunFolder(tmp_path / device), stages, None, 0,
                                         device=torch.device(device), amp=False)
    for s in ("train", "test"):  # the whole-network Lipschitz stops early at a tolerance: another iteration may
        # cross it on another device, so it is compared at that tolerance
        gpu, cpu = heads["cuda"][s], heads["cpu"][s]
        assert gpu.pop("lipschitz_network_median") == pytest.approx(cpu.pop("lipschitz_network_median"), rel=2e-2)
        _close(gpu, cpu)
