"""The det regulariser's construction (docs/determinant.md): no free gauge, an exact log-volume, the paper's
orientation, and a dueling branch whose term is bounded."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import RunConfig
from models.flow import ActNorm, Coupling, FlowMetricLayer, sphere_log_volume
from models.network import EmbeddingNet
from models.regularizers import RegularizerInputs, create_regularizer
from tests.support.reference import random_flow64

D = 5
LABELS = torch.tensor([0, 1, 0, 2, 1, 0])


def tiny_net() -> EmbeddingNet:
    """A float64 EmbeddingNet (small_cnn backbone, 5-d head) with both flow branches away from the identity."""
    config = RunConfig(embedding_dim=D, flow={"enabled": True, "depth": 2, "hidden": 8, "dueling": True},
                       regularizers=[{"name": "det", "weight": 0.05, "params": {"dueling_ratio": 0.5}}])
    net = EmbeddingNet(config, in_channels=1, image_size=28)
    net.flow, net.flow_dueling = random_flow64(D, 2), random_flow64(D, 2)
    return net.double().eval()


def regularised(net: EmbeddingNet, features: Tensor) -> tuple[Tensor, Tensor]:
    """(embedding, R) for backbone features, with every part of R on: real points, ε-points, dueling branch."""
    out = net.from_backbone(features)
    reg = create_regularizer("det", dueling_ratio=0.5, epsilon=0.3)
    return out.embedding, reg(RegularizerInputs(out.embedding, LABELS, features=out.features, logdet=out.logdet,
                                                logdet_dueling=out.logdet_dueling, flow=net.flow))


def scale_flow_output(flow: FlowMetricLayer, k: float) -> None:
    """Rewrite the parameters so that every activation after the first ActNorm, and so the output, is k times
    what it was: the old gauge (it moved D·log k of log|det J| into the layers that follow)."""
    first = True
    with torch.no_grad():
        for layer in flow.layers:
            if isinstance(layer, ActNorm):
                if first:
                    layer.log_scale += math.log(k)
                    first = False
                else:
                    layer.bias *= k  # (k·x + k·b)·e^s
            elif isinstance(layer, Coupling):
                layer.net[0].weight /= k  # the coupling network sees the same x_a
                width = layer.net[-1].out_features // 2  # outputs: (raw scale, shift); the shift scales with x
                layer.net[-1].weight[width:] *= k
                layer.net[-1].bias[width:] *= k


@pytest.mark.parametrize("c", [10.0, 1e6])
def test_no_rescaling_before_or_after_the_flow_changes_embedding_or_regulariser(c: float) -> None:
    torch.manual_seed(0)
    net, features = tiny_net(), torch.randn(6, 128, dtype=torch.float64)
    embedding, value = regularised(net, features)

    gauged = copy.deepcopy(net)
    with torch.no_grad():  # every layer before the flow: backbone features × c, head × c (weights and bias)
        gauged.head.weight *= c
        gauged.head.bias *= c * c
    for flow in (gauged.flow, gauged.flow_dueling):
        scale_flow_output(flow, 1.0 / c)  # and compensate after: both flows' outputs shrink by c
    u = gauged.from_backbone(c * features).features
    raw_drop = net.flow(u)[1] - gauged.flow(u)[1]
    torch.testing.assert_close(raw_drop, torch.full_like(raw_drop, D * math.log(c)))  # the old gauge, moved

    gauged_embedding, gauged_value = regularised(gauged, c * features)
    # The embedding is the same unit vectors, so every distance (cosine and SNR included) is unchanged.
    torch.testing.assert_close(gauged_embedding, embedding, atol=1e-6, rtol=0)
    torch.testing.assert_close(gauged_value, value, atol=1e-6, rtol=0)


def test_a_global_output_scale_does_not_change_the_log_volume() -> None:
    torch.manual_seed(1)
    flow, u = random_flow64(D, 3), F.normalize(torch.randn(7, D, dtype=torch.float64), dim=1)
    z, logdet = flow(u)
    for c in (1e-3, 7.0, 1e4):
        # log|det| + D·log c, ⟨J⁻ᵀu, c·z⟩ with J⁻ᵀ/c, and −D·log(c‖z‖): the scale cancels exactly
        scaled = sphere_log_volume(_Scaled(flow, c), u, c * z, logdet + D * math.log(c))
        torch.testing.assert_close(scaled, sphere_log_volume(flow, u, z, logdet))


class _Scaled(nn.Module):
    """c·flow(x), with its log|det J| and inverse."""

    def __init__(self, flow: FlowMetricLayer, c: float):
        super().__init__()
        self.flow, self.c = flow, c

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, logdet = self.flow(x)
        return self.c * z, logdet + x.shape[1] * math.log(self.c)

    def inverse(self, z: Tensor) -> Tensor:
        return self.flow.inverse(z / self.c)


class _RadialThenFlow(nn.Module):
    """flow(ρ(x)) with ρ(x) = x·‖x‖^k: the same map on the unit sphere, another Jacobian off it (radially)."""

    def __init__(self, flow: FlowMetricLayer, k: float):
        super().__init__()
        self.flow, self.k = flow, k

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        z, logdet = self.flow(x * norm ** self.k)
        # Jρ = ‖x‖^k (I + k·x̂x̂ᵀ): log|det| = D·k·log‖x‖ + log(1 + k)
        return z, logdet + x.shape[1] * self.k * norm.squeeze(1).log() + math.log(1 + self.k)

    def inverse(self, z: Tensor) -> Tensor:
        y = self.flow.inverse(z)
        return y * torch.linalg.vector_norm(y, dim=1, keepdim=True) ** (-self.k / (1 + self.k))


def test_the_log_volume_ignores_what_the_flow_does_off_the_sphere() -> None:
    torch.manual_seed(2)
    flow, u = random_flow64(D, 2), F.normalize(torch.randn(6, D, dtype=torch.float64), dim=1)
    radial = _RadialThenFlow(flow, k=1.5)
    z, logdet = flow(u)
    z_radial, logdet_radial = radial(u)
    torch.testing.assert_close(z_radial, z)  # the same embedding of every input ...
    torch.testing.assert_close(logdet_radial - logdet, torch.full_like(logdet, math.log(2.5)))  # ... not det J
    torch.testing.assert_close(sphere_log_volume(radial, u, z_radial, logdet_radial),
                               sphere_log_volume(flow, u, z, logdet))


def test_log_volume_is_the_pseudo_determinant_of_the_whole_jacobian_from_the_head() -> None:
    """J here is ∂ẑ/∂h of the map h ↦ ẑ = flow(h/‖h‖)/‖flow(h/‖h‖)‖, normalisations included: rank D − 1
    (h's own direction is lost), its D − 1 singular values multiply to vol(u)/‖h‖^(D−1)."""
    torch.manual_seed(3)
    net = tiny_net()
    heads = 3.0 * torch.randn(4, D, dtype=torch.float64)
    out = net.from_backbone(torch.randn(4, 128, dtype=torch.float64))  # only for the shapes of its outputs
    assert out.logdet.shape == (4,) and out.logdet_dueling.shape == (4,)
    u = F.normalize(heads, dim=1)
    z, logdet = net.flow(u)
    log_volume = sphere_log_volume(net.flow, u, z, logdet)
    for i in range(len(heads)):
        J = torch.autograd.functional.jacobian(
            lambda h: F.normalize(net.flow(F.normalize(h, dim=0).unsqueeze(0))[0][0], dim=0), heads[i])
        sv = torch.linalg.svdvals(J)
        assert sv[-1] < 1e-12
        torch.testing.assert_close(sv[:-1].log().sum() + (D - 1) * heads[i].norm().log(), log_volume[i],
                                   atol=1e-9, rtol=1e-9)


@pytest.mark.slow
def test_gradcheck_of_the_regulariser_through_the_network_in_float64() -> None:
    torch.manual_seed(4)
    net = tiny_net()
    features = torch.randn(6, 128, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: regularised(net, f)[1], (features,))

    class Regulariser(nn.Module):  # functional_call swaps a parameter for the whole call, inverse pass included
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self) -> Tensor:
            return regularised(self.net, features.detach())[1]

    name = "net.flow.layers.1.net.4.weight"  # a coupling network's last layer: what training moves
    weight = dict(Regulariser().named_parameters())[name].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: torch.func.functional_call(Regulariser(), {name: w}, ()), (weight,))


