"""Run diagnostics: coupling-scale saturation (known answers) and the whole network's local Lipschitz constant
against the exact spectral norm of the autograd Jacobian."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.config import RunConfig
from models.diagnostics import (NETWORK_LIPSCHITZ_ITERS, network_lipschitz, saturation_map, saturation_warning,
                                summarise)
from models.flow import Coupling, FlowMetricLayer
from models.network import EmbeddingNet


def _set_raw_scales(flow: FlowMetricLayer, raw: torch.Tensor) -> None:
    """Every coupling's raw log-scale output becomes the constant `raw` (its last layer's weights zeroed)."""
    with torch.no_grad():
        for layer in flow.layers:
            if isinstance(layer, Coupling):
                width = layer.net[-1].out_features // 2
                layer.net[-1].weight.zero_()
                layer.net[-1].bias[:width] = raw


@pytest.mark.parametrize("raw,share", [([0.0, 0.0, 0.0], 0.0), ([100.0, -100.0, 100.0], 1.0),
                                       ([100.0, 0.3, -100.0], 2 / 3), ([1.9, -1.9, 1.9], 0.0)])
def test_saturation_is_the_share_of_scales_at_their_bound(raw: list[float], share: float) -> None:
    flow = FlowMetricLayer(6, depth=3, hidden=8)  # 3 couplings × 3 scales; tanh bound 2, 1 % band: |s| ≥ 1.98
    _set_raw_scales(flow, torch.tensor(raw))
    flow.train()
    values = saturation_map(flow, F.normalize(torch.randn(10, 6), dim=1), batch_size=4)
    np.testing.assert_allclose(values, share, rtol=0, atol=1e-12)
    assert flow.training  # the caller's mode is restored


def test_nice_has_no_scales_to_saturate() -> None:
    flow = FlowMetricLayer(4, depth=2, hidden=8, coupling="additive")
    assert np.isnan(saturation_map(flow, torch.randn(5, 4))).all()
    assert summarise({"saturation": saturation_map(flow, torch.randn(5, 4))})["flow_saturation"] is None


def test_summary_values_and_warning() -> None:
    maps = {"saturation": np.array([0.2, 0.4]), "logdet": np.array([1.0, 3.0]),
            "lipschitz": np.array([1.0, 2.0, 9.0]), "lipschitz_network": np.array([np.nan, 4.0, 2.0, np.nan])}
    assert summarise(maps) == {"flow_saturation": pytest.approx(0.3), "logdet_std": pytest.approx(1.0),
                               "lipschitz_median": 2.0, "lipschitz_network_median": 3.0}
    assert summarise({})["lipschitz_median"] is None
    assert saturation_warning({"train": {"flow_saturation": 0.5}, "test": {"flow_saturation": None}}) is None
    assert saturation_warning({"train": {}, "test": {}}) is None
    assert "61%" in saturation_warning({"train": {"flow_saturation": 0.2}, "test": {"flow_saturation": 0.61}})


def tiny_flow_net() -> EmbeddingNet:
    torch.manual_seed(0)
    config = RunConfig(embedding_dim=4, flow={"enabled": True, "depth": 2, "hidden": 8})
    net = EmbeddingNet(config, in_channels=1, image_size=12, mean=[0.4], std=[0.3])
    with torch.no_grad():
        for p in net.flow.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the identity start
        for m in net.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial eval statistics
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def exact_lipschitz(net: EmbeddingNet, inputs: torch.Tensor) -> np.ndarray:
    """‖∂embedding/∂standardised image‖₂ per image from the full autograd Jacobian (the slow reference)."""
    out = []
    for x in inputs:
        J = torch.autograd.functional.jacobian(lambda v: net.embed_standardised(v.unsqueeze(0))[0], x)
        out.append(float(torch.linalg.matrix_norm(J.reshape(J.shape[0], -1).double(), ord=2)))
    return np.array(out)


def test_network_lipschitz_matches_the_jacobian_spectral_norm_on_its_sample() -> None:
    net = tiny_flow_net()
    pixels = np.random.default_rng(0).integers(0, 256, (30, 1, 12, 12), dtype=np.uint8)
    idx = np.arange(5, 30)  # a split's images: indices into pixels
    estimate = network_lipschitz(net, pixels, idx, seed=3, sample=8)
    sampled = np.flatnonzero(np.isfinite(estimate))
    assert len(estimate) == len(idx) and len(sampled) == 8  # the rest is NaN: drawn grey on the map
    np.testing.assert_array_equal(np.isfinite(network_lipschitz(net, pixels, idx, seed=3, sample=8)),
                                  np.isfinite(estimate))  # the same seeded sample every time
    with torch.no_grad():
        inputs = net.normalise(torch.from_numpy(pixels[idx[sampled]]))
    exact = exact_lipschitz(net, inputs)
    ratio = estimate[sampled] / exact
    assert (ratio <= 1 + 1e-4).all()  # power iteration approaches σ_max from below
    # the documented tolerance: after NETWORK_LIPSCHITZ_ITERS iterations the median is within 1 %
    assert np.median(ratio) >= 0.99, (NETWORK_LIPSCHITZ_ITERS, ratio)
    converged = network_lipschitz(net, pixels, idx, seed=3, sample=8, iters=200, tol=0.0)[sampled]
    np.testing.assert_allclose(converged, exact, rtol=1e-3)  # and to σ_max itself given the iterations
