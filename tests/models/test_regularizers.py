"""Each regularizer against a slow loop (or PML), with float64 gradchecks and its edge cases."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.regularizers import ZeroMeanRegularizer
from torch import nn

from models.distances import create_distance, list_distances
from models.flow import FlowMetricLayer, sphere_log_volume
from models.registry import InvalidParameterError
from models.regularizers import RegularizerInputs, create_regularizer, list_regularizers
from tests.support import reference as ref
from tests.support.reference import random_flow64

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


def test_dueling_kink_counts_log_volumes_within_float_noise_of_zero() -> None:
    # An identity flow's log-volume is 0 up to ±D ulp of rounding; every such sample must train the branch alike.
    logdet = torch.zeros(4)
    dueling = torch.tensor([-7e-7, 0.0, 7e-7, 0.5], requires_grad=True)
    value = create_regularizer("det")(RegularizerInputs(torch.randn(4, DIM), LABELS[:4], logdet=logdet,
                                                        logdet_dueling=dueling))
    torch.testing.assert_close(value, torch.tensor(7e-7 / 4))  # the value is still −mean min(log vol, 0)
    value.backward()
    torch.testing.assert_close(dueling.grad, torch.tensor([-0.25, -0.25, -0.25, 0.0]))  # 0.5 earns nothing


def test_dueling_gradient_at_an_identity_flow_does_not_depend_on_rounding() -> None:
    # float32, as in training: inputs 1e-6 apart (another summation order) must give nearly the same gradient
    torch.manual_seed(3)
    dim = 8
    flow = FlowMetricLayer(dim, depth=2, hidden=8)  # identity at initialisation (zero last layers)
    u = F.normalize(torch.randn(16, dim), dim=1)
    nudged = F.normalize(u + 1e-6 * torch.randn(16, dim), dim=1)
    labels = torch.arange(16) % 4

    def grads(x: torch.Tensor) -> torch.Tensor:
        flow.zero_grad()
        reg = create_regularizer("det")(RegularizerInputs(x, labels, logdet=torch.zeros(16),
                                                          logdet_dueling=sphere_volume(flow, x)))
        reg.backward()
        return torch.cat([p.grad.flatten() for p in flow.parameters() if p.grad is not None])

    base = grads(u)
    assert base.abs().max() > 0.1  # every sample sits on the kink and trains the branch
    torch.testing.assert_close(grads(nudged), base, atol=1e-4, rtol=0)


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

# Every registered distance with its defaults, plus relative Mahalanobis' other two forms of M.
FORMS = [(n, {}) for n in list_distances()] + [("relative_mahalanobis", {"metric": m}) for m in ("identity", "learned")]
FORM_IDS = [n + (f"[{p['metric']}]" if p else "") for n, p in FORMS]


def run_distance(name: str, **params):
    """The distance with a non-trivial M where it has one (a random L, or M refreshed from anisotropic data)."""
    d = create_distance(name, dim=DIM, **params).double()
    g = torch.Generator().manual_seed(4)
    if hasattr(d, "L"):
        with torch.no_grad():
            d.L.add_(0.4 * torch.randn(DIM, DIM, generator=g, dtype=torch.float64))
    if hasattr(d, "refresh"):
        d.refresh(torch.randn(64, DIM, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.4, 0.1]))
    return d


TAU = 10.0  # between the broad class 0 (ρ̃ ≈ 1–5 under these distances) and classes 1, 2 (ρ̃ > 12)


def dense_batch() -> torch.Tensor:
    """Classes 0–2 around separated centres, class 2 tight (the hinge is active for some classes, not all)."""
    g = torch.Generator().manual_seed(0)
    centres = 2 * torch.randn(4, DIM, generator=g, dtype=torch.float64) + 1.0
    x = centres[LABELS] + torch.randn(len(LABELS), DIM, generator=g, dtype=torch.float64)
    x[LABELS == 2] = centres[2] + 0.05 * torch.randn(2, DIM, generator=g, dtype=torch.float64)
    return x


@pytest.mark.parametrize("tau", [0.0, TAU])
@pytest.mark.parametrize(("name", "params"), FORMS, ids=FORM_IDS)
def test_density_value_and_gradient_match_the_loop_under_each_distance(name: str, params: dict, tau: float) -> None:
    d = run_distance(name, **params)
    x = dense_batch().requires_grad_()
    value = create_regularizer("density", tau=tau, eps=1e-300)(RegularizerInputs(x, LABELS, distance=d))
    x_ref = x.detach().clone().requires_grad_()
    expected = ref.density(x_ref, LABELS.tolist(), tau, ref.length(name, d))
    assert expected.item() > 0
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(torch.autograd.grad(value, x)[0], torch.autograd.grad(expected, x_ref)[0])


@pytest.mark.parametrize(("name", "params"), FORMS, ids=FORM_IDS)
def test_density_gradcheck_along_centroid_preserving_moves(name: str, params: dict) -> None:
    """The gap is a stop-gradient scale, so finite differences agree with autograd exactly along moves that keep
    every class centroid (hence every gap) fixed: perturbations with zero mean within each class."""
    d, x0 = run_distance(name, **params), dense_batch()
    reg = create_regularizer("density", tau=0.5)
    one_hot = torch.nn.functional.one_hot(LABELS).double()
    class_mean = one_hot @ torch.linalg.pinv(one_hot)  # (B, B): replaces each row by its class mean

    def value(t: torch.Tensor) -> torch.Tensor:
        return reg(RegularizerInputs(x0 + t - class_mean @ t, LABELS, distance=d))

    assert torch.autograd.gradcheck(value, (1e-2 * torch.randn(len(LABELS), DIM, dtype=torch.float64).requires_grad_(),))


@pytest.mark.parametrize(("name", "params"), FORMS, ids=FORM_IDS)
def test_density_descent_loosens_dense_classes_and_never_pulls_classes_together(name: str, params: dict) -> None:
    d, x = run_distance(name, **params), dense_batch().requires_grad_()
    reg = create_regularizer("density", tau=TAU)
    grad, = torch.autograd.grad(reg(RegularizerInputs(x, LABELS, distance=d)), x)
    ell = ref.length(name, d)
    classes = [0, 1, 2]  # class 3 is a singleton: no gradient
    assert torch.equal(grad[LABELS == 3], torch.zeros_like(grad[LABELS == 3]))
    step = -1e-4 * grad

    def geometry(z: torch.Tensor) -> tuple[dict, dict]:
        mu = {c: z[LABELS == c].mean(0) for c in classes}
        spread = {c: sum(float(ell(mu[c], m)) for m in z[LABELS == c]) / int((LABELS == c).sum()) for c in classes}
        return mu, spread

    with torch.no_grad():
        mu, spread = geometry(x)
        mu_after, spread_after = geometry(x + step)
        active = [c for c in classes if min(float(ell(mu[c], mu[o])) for o in classes if o != c) / spread[c] > TAU]
        assert active and len(active) < len(classes)
        for c in classes:
            moved = grad[LABELS == c].abs().sum() > 0
            assert moved == (c in active)
            if c in active:
                assert spread_after[c] > spread[c]  # a descent step loosens each over-dense class
        if name != "cosine":  # translation-invariant views: a class's gradients sum to 0, its centroid stays
            for c in classes:
                torch.testing.assert_close(grad[LABELS == c].sum(0), torch.zeros(DIM, dtype=torch.float64))
    # Under every distance (cosine too, whose normalisation lets a centroid drift) the direction a class moves in
    # depends on that class alone: moving the other classes anywhere only rescales it (through the detached gap).
    x_moved = x.detach().clone()
    for c in (0, 1):
        x_moved[LABELS == c] += 2.0 * torch.randn(DIM, generator=torch.Generator().manual_seed(c), dtype=torch.float64)
    x_moved.requires_grad_()
    grad_moved, = torch.autograd.grad(reg(RegularizerInputs(x_moved, LABELS, distance=d)), x_moved)
    g2, g2_moved = grad[LABELS == 2].flatten(), grad_moved[LABELS == 2].flatten()
    assert g2.norm() > 0 and g2_moved.norm() > 0
    torch.testing.assert_close(g2_moved / g2_moved.norm(), g2 / g2.norm())


def test_density_is_the_same_under_distances_that_share_lengths_and_is_scale_free() -> None:
    """Euclidean, squared Euclidean (√d) and relative Mahalanobis with M = I (√d, the anchor's energy cancels)
    measure the same lengths, so τ means one thing; and ρ̃ is a ratio, so scaling the embedding changes nothing."""
    x = dense_batch()
    reg = create_regularizer("density", tau=1.0, eps=1e-300)
    values = [reg(RegularizerInputs(x, LABELS, distance=create_distance(n, dim=DIM, **p)))
              for n, p in [("euclidean", {}), ("squared_euclidean", {}),
                           ("relative_mahalanobis", {"metric": "identity"})]]
    for v in values[1:]:
        torch.testing.assert_close(v, values[0])
    torch.testing.assert_close(reg(RegularizerInputs(x, LABELS)), values[0])  # no distance: Euclidean
    for name, params in FORMS:
        d = run_distance(name, **params)
        torch.testing.assert_close(reg(RegularizerInputs(7.0 * x, LABELS, distance=d)),
                                   reg(RegularizerInputs(x, LABELS, distance=d)))


@pytest.mark.parametrize("name", ["snr", "relative_mahalanobis"])
def test_density_under_a_relative_distance_is_the_ratio_of_root_distances_from_the_centroid(name: str) -> None:
    """The anchor's energy cancels: at τ = 0, R = mean_c min_c' √d(μ_c, μ_c') / mean_i √d(μ_c, f_i)."""
    d, x = run_distance(name), dense_batch()
    root = ref.pair_distance(name, d)
    mu = {c: x[LABELS == c].mean(0) for c in range(3)}
    ratios = [min(root(mu[c], mu[o]) ** 0.5 for o in range(3) if o != c)
              / (sum(root(mu[c], m) ** 0.5 for m in x[LABELS == c]) / int((LABELS == c).sum())) for c in range(3)]
    value = create_regularizer("density", tau=0.0, eps=1e-300)(RegularizerInputs(x, LABELS, distance=d))
    assert value.item() == pytest.approx(sum(ratios) / 3, rel=1e-10)


def test_density_leaves_a_learned_metric_alone() -> None:
    """Scaling a learned L scales spreads and gaps alike; with the gap a stop-gradient scale, a gradient into L
    would lower R without changing any ratio. So L gets none."""
    d = run_distance("mahalanobis")
    x = dense_batch().requires_grad_()
    create_regularizer("density", tau=1.0)(RegularizerInputs(x, LABELS, distance=d)).backward()
    assert d.L.grad is None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [0, 0, 0, 1]], ids=["all_singletons", "one_class_with_pairs"])
