"""The flow layer is invertible and its log|det J| is exact, checked against autograd's full Jacobian."""
from __future__ import annotations

import pytest
import torch

from models.flow import FlowMetricLayer
from tests.support.reference import random_flow64

CASES = [(dim, depth, coupling) for dim in (5, 6) for depth in (1, 2, 4) for coupling in ("affine", "additive")]


@pytest.mark.parametrize("dim,depth,coupling", CASES)
def test_inverse_undoes_forward(dim: int, depth: int, coupling: str) -> None:
    flow = random_flow64(dim, depth, coupling)
    x = torch.randn(8, dim, dtype=torch.float64)
    z, _ = flow(x)
    assert not torch.allclose(z, x)
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dim,depth,coupling", CASES)
def test_logdet_equals_log_abs_det_of_the_jacobian(dim: int, depth: int, coupling: str) -> None:
    flow = random_flow64(dim, depth, coupling)
    x = torch.randn(4, dim, dtype=torch.float64)
    _, logdet = flow(x)
    assert logdet.shape == (4,)
    for i in range(len(x)):
        J = torch.autograd.functional.jacobian(lambda v: flow(v.unsqueeze(0))[0][0], x[i])
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(J).logabsdet, atol=1e-8, rtol=1e-8)


def test_untrained_flow_is_the_identity() -> None:
    flow = FlowMetricLayer(7, depth=3, hidden=8, coupling="affine")
    x = torch.randn(5, 7)
    z, logdet = flow(x)
    # orthogonal mixing moves coordinates but keeps lengths and volume
    torch.testing.assert_close(z.norm(dim=1), x.norm(dim=1))
    torch.testing.assert_close(logdet, torch.zeros(5), atol=1e-6, rtol=0)


def test_affine_logdet_depends_on_the_input_nice_does_not() -> None:
    x = torch.randn(6, 6, dtype=torch.float64)
    assert random_flow64(6, 2, "affine")(x)[1].std() > 1e-3
    nice = random_flow64(6, 2, "additive")(x)[1].detach()
    torch.testing.assert_close(nice, nice[0].expand(6))
    assert abs(nice[0].item()) > 1e-3  # the final diagonal scaling contributes


def test_logdet_gradient_reaches_the_coupling_networks() -> None:
    flow = random_flow64(4, 2, "affine")
    flow(torch.randn(8, 4, dtype=torch.float64))[1].mean().backward()
    coupling_grads = [p.grad for n, p in flow.named_parameters() if ".net." in n and p.grad is not None]
    assert coupling_grads and any(float(g.abs().sum()) > 0 for g in coupling_grads)


def test_data_init_standardises_the_first_batch_and_is_saved() -> None:
    flow = FlowMetricLayer(4, depth=1, hidden=8, data_init=True)
    x = 3.0 + 5.0 * torch.randn(64, 4)
    z, _ = flow(x)  # zero-initialised coupling: z is the ActNorm output
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=0), torch.ones(4), atol=1e-4, rtol=0)
    clone = FlowMetricLayer(4, depth=1, hidden=8, data_init=True)
    clone.load_state_dict(flow.state_dict())
    torch.testing.assert_close(clone(x + 1)[0], flow(x + 1)[0])  # no re-initialisation on the new batch


def test_rejects_a_dimension_it_cannot_split() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        FlowMetricLayer(1, depth=2, hidden=8)
