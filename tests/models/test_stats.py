"""class_stats on a hand-computed example and against slow loops; the per-sample Jacobian maps against autograd."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import models.retrieval
import models.stats
from models.distances import create_distance
from models.flow import FlowMetricLayer
from models.sample_maps import geometric_stretch, local_lipschitz, logdet_map
from models.stats import class_stats
from tests.support.reference import pair_distance

# Two classes in the plane, small enough to check on paper:
#   a = {(0,0), (2,0)}          centroid (1,0), radii 1, 1; δ1 = 2
#   b = {(6,0), (6,2), (9,1)}   centroid (7,1), radii √2, √2, 2; δ1 = |(6,0)−(9,1)| = √10
#   closest cross pair (2,0)–(6,0): gap 4 for both; centroids √37 apart
HAND_X = np.array([[0, 0], [2, 0], [6, 0], [6, 2], [9, 1]], dtype=np.float32)
HAND_Y = np.array([0, 0, 1, 1, 1])


def test_hand_computed_example() -> None:
    stats = class_stats(HAND_X, HAND_Y, create_distance("euclidean"), class_names=["a", "b"])
    a, b = stats["per_class"]
    np.testing.assert_allclose(stats["centroids"], [[1, 0], [7, 1]])
    assert (a["name"], a["count"], b["name"], b["count"]) == ("a", 2, "b", 3)
    assert a["radius_mean"] == a["radius_max"] == a["radius_p95"] == a["spread"] == pytest.approx(1)
    b_spread = (2 * math.sqrt(2) + 2) / 3
    assert b["radius_mean"] == b["spread"] == pytest.approx(b_spread)
    assert b["radius_max"] == pytest.approx(2)
    assert b["radius_p95"] == pytest.approx(math.sqrt(2) + 0.9 * (2 - math.sqrt(2)))  # linear interpolation
    assert a["density"] == pytest.approx(1) and b["density"] == pytest.approx(1 / b_spread)
    assert a["nearest_centroid_distance"] == b["nearest_centroid_distance"] == pytest.approx(math.sqrt(37))
    assert a["relative_density"] == pytest.approx(math.sqrt(37))
    assert b["relative_density"] == pytest.approx(math.sqrt(37) / b_spread)
    assert (a["nearest_class"], b["nearest_class"]) == (1, 0)
    assert a["gap"] == b["gap"] == pytest.approx(4)
    assert a["delta1"] == pytest.approx(2) and b["delta1"] == pytest.approx(math.sqrt(10))
    assert a["margin"] == pytest.approx(2) and b["margin"] == pytest.approx(4 - math.sqrt(10))
    g = stats["global"]
    assert g["delta1"] == pytest.approx(math.sqrt(10)) and g["delta2"] == pytest.approx(4)
    assert g["margin"] == pytest.approx(4 - math.sqrt(10))
    pi_intra = (2 + (2 + 2 * math.sqrt(10)) / 3) / 2
    assert g["pi_intra"] == pytest.approx(pi_intra) and g["pi_inter"] == pytest.approx(math.sqrt(37))
    assert g["pi_ratio"] == pytest.approx(pi_intra / math.sqrt(37))


def slow_stats(name: str, distance, x: np.ndarray, y: np.ndarray) -> dict:
    """The same statistics by definition, one pair at a time, anchor first (cosine as 1 − similarity)."""
    d64 = pair_distance(name, copy.deepcopy(distance).double())
    t = torch.from_numpy(x).double()

    def d(a: torch.Tensor, b: torch.Tensor) -> float:
        value = d64(a, b)
        return 1 - value if distance.is_inverted else value

    classes = sorted(set(y.tolist()))
    mu = {c: t[y == c].mean(dim=0) for c in classes}
    out = {}
    for c in classes:
        idx = np.flatnonzero(y == c)
        others = np.flatnonzero(y != c)
        radii = [d(mu[c], t[i]) for i in idx]
        cross = min((d(t[i], t[j]), int(y[j])) for i in idx for j in others)
        intra = [d(t[i], t[j]) for i in idx for j in idx if i != j]
        out[c] = {"radius_mean": np.mean(radii), "radius_max": max(radii), "radius_p95": np.percentile(radii, 95),
                  "nearest_centroid_distance": min(d(mu[c], mu[o]) for o in classes if o != c),
                  "gap": cross[0], "nearest_class": cross[1],
                  "delta1": max(intra) if intra else None, "intra_mean": np.mean(intra) if intra else None}
    pairs = [d(mu[a], mu[b]) for a in classes for b in classes if a != b]
    return {"per_class": out, "pi_inter": np.mean(pairs),
            "pi_intra": np.mean([v["intra_mean"] for v in out.values() if v["intra_mean"] is not None])}


@pytest.mark.parametrize("small_class", [64, 7])  # 7: classes of 8 and 10 take the per-class path, 6 the batched
@pytest.mark.parametrize("chunk", [None, 7])  # 7 elements per chunk: every chunked loop runs many times
@pytest.mark.parametrize("name", ["euclidean", "cosine", "snr", "relative_mahalanobis"])
def test_matches_slow_loops_with_the_member_or_centroid_as_anchor(name: str, chunk, small_class: int,
                                                                  monkeypatch) -> None:
    monkeypatch.setattr(models.stats, "SMALL_CLASS", small_class)
    if chunk is not None:
        monkeypatch.setattr(models.stats, "CHUNK_ELEMENTS", chunk)
        monkeypatch.setattr(models.retrieval, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(0)
    y = np.array([0] * 8 + [1] * 10 + [2] * 6 + [7])  # class 7 has one sample
    x = (rng.standard_normal((25, 5)) + 1.5 * rng.standard_normal((8, 5))[y]).astype(np.float32)
    distance = create_distance(name, dim=5)
    if hasattr(distance, "L"):
        with torch.no_grad():
            distance.L.copy_(torch.eye(5) + 0.4 * torch.randn(5, 5, generator=torch.Generator().manual_seed(2)))
    stats = class_stats(x, y, distance)
    slow = slow_stats(name, distance, x, y)
    for record in stats["per_class"]:
        want = slow["per_class"][record["label"]]
        for key in ("radius_mean", "radius_max", "radius_p95", "nearest_centroid_distance", "gap"):
            assert record[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), (record["label"], key)
        assert record["nearest_class"] == want["nearest_class"]
        if want["delta1"] is None:
            assert record["delta1"] is record["margin"] is record["density"] is None
        else:
            assert record["delta1"] == pytest.approx(want["delta1"], rel=1e-4)
            assert record["margin"] == pytest.approx(want["gap"] - want["delta1"], rel=1e-4, abs=1e-5)
    g = stats["global"]
    assert g["pi_inter"] == pytest.approx(slow["pi_inter"], rel=1e-4)
    assert g["pi_intra"] == pytest.approx(slow["pi_intra"], rel=1e-4)
    assert g["delta2"] == pytest.approx(min(v["gap"] for v in slow["per_class"].values()), rel=1e-4, abs=1e-5)


def test_one_class_has_no_separation_values() -> None:
    stats = class_stats(HAND_X, np.zeros(5, dtype=int), create_distance("euclidean"))
    (only,) = stats["per_class"]
    assert only["gap"] is only["nearest_class"] is only["relative_density"] is only["margin"] is None
    assert only["delta1"] == pytest.approx(9.055385, rel=1e-6)  # |(0,0) − (9,1)| = √82
    assert stats["global"]["pi_inter"] is None and stats["global"]["margin"] is None


def test_pair_means_on_a_sample_of_large_classes(monkeypatch) -> None:
    # Each class a regular simplex (scaled unit vectors): every intra pair is exactly scale·√2 apart, so any
    # sample must give that mean. Centroids (0.1, 0.2, 0.3 on disjoint 10-d blocks) are √0.5, 1, √1.3 apart.
    monkeypatch.setattr(models.stats, "MEAN_SAMPLE", 4)
    eye = np.eye(30, dtype=np.float32)
    x = np.concatenate([eye[:10], 2 * eye[10:20], 3 * eye[20:]])
    stats = class_stats(x, np.repeat([0, 1, 2], 10), create_distance("euclidean"))
    assert stats["global"]["pi_intra"] == pytest.approx(np.mean([1, 2, 3]) * math.sqrt(2), rel=1e-6)
    assert stats["global"]["pi_inter"] == pytest.approx((math.sqrt(0.5) + 1 + math.sqrt(1.3)) / 3, rel=1e-6)


def test_spectral_decay_is_roths_kl_of_uniform_to_the_spectrum() -> None:
    x = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32) * [4, 2, 1, 1, 0.5, 0.1]
    stats = class_stats(x, np.arange(50) % 5, create_distance("euclidean"))
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    assert stats["global"]["spectral_decay"] == pytest.approx(scipy.stats.entropy(np.full(6, 1 / 6), s / s.sum()))
    isotropic = class_stats(np.eye(6, dtype=np.float32) * 3, np.arange(6), create_distance("euclidean"))
    assert isotropic["global"]["spectral_decay"] == pytest.approx(0, abs=1e-12)


def jacobian_singular_values(fn, x: torch.Tensor) -> torch.Tensor:
    """(N, min(D_out, D_in)) singular values of the full autograd Jacobian of fn at every sample."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v.unsqueeze(0)).squeeze(0), xi)
        out.append(torch.linalg.svdvals(jac.reshape(jac.shape[0], -1)))
    return torch.stack(out)