def test_log_volume_is_computed_in_float32_under_mixed_precision() -> None:
    torch.manual_seed(6)
    flow = FlowMetricLayer(D, depth=2, hidden=8)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    u = F.normalize(torch.randn(5, D), dim=1)
    z, logdet = flow(u)
    half_z, half_logdet = z.bfloat16(), logdet.bfloat16()  # what a bf16 autocast forward hands over
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = sphere_log_volume(flow, u.bfloat16(), half_z, half_logdet)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, sphere_log_volume(flow, u.bfloat16().float(), half_z.float(),
                                                        half_logdet.float()))


def _stretch_flow(alpha: float) -> FlowMetricLayer:
    """D = 3, one block: ActNorm A = diag(e^α, 1, 1), identity coupling."""
    flow = FlowMetricLayer(3, depth=1, hidden=4).double()
    with torch.no_grad():
        flow.layers[0].log_scale.copy_(torch.tensor([alpha, 0.0, 0.0]))
    return flow


def test_orientation_minimising_the_regulariser_contracts_around_the_samples() -> None:
    # The known answer: u ↦ Au/‖Au‖ changes area by |det A|/‖Au‖³ on the 2-sphere — at the pole e1 by e^(−2α),
    # on the equator by e^α: stretching along e1 pulls the sphere towards the pole (contracts there) and spreads
    # the equator (expands there); the sphere's total area is unchanged.
    alpha = 0.4
    flow = _stretch_flow(alpha)
    poles = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(sphere_log_volume(flow, poles, *flow(poles)),
                               torch.tensor([-2 * alpha, alpha, alpha], dtype=torch.float64))
    uniform = F.normalize(torch.randn(200_000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
                          dim=1)
    with torch.no_grad():
        total = sphere_log_volume(flow, uniform, *flow(uniform)).exp().mean()
    assert abs(float(total) - 1.0) < 0.01

    # Samples in a cap around e1: gradient descent on R from the identity raises α, and the cap contracts.
    cap = F.normalize(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64) + 0.2 * torch.randn(
        32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), dim=1)
    flow = _stretch_flow(0.0)
    spread_before = torch.pdist(F.normalize(flow(cap)[0], dim=1)).mean()
    reg = create_regularizer("det")
    optimiser = torch.optim.SGD([flow.layers[0].log_scale], lr=0.05)
    for _ in range(20):
        z, logdet = flow(cap)
        value = reg(RegularizerInputs(F.normalize(z, dim=1), torch.zeros(32, dtype=torch.long), features=cap,
                                      logdet=sphere_log_volume(flow, cap, z, logdet)))
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
    assert float(flow.layers[0].log_scale[0].detach()) > 0.1
    with torch.no_grad():
        assert torch.pdist(F.normalize(flow(cap)[0], dim=1)).mean() < 0.9 * spread_before


