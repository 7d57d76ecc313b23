"""Every (loss × distance) against slow reference loops, against PML called directly, and at the edge cases."""
from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from models.config import LossConfig, MinerConfig
from models.distances import create_distance, list_distances
from models.losses import create_criterion, list_losses, list_miners
from models.registry import InvalidParameterError
from tests.support import reference as ref

DIM = 5
LABELS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 1]  # 3 classes, 4 each, not sorted
LOSSES, DISTANCES = list_losses(), list_distances()


def build(loss: str, distance: str, miner: str = "none", num_classes: int = 3, dtype=torch.float64, **params):
    d = create_distance(distance, dim=DIM)
    if hasattr(d, "L"):  # a random L, so the Mahalanobis distances are not secretly Euclidean
        with torch.no_grad():
            d.L.add_(0.3 * torch.randn(DIM, DIM))
    if hasattr(d, "refresh"):  # relative Mahalanobis' M = (Σ + εI)⁻¹ from anisotropic embeddings, for the same reason
        d.refresh(torch.randn(50, DIM) * torch.tensor([3.0, 1.0, 0.5, 0.2, 0.1]) + torch.randn(50, 1))
    return create_criterion(LossConfig(name=loss, params=params), MinerConfig(name=miner), d, num_classes,
                            DIM).to(dtype)


def embeddings(n: int = len(LABELS), dtype=torch.float64) -> torch.Tensor:
    return 0.5 * torch.randn(n, DIM, dtype=dtype)


def reference_value(loss_name: str, criterion, distance_name: str, x: torch.Tensor, labels: list[int]) -> float:
    d = ref.pair_distance(distance_name, criterion.distance)
    loss, inverted = criterion.loss, criterion.distance.is_inverted
    if loss_name in ("proxy_nca", "proxy_anchor"):
        D = ref.distance_matrix(d, x, loss.proxies.detach())
        if loss_name == "proxy_nca":
            return ref.proxy_nca(D, labels, inverted, loss.softmax_scale)
        return float(ref.proxy_anchor(D if inverted else -D, labels, loss.delta, loss.alpha))
    if loss_name == "npair":
        return ref.npair(lambda a, p: ref.distance_matrix(d, x[a], x[p]), labels, inverted)
    D = ref.distance_matrix(d, x, x)
    if loss_name == "contrastive":
        return ref.contrastive(D, labels, inverted, loss.pos_margin, loss.neg_margin)
    if loss_name == "triplet":
        return ref.triplet(D, labels, inverted, loss.margin)
    if loss_name == "lifted_structure":
        return ref.lifted_structure(D, labels, inverted, loss.pos_margin, loss.neg_margin)
    if loss_name == "multi_similarity":
        return ref.multi_similarity(D, labels, inverted, loss.alpha, loss.beta, loss.base)
    raise KeyError(f"no reference loop for loss {loss_name!r}; add one to tests/support/reference.py")


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("loss", LOSSES)
def test_matches_the_reference_loop(loss: str, distance: str) -> None:
    criterion = build(loss, distance)
    x = embeddings()
    value = criterion(x, torch.tensor(LABELS)).loss
    expected = reference_value(loss, criterion, distance, x, LABELS)
    assert expected != 0.0  # a reference that is 0 here would check nothing
    assert value.item() == pytest.approx(expected, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("loss", LOSSES)
def test_finite_value_and_nonzero_gradient_in_float32(loss: str, distance: str) -> None:
    criterion = build(loss, distance, dtype=torch.float32)
    x = embeddings(dtype=torch.float32).requires_grad_()
    out = criterion(x, torch.tensor(LABELS))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("labels", [list(range(8)), [3] * 8], ids=["all_distinct", "all_same"])
@pytest.mark.parametrize("loss", LOSSES)
def test_degenerate_batches_give_the_reference_value_without_nan(loss: str, labels: list[int]) -> None:
    """All labels distinct (no positives) or all the same (no negatives): triplet-like losses are exactly 0."""
    for distance in ("euclidean", "snr"):
        criterion = build(loss, distance, num_classes=8)
        x = embeddings(len(labels)).requires_grad_()
        value = criterion(x, torch.tensor(labels)).loss
        value.backward()
        assert torch.isfinite(x.grad).all()
        assert value.item() == pytest.approx(reference_value(loss, criterion, distance, x.detach(), labels),
                                             rel=1e-7, abs=1e-12)
        if loss in ("triplet", "lifted_structure", "npair"):
            assert value.item() == 0.0


PML_DIRECT = {
    "contrastive": lambda d: pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, distance=d),
    "triplet": lambda d: pml_losses.TripletMarginLoss(margin=0.2, distance=d),
    "npair": lambda d: pml_losses.NPairsLoss(distance=d),
    "lifted_structure": lambda d: pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0, distance=d),
    "multi_similarity": lambda d: pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5, distance=d),
}
PML_MINERS = {
    "none": lambda d: None,
    "all": lambda d: pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all", distance=d),
    "semihard": lambda d: pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard", distance=d),
    "batch_hard": lambda d: pml_miners.BatchHardMiner(distance=d),
    "multi_similarity": lambda d: pml_miners.MultiSimilarityMiner(epsilon=0.1, distance=d),
}