def test_local_lipschitz_equals_the_largest_singular_value() -> None:
    torch.manual_seed(3)
    mlp = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    x = torch.randn(9, 5, dtype=torch.float64)
    expected = jacobian_singular_values(mlp, x)[:, 0].numpy()
    np.testing.assert_allclose(local_lipschitz(mlp, x, iters=100, batch_size=4), expected, rtol=1e-8)


def test_local_lipschitz_through_a_cnn_in_eval_mode() -> None:
    torch.manual_seed(4)
    cnn = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    cnn[1].running_var.uniform_(0.5, 2.0)  # non-trivial statistics, so BatchNorm really scales
    cnn.eval()
    x = torch.randn(5, 1, 6, 6)
    expected = jacobian_singular_values(cnn, x)[:, 0].numpy()
    np.testing.assert_allclose(local_lipschitz(cnn, x, iters=60), expected, rtol=1e-4)


def test_logdet_map_is_the_sphere_log_volume_of_the_jacobian() -> None:
    torch.manual_seed(5)
    flow = FlowMetricLayer(dim=4, depth=2, hidden=8)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0, 0.3)  # away from the identity start, where every logdet would be 0
    flow.train()
    features = nn.functional.normalize(torch.randn(11, 4), dim=1)
    logdet = logdet_map(flow, features, batch_size=11)
    assert flow.training  # the caller's mode is restored
    np.testing.assert_allclose(logdet_map(flow, features, batch_size=3), logdet, rtol=1e-6, atol=1e-6)

    # u ↦ flow(u)/‖flow(u)‖ on the sphere, written with normalisation first so that its Jacobian at ‖u‖ = 1 has
    # the sphere map's D − 1 singular values and a 0 in the radial direction
    flow.eval()
    sphere_map = lambda v: nn.functional.normalize(flow(nn.functional.normalize(v, dim=1))[0], dim=1)  # noqa: E731
    sv = jacobian_singular_values(sphere_map, features).double()
    assert (sv[:, -1] < 1e-5).all()
    np.testing.assert_allclose(logdet, sv[:, :-1].log().sum(dim=1).numpy(), rtol=1e-4, atol=1e-4)
    stretch = geometric_stretch(logdet, 3)
    np.testing.assert_allclose(stretch, sv[:, :-1].log().mean(dim=1).exp().numpy(), rtol=1e-4)
    assert (stretch <= local_lipschitz(sphere_map, features, iters=50) * (1 + 1e-5)).all()