@pytest.mark.slow
def test_maximising_the_dueling_branch_is_bounded() -> None:
    torch.manual_seed(5)
    u = F.normalize(torch.randn(16, D, dtype=torch.float64), dim=1)
    reg = create_regularizer("det", dueling_ratio=1.0)

    def maximise(bounded_term: bool) -> tuple[float, float]:
        """Gradient steps on the dueling branch alone; (its term's final value, largest |ActNorm log-scale|)."""
        flow = random_flow64(D, 2)
        optimiser = torch.optim.Adam(flow.parameters(), lr=0.05)
        for _ in range(150):
            log_volume = sphere_log_volume(flow, u, *flow(u))
            zero = torch.zeros(16, dtype=torch.float64)
            term = (reg(RegularizerInputs(u, LABELS.repeat(3)[:16], logdet=zero, logdet_dueling=log_volume))
                    if bounded_term else -log_volume.mean())
            optimiser.zero_grad()
            term.backward()
            optimiser.step()
        scales = max(float(m.log_scale.detach().abs().max()) for m in flow.layers if isinstance(m, ActNorm))
        return float(term.detach()), scales

    bounded_value, bounded_scales = maximise(True)
    assert 0.0 <= bounded_value  # −λ2·mean min(log vol, 0): never below 0, whatever the branch does
    linear_value, linear_scales = maximise(False)  # the paper's linear form keeps finding more volume
    assert linear_value < -5.0 and bounded_scales < linear_scales
    huge = create_regularizer("det")(RegularizerInputs(u, LABELS.repeat(3)[:16], logdet=torch.zeros(16),
                                                       logdet_dueling=torch.full((16,), 1e6)))
    assert float(huge) == 0.0  # expansion of the dueling branch earns nothing
