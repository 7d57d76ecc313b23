"""Each regularizer against a slow loop (or PML), with float64 gradchecks and its edge cases."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.regularizers import ZeroMeanRegularizer
from torch import nn

from models.flow import sphere_log_volume
from models.registry import InvalidParameterError
from models.regularizers import RegularizerInputs, create_regularizer, list_regularizers
from reference import random_flow64

LABELS = torch.tensor([0, 1, 0, 2, 1, 0, 2, 3])  # class 3 is a singleton
DIM = 4


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()


def test_registry_lists_the_five_regularizers() -> None:
    assert list_regularizers() == ["density", "det", "l2_embedding", "l2_weights", "zero_mean"]


# ---- det -------------------------------------------------------------------------------------------------------

def test_det_is_mean_log_volume_minus_the_dueling_branch_contraction() -> None:
    logdet, dueling = torch.randn(8), torch.randn(8)
    plain = create_regularizer("det")(RegularizerInputs(torch.randn(8, DIM), LABELS, logdet=logdet))
    torch.testing.assert_close(plain, logdet.mean())
    duel = create_regularizer("det", dueling_ratio=0.5)(
        RegularizerInputs(torch.randn(8, DIM), LABELS, logdet=logdet, logdet_dueling=dueling))
    contraction = sum(min(v, 0.0) for v in dueling.tolist()) / 8  # the dueling branch earns nothing above 0
    torch.testing.assert_close(duel, logdet.mean() - 0.5 * contraction)


def sphere_volume(flow: nn.Module, u: torch.Tensor) -> torch.Tensor:
    return sphere_log_volume(flow, u, *flow(u))


def test_det_epsilon_adds_log_volumes_between_same_class_neighbours() -> None:
    flow = random_flow64(DIM, depth=2)
    features = F.normalize(torch.randn(8, DIM, dtype=torch.float64), dim=1)
    logdet = sphere_volume(flow, features)
    value = create_regularizer("det", epsilon=0.25)(
        RegularizerInputs(torch.zeros(8, DIM), LABELS, features=features, logdet=logdet, flow=flow))
    synthetic = []
    for i, y in enumerate(LABELS.tolist()):  # partner: the next sample of the same class, wrapping around
        same = [k for k, z in enumerate(LABELS.tolist()) if z == y]
        if len(same) < 2:
            continue
        j = same[(same.index(i) + 1) % len(same)]
        x_tilde = features[i] + 0.25 * (features[j] - features[i])
        synthetic.append(sphere_volume(flow, (x_tilde / x_tilde.norm()).unsqueeze(0))[0])
    assert len(synthetic) == 7  # the singleton class has no partner
    expected = torch.cat([logdet, torch.stack(synthetic)]).mean()
    torch.testing.assert_close(value, expected)
    assert not torch.allclose(value, logdet.mean())


def test_det_without_a_flow_says_what_to_enable() -> None:
    with pytest.raises(ValueError, match="flow.enabled"):
        create_regularizer("det")(RegularizerInputs(torch.randn(8, DIM), LABELS))
    with pytest.raises(InvalidParameterError, match="epsilon"):
        create_regularizer("det", epsilon=2.0)


# ---- density ---------------------------------------------------------------------------------------------------

def density_loop(x: torch.Tensor, labels: list[int], tau: float) -> float:
    classes = sorted(c for c in set(labels) if labels.count(c) >= 2)
    centroid = {c: torch.stack([x[i] for i, y in enumerate(labels) if y == c]).mean(0) for c in classes}
    terms = []
    for c in classes:
        members = [x[i] for i, y in enumerate(labels) if y == c]
        spread = sum(float((m - centroid[c]).norm()) for m in members) / len(members)
        nearest = min(float((centroid[c] - centroid[o]).norm()) for o in classes if o != c)
        terms.append(max(0.0, nearest / spread - tau))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("tau", [0.0, 1.5])
def test_density_matches_the_loop_over_classes(tau: float) -> None:
    x = torch.randn(8, DIM, dtype=torch.float64)
    x[LABELS == 2] *= 0.2  # a dense class, so the hinge is active for some classes and not others
    value = create_regularizer("density", tau=tau, eps=1e-300)(RegularizerInputs(x, LABELS))
    expected = density_loop(x, LABELS.tolist(), tau)
    assert expected > 0
    assert value.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [0, 0, 0, 1]], ids=["all_singletons", "one_class_with_pairs"])
def test_density_is_a_connected_zero_below_two_usable_classes(labels: list[int]) -> None:
    x = torch.randn(len(labels), DIM, requires_grad=True)
    value = create_regularizer("density")(RegularizerInputs(x, torch.tensor(labels)))
    value.backward()
    assert value.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


# ---- zero_mean, l2 ---------------------------------------------------------------------------------------------

def test_zero_mean_equals_pml() -> None:
    x = torch.randn(8, DIM)
    torch.testing.assert_close(create_regularizer("zero_mean")(RegularizerInputs(x, LABELS)),
                               ZeroMeanRegularizer()(x))


def test_l2_embedding_is_the_mean_squared_norm() -> None:
    x = torch.randn(8, DIM)
    value = create_regularizer("l2_embedding")(RegularizerInputs(x, LABELS))
    assert value.item() == pytest.approx(sum(float(r @ r) for r in x) / 8, rel=1e-6)


def test_l2_weights_counts_matrices_only_and_skips_frozen_ones() -> None:
    model = tiny_model()
    with torch.no_grad():
        model[1].weight.fill_(7.0)  # a norm layer's scale: must not count
    reg = create_regularizer("l2_weights")
    value = reg(RegularizerInputs(torch.zeros(1, 2), LABELS[:1], model=model))
    expected = (model[0].weight.pow(2).sum() + model[3].weight.pow(2).sum()).item()
    assert value.item() == pytest.approx(expected)
    model[0].weight.requires_grad_(False)
    assert reg(RegularizerInputs(torch.zeros(1, 2), LABELS[:1], model=model)).item() == pytest.approx(
        model[3].weight.pow(2).sum().item())


# ---- gradients for every registered regularizer ----------------------------------------------------------------

def gradcheck_case(name: str):
    """(regularizer, inputs builder, tensors to differentiate) in float64."""
    x = torch.randn(8, DIM, dtype=torch.float64, requires_grad=True)
    if name == "det":
        flow = random_flow64(DIM, depth=2)
        heads = torch.randn(8, DIM, dtype=torch.float64, requires_grad=True)
        duel = torch.randn(8, dtype=torch.float64, requires_grad=True)

        def det_inputs(h: torch.Tensor, d: torch.Tensor) -> RegularizerInputs:
            u = F.normalize(h, dim=1)  # the network's flow input: the whole chain from the head output
            return RegularizerInputs(x, LABELS, features=u, logdet=sphere_volume(flow, u), logdet_dueling=d, flow=flow)
        return create_regularizer("det", dueling_ratio=0.7, epsilon=0.3), det_inputs, (heads, duel)
    if name == "l2_weights":
        model = tiny_model()
        return (create_regularizer(name), lambda *_: RegularizerInputs(x, LABELS, model=model),
                tuple(p for p in model.parameters() if p.dim() >= 2))
    params = {"tau": 0.5} if name == "density" else {}
    return create_regularizer(name, **params), lambda e: RegularizerInputs(e, LABELS), (x,)


@pytest.mark.parametrize("name", list_regularizers())
def test_gradcheck_in_float64(name: str) -> None:
    reg, make_inputs, tensors = gradcheck_case(name)
    value = reg(make_inputs(*tensors))
    assert value.dim() == 0 and torch.isfinite(value)
    assert torch.autograd.gradcheck(lambda *ts: reg(make_inputs(*ts)), tensors)