def test_the_tables_cover_the_registries() -> None:
    assert sorted(PML_MINERS) == list_miners()
    assert sorted([*PML_DIRECT, "proxy_nca", "proxy_anchor"]) == LOSSES


@pytest.mark.parametrize("miner", sorted(PML_MINERS))
@pytest.mark.parametrize("loss", sorted(PML_DIRECT))
def test_equals_pml_called_directly(loss: str, miner: str) -> None:
    criterion = build(loss, "snr", miner)
    d = criterion.distance
    x, y = embeddings(), torch.tensor(LABELS)
    pml_miner = PML_MINERS[miner](d)
    expected = PML_DIRECT[loss](d)(x, y, pml_miner(x, y) if pml_miner is not None else None)
    torch.testing.assert_close(criterion(x, y).loss, expected)


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "snr"])
def test_lifted_structure_equals_pml_on_awkward_mined_pairs(distance: str) -> None:
    """Our O(B²) lifted structure against PML's pair × pair masks, on pairs a miner can hand over: repeated pairs
    (each copy counts), a positive pair without a negative at either end, a positive pair (i, i)."""
    criterion = build("lifted_structure", distance)
    x, y = embeddings().requires_grad_(), torch.tensor(LABELS)
    a1, p = torch.tensor([0, 0, 1, 4, 5, 7]), torch.tensor([1, 1, 2, 5, 5, 8])
    a2, n = torch.tensor([0, 0, 1, 4, 2]), torch.tensor([4, 4, 7, 0, 9])  # anchors 7, 8 have no negative
    ours = criterion.loss(x, y, (a1, p, a2, n))
    pml = pml_losses.LiftedStructureLoss(pos_margin=criterion.loss.pos_margin, neg_margin=criterion.loss.neg_margin,
                                         distance=criterion.distance)
    expected = pml(x, y, (a1, p, a2, n))
    torch.testing.assert_close(ours, expected)
    grad, = torch.autograd.grad(ours, x)
    torch.testing.assert_close(grad, torch.autograd.grad(expected, x)[0])
    assert criterion.counter.terms == len(a1)


def test_proxy_nca_equals_pml_with_the_same_proxies() -> None:
    criterion = build("proxy_nca", "euclidean")
    direct = pml_losses.ProxyNCALoss(3, DIM, softmax_scale=1.0, distance=criterion.distance).double()
    with torch.no_grad():
        direct.proxies.copy_(criterion.loss.proxies)
    x, y = embeddings(), torch.tensor(LABELS)
    torch.testing.assert_close(criterion(x, y).loss, direct(x, y))


@pytest.mark.parametrize("distance", DISTANCES)
def test_proxy_anchor_values_and_gradients_follow_the_paper(distance: str) -> None:
    """Kim et al. eq. 4 with s = −d (s = cosine for the similarity): value, and gradients for the embeddings and
    the proxies, against the term-by-term reference; the anchor of d(x, p) is the sample."""
    criterion = build("proxy_anchor", distance, margin=0.3, alpha=4.0)
    loss = criterion.loss
    x = embeddings().requires_grad_()
    ours = criterion(x, torch.tensor(LABELS)).loss
    grads = torch.autograd.grad(ours, (x, loss.proxies))
    x_ref, proxies_ref = x.detach().clone().requires_grad_(), loss.proxies.detach().clone().requires_grad_()
    D = ref.distance_matrix(ref.pair_distance(distance, criterion.distance, differentiable=True), x_ref, proxies_ref)
    expected = ref.proxy_anchor(D if criterion.distance.is_inverted else -D, LABELS, 0.3, 4.0)
    torch.testing.assert_close(ours, expected)
    for got, want in zip(grads, torch.autograd.grad(expected, (x_ref, proxies_ref))):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "snr", "relative_mahalanobis"])
def test_proxy_anchor_gradcheck_in_float64(distance: str) -> None:
    criterion = build("proxy_anchor", distance, margin=0.2, alpha=3.0)
    x, y = embeddings().requires_grad_(), torch.tensor(LABELS)
    # gradcheck perturbs its inputs in place: the proxies are the loss's own parameter, read by the loss itself
    assert torch.autograd.gradcheck(lambda e, _: criterion(e, y).loss, (x, criterion.loss.proxies))