def test_density_is_a_connected_zero_below_two_usable_classes(labels: list[int]) -> None:
    x = torch.randn(len(labels), DIM, requires_grad=True)
    value = create_regularizer("density")(RegularizerInputs(x, torch.tensor(labels), distance=create_distance("snr")))
    value.backward()
    assert value.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_density_of_a_collapsed_class_is_finite() -> None:
    """A class whose samples coincide has spread 0: the value is large but finite (eps), the gradient finite."""
    x = dense_batch()
    x[LABELS == 1] = x[LABELS == 1][0]
    x.requires_grad_()
    value = create_regularizer("density", eps=1e-6)(RegularizerInputs(x, LABELS, distance=create_distance("euclidean")))
    value.backward()
    assert torch.isfinite(value) and value.item() > 1e4 and torch.isfinite(x.grad).all()


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
    if name == "density":  # the gap is a stop-gradient scale: check along moves that keep every centroid
        class_mean = torch.nn.functional.one_hot(LABELS).double()
        class_mean = class_mean @ torch.linalg.pinv(class_mean)
        x0 = dense_batch()
        return (create_regularizer(name, tau=0.5), lambda t: RegularizerInputs(x0 + t - class_mean @ t, LABELS),
                (x,))
    return create_regularizer(name), lambda e: RegularizerInputs(e, LABELS), (x,)


@pytest.mark.parametrize("name", list_regularizers())
def test_gradcheck_in_float64(name: str) -> None:
    reg, make_inputs, tensors = gradcheck_case(name)
    value = reg(make_inputs(*tensors))
    assert value.dim() == 0 and torch.isfinite(value)
    assert torch.autograd.gradcheck(lambda *ts: reg(make_inputs(*ts)), tensors)