def test_proxy_anchor_pushes_a_close_negative_beyond_delta() -> None:
    """SPEC §8's example: one negative at d = 0.05 from its proxy, δ = 0.1, α = 32. The paper's term is
    log(1 + e^{−α(d − δ)}) = 1.78 (the negative is inside δ, pushed out); PML's distance form gives
    log(1 + e^{−α(d + δ)}) = 0.0082, as if it were already far enough."""
    criterion = build("proxy_anchor", "euclidean", num_classes=2, margin=0.1, alpha=32.0)
    with torch.no_grad():
        criterion.loss.proxies.copy_(torch.tensor([[0.0] * DIM, [0.05] + [0.0] * (DIM - 1)], dtype=torch.float64))
    x, y = torch.zeros(1, DIM, dtype=torch.float64), torch.tensor([0])  # at its own proxy, 0.05 from proxy 1
    value = criterion(x, y).loss.item()
    positive = math.log1p(math.exp(32 * 0.1))  # d = 0: e^{α(d + δ)}
    paper_negative = math.log1p(math.exp(-32 * (0.05 - 0.1)))
    assert paper_negative == pytest.approx(1.78, abs=0.005)
    assert value == pytest.approx(positive + paper_negative / 2, rel=1e-12)  # 1/|P| over both proxies
    pml = pml_losses.ProxyAnchorLoss(2, DIM, margin=0.1, alpha=32, distance=criterion.distance).double()
    with torch.no_grad():
        pml.proxies.copy_(criterion.loss.proxies)
    pml_negative = math.log1p(math.exp(-32 * (0.05 + 0.1)))
    assert pml_negative == pytest.approx(0.0082, abs=5e-5)
    assert pml(x, y).item() == pytest.approx(math.log1p(math.exp(32 * -0.1)) + pml_negative / 2, rel=1e-12)


def test_proxy_anchor_equals_pml_under_the_cosine_similarity() -> None:
    """Where the paper and PML agree (a similarity), we are PML's class with the same proxies."""
    criterion = build("proxy_anchor", "cosine")
    direct = pml_losses.ProxyAnchorLoss(3, DIM, margin=0.1, alpha=32, distance=criterion.distance).double()
    with torch.no_grad():
        direct.proxies.copy_(criterion.loss.proxies)
    x, y = embeddings(), torch.tensor(LABELS)
    torch.testing.assert_close(criterion(x, y).loss, direct(x, y))


def test_diagnostics_tell_converged_from_collapsed() -> None:
    criterion = build("triplet", "euclidean", dtype=torch.float32)
    y = torch.tensor(LABELS)
    centres = 10 * torch.eye(3, DIM)
    converged = criterion(centres[y] + 0.01 * torch.randn(len(y), DIM), y)
    assert float(converged.loss) == 0.0
    assert converged.diagnostics["active_fraction"] == 0.0 and converged.diagnostics["active_count"] == 0.0
    assert converged.diagnostics["embedding_norm"] == pytest.approx(10, rel=0.01)
    collapsed = criterion(torch.zeros(len(y), DIM), y)
    assert float(collapsed.loss) == pytest.approx(0.2)  # every triplet sits exactly at the margin
    assert collapsed.diagnostics["active_fraction"] == 1.0
    assert collapsed.diagnostics["active_count"] == len(LABELS) * 3 * 8  # anchors × positives × negatives
    assert collapsed.diagnostics["embedding_norm"] == 0.0


def test_mined_count_reports_what_the_miner_found() -> None:
    criterion = build("triplet", "euclidean", "batch_hard")
    out = criterion(embeddings(), torch.tensor(LABELS))
    assert out.diagnostics["mined_count"] == len(LABELS)  # one triplet per anchor
    assert "mined_count" not in build("triplet", "euclidean")(embeddings(), torch.tensor(LABELS)).diagnostics


def test_proxy_loss_with_a_miner_is_rejected_naming_both() -> None:
    with pytest.raises(InvalidParameterError, match="proxy_anchor.*semihard.*miner.name"):
        build("proxy_anchor", "euclidean", "semihard")


def test_learned_parts_are_parameters_of_the_criterion() -> None:
    criterion = build("proxy_anchor", "mahalanobis")
    shapes = sorted(tuple(p.shape) for p in criterion.parameters())
    assert shapes == [(3, DIM), (DIM, DIM)]  # the proxies and L, each once


def test_similarity_targets_follow_the_orientation() -> None:
    cos = build("contrastive", "cosine").loss
    assert (cos.pos_margin, cos.neg_margin) == (1.0, 0.0)
    euc = build("contrastive", "euclidean", pos_margin=0.1).loss
    assert (euc.pos_margin, euc.neg_margin) == (0.1, 1.0)


def test_bad_parameters_are_rejected_with_the_name() -> None:
    with pytest.raises(InvalidParameterError, match="margin must be ≥ 0"):
        build("triplet", "euclidean", margin=-1.0)
    with pytest.raises(InvalidParameterError, match="no parameter 'alpah'.*alpha"):
        build("multi_similarity", "euclidean", alpah=1.0)
