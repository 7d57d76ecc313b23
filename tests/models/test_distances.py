"""Every registered distance against a slow loop over pairs, plus its faiss view, asymmetry and gradients."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import SNRDistance

from models.compat import check_config
from models.config import RunConfig
from models.distances import DISTANCES, create_distance, list_distances
from models.registry import InvalidParameterError
from tests.support.reference import distance_matrix, pair_distance

DIM = 5
NAMES = list_distances()
# Every registered distance with its defaults, plus relative Mahalanobis' other two forms of M.
FORMS = [(n, {}) for n in NAMES] + [("relative_mahalanobis", {"metric": m}) for m in ("identity", "learned")]
FORM_IDS = [n + (f"[{p['metric']}]" if p else "") for n, p in FORMS]


def correlated(n: int, dtype=torch.float64, seed: int = 2) -> torch.Tensor:
    """Embeddings with an anisotropic, correlated covariance, so (Σ + εI)⁻¹ is far from a multiple of I."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(DIM, DIM, generator=g, dtype=dtype) * torch.tensor([3.0, 1.0, 0.5, 0.2, 0.05], dtype=dtype)
    return torch.randn(n, DIM, generator=g, dtype=dtype) @ mix.T + 0.3


def make(name: str, normalize: bool = False, dtype=torch.float64, **params):
    """A distance whose M is not the identity: a random but fixed learned L, or an M refreshed from correlated
    embeddings, so the Mahalanobis forms are not secretly Euclidean."""
    d = create_distance(name, normalize=normalize, dim=DIM, **params).to(dtype)
    if hasattr(d, "L"):
        noise = torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(1), dtype=dtype)
        with torch.no_grad():
            d.L.copy_(torch.eye(DIM, dtype=dtype) + 0.5 * noise)
    if hasattr(d, "refresh"):
        d.refresh(correlated(200, dtype))
    return d


def test_registry_lists_the_six_distances() -> None:
    assert NAMES == sorted(["euclidean", "squared_euclidean", "cosine", "snr", "mahalanobis",
                            "relative_mahalanobis"])


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(("name", "params"), FORMS, ids=FORM_IDS)
def test_matrix_and_pairwise_match_the_slow_loop(name: str, params: dict, normalize: bool) -> None:
    d = make(name, normalize, **params)
    q, r = torch.randn(4, DIM, dtype=torch.float64), torch.randn(6, DIM, dtype=torch.float64)
    qn, rn = (torch.nn.functional.normalize(q), torch.nn.functional.normalize(r)) if normalize else (q, r)
    expected = distance_matrix(pair_distance(name, d), qn, rn)
    torch.testing.assert_close(d(q, r), expected)
    torch.testing.assert_close(d.pairwise_distance(q, r[:4]), expected.diagonal())
    if normalize and name != "cosine":  # cosine is scale-free; every other distance must see the flag
        assert not torch.allclose(d(q, r), make(name, False, **params)(q, r))


def test_snr_equals_pml_snr_distance() -> None:
    q, r = torch.randn(7, 16), torch.randn(9, 16)
    ours = create_distance("snr")
    pml = SNRDistance(normalize_embeddings=False)
    torch.testing.assert_close(ours(q, r), pml(q, r), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.pairwise_distance(q, r[:7]), pml.pairwise_distance(q, r[:7]),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "params"), FORMS, ids=FORM_IDS)
def test_asymmetry_flag_and_query_first(name: str, params: dict) -> None:
    d = make(name, **params).requires_grad_(False)
    a, b = torch.randn(1, DIM, dtype=torch.float64), 3 * torch.randn(1, DIM, dtype=torch.float64)
    ref = pair_distance(name, d)
    assert float(d(a, b)) == pytest.approx(ref(a[0], b[0]))  # query (a) is the anchor
    swapped_differs = abs(float(d(a, b)) - float(d(b, a))) > 1e-6
    assert swapped_differs == d.asymmetric


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(("name", "params"), FORMS, ids=FORM_IDS)
def test_faiss_on_retrieval_view_ranks_as_the_distance(name: str, params: dict, normalize: bool) -> None:
    d = make(name, normalize, dtype=torch.float32, **params)
    queries, refs = torch.randn(8, DIM), torch.randn(40, DIM)
    with torch.no_grad():
        brute = torch.argsort(d(queries, refs), dim=1, descending=d.is_inverted).numpy()
    qv, metric = d.retrieval_view(queries)
    rv, _ = d.retrieval_view(refs)
    index = faiss.IndexFlatIP(DIM) if metric == "ip" else faiss.IndexFlatL2(DIM)
    index.add(np.ascontiguousarray(rv.numpy()))
    _, ranked = index.search(np.ascontiguousarray(qv.numpy()), len(refs))
    np.testing.assert_array_equal(ranked, brute)


@pytest.mark.parametrize(("name", "params"), FORMS, ids=FORM_IDS)
def test_gradcheck_in_float64(name: str, params: dict) -> None:
    d = make(name, normalize=False, **params)
    q = torch.randn(3, DIM, dtype=torch.float64, requires_grad=True)
    r = torch.randn(4, DIM, dtype=torch.float64, requires_grad=True)
    inputs = (q, r, d.L) if hasattr(d, "L") else (q, r)
    assert torch.autograd.gradcheck(lambda *xs: d(xs[0], xs[1]), inputs)
    assert torch.autograd.gradcheck(lambda *xs: d.pairwise_distance(xs[0], xs[1][:3]), inputs)


@pytest.mark.parametrize(("name", "params"), FORMS, ids=FORM_IDS)
def test_self_distance_gradient_is_finite(name: str, params: dict) -> None:
    """A batch against itself has zero diagonals (sqrt's kink): gradients must stay finite, as in training."""
    d = make(name, dtype=torch.float32, **params)
    x = torch.randn(6, DIM, requires_grad=True)
    d(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(("name", "params"), FORMS, ids=FORM_IDS)
def test_duplicate_rows_give_exact_zeros_and_finite_gradients(name: str, params: dict) -> None:
    """Duplicate images in a batch: the matrix-product form must not leave rounding noise or NaN gradients there."""
    d = make(name, dtype=torch.float32, **params)
    x = (10 * torch.randn(64, 128 if name not in ("mahalanobis", "relative_mahalanobis") else DIM)).detach()
    x[1] = x[0]
    x.requires_grad_()
    mat = d(x)
    mat.sum().backward()
    assert torch.isfinite(x.grad).all()
    if not d.is_inverted:
        assert (mat.diagonal() == 0).all()
        # F·x may round two equal rows differently (BLAS blocks rows), so only a fixed view is bit-for-bit equal
        pair = mat.detach()[[0, 1], [1, 0]]
        factored = getattr(d, "factor", lambda: None)() is not None
        assert (pair == 0).all() if not factored else (pair < 1e-4 * mat.detach().mean()).all()


def test_mahalanobis_needs_dim_and_checks_width() -> None:
    with pytest.raises(ValueError, match="dim"):
        create_distance("mahalanobis")
    with pytest.raises(ValueError, match="dim=3"):
        create_distance("relative_mahalanobis", dim=4)(torch.randn(2, 3))


def test_relative_mahalanobis_identity_is_relative_squared_euclidean_and_zero_mean_snr() -> None:
    x = torch.randn(5, 8, dtype=torch.float64)
    rm = create_distance("relative_mahalanobis", dim=8, metric="identity")
    torch.testing.assert_close(rm(x), torch.cdist(x, x).pow(2) / x.pow(2).sum(dim=1, keepdim=True))
    x = x - x.mean(dim=1, keepdim=True)  # zero-mean vectors: SPEC §1.4's reduction
    torch.testing.assert_close(rm(x), create_distance("snr")(x))


@pytest.mark.parametrize("normalize", [False, True])
def test_refresh_sets_M_to_the_inverse_of_the_shrunk_covariance(normalize: bool) -> None:
    x = correlated(300)
    d = create_distance("relative_mahalanobis", normalize=normalize, dim=DIM, shrinkage=0.05).double()
    d.refresh(x)
    seen = torch.nn.functional.normalize(x) if normalize else x
    centred = seen - seen.mean(dim=0)
    cov = centred.T @ centred / (len(x) - 1)
    expected = torch.linalg.inv(cov + 0.05 * torch.trace(cov) / DIM * torch.eye(DIM, dtype=torch.float64))
    torch.testing.assert_close(d.metric_matrix(), expected)
    assert not torch.allclose(expected / expected[0, 0], torch.eye(DIM, dtype=torch.float64))  # not secretly I


def test_M_changes_only_at_a_refresh() -> None:
    """M is a buffer estimated from data: measuring, a training step and a forward pass leave it alone; the next
    refresh replaces it; identity and learned forms ignore refresh."""
    d = make("relative_mahalanobis", dtype=torch.float32)
    assert [n for n, _ in d.named_parameters()] == [] and [n for n, _ in d.named_buffers()] == ["whitener"]
    before = d.metric_matrix().clone()
    x = torch.randn(12, DIM, requires_grad=True)
    optimizer = torch.optim.SGD([x], lr=0.1)
    d(x).sum().backward()
    optimizer.step()
    d(x.detach())
    torch.testing.assert_close(d.metric_matrix(), before, rtol=0, atol=0)
    d.refresh(correlated(100, torch.float32, seed=5))
    assert not torch.allclose(d.metric_matrix(), before)
    for metric in ("identity", "learned"):
        other = make("relative_mahalanobis", metric=metric)
        kept = other.metric_matrix().clone()
        other.refresh(correlated(100))
        torch.testing.assert_close(other.metric_matrix(), kept, rtol=0, atol=0)


def test_refreshed_distance_ignores_the_embedding_scale() -> None:
    """ε follows tr(Σ) and d_RM ignores M's scale: refreshing on c·x and measuring c·a, c·b gives d(a, b)."""
    x, q, r = correlated(100), torch.randn(3, DIM, dtype=torch.float64), torch.randn(4, DIM, dtype=torch.float64)
    d1, d2 = (create_distance("relative_mahalanobis", dim=DIM).double() for _ in range(2))
    d1.refresh(x)
    d2.refresh(1000 * x)
    torch.testing.assert_close(d2(1000 * q, 1000 * r), d1(q, r))


def test_refresh_of_identical_embeddings_is_the_identity_and_bad_input_is_named() -> None:
    d = create_distance("relative_mahalanobis", dim=DIM)
    d.refresh(torch.ones(4, DIM))
    torch.testing.assert_close(d.metric_matrix(), torch.eye(DIM))
    with pytest.raises(ValueError, match="≥ 2 embeddings of width 5"):
        d.refresh(torch.ones(1, DIM))


def test_relative_mahalanobis_rejects_an_unknown_metric_listing_the_three() -> None:
    with pytest.raises(InvalidParameterError, match="inverse_covariance, identity, learned.*'whitened'"):
        create_distance("relative_mahalanobis", dim=DIM, metric="whitened")
    with pytest.raises(ValueError, match=r"distance\.params: .*shrinkage"):
        check_config(RunConfig(distance={"name": "relative_mahalanobis", "params": {"shrinkage": 0.0}}))
    schema = next(e for e in DISTANCES.schemas() if e["name"] == "relative_mahalanobis")
    metric = next(p for p in schema["params"] if p["name"] == "metric")
    assert metric["default"] == "inverse_covariance" and metric["type"] == "str"
    assert all(m in metric["help"] for m in ("inverse_covariance", "identity", "learned", "re-parametrisation"))


@pytest.mark.parametrize("metric", ["inverse_covariance", "identity", "learned"])
def test_the_sweep_patches_are_valid_configs(metric: str) -> None:
    patch = {"distance": {"name": "relative_mahalanobis", "params": {"metric": metric}}}
    config = check_config(RunConfig().with_patch(patch))
    assert create_distance(config.distance.name, dim=config.embedding_dim, **config.distance.params).metric == metric


def test_a_checkpoint_with_a_learned_L_from_before_metric_still_loads() -> None:
    """Old runs saved `{"L": ...}` under a config without `metric` (now defaulting to inverse_covariance): the
    state says it is the learned form, so it loads as that, also nested in a criterion's state."""
    old = make("relative_mahalanobis", metric="learned", dtype=torch.float32)
    q, r = torch.randn(3, DIM), torch.randn(4, DIM)
    loaded = create_distance("relative_mahalanobis", dim=DIM)
    loaded.load_state_dict(old.state_dict())
    assert loaded.metric == "learned" and [n for n, _ in loaded.named_parameters()] == ["L"]
    torch.testing.assert_close(loaded(q, r), old(q, r))
    holder = torch.nn.ModuleDict({"distance": create_distance("relative_mahalanobis", dim=DIM)})
    holder.load_state_dict({"distance.L": old.L.detach()})
    torch.testing.assert_close(holder["distance"](q, r), old(q, r))


def test_inverse_covariance_M_travels_in_the_state_dict() -> None:
    trained = make("relative_mahalanobis", dtype=torch.float32)
    fresh = create_distance("relative_mahalanobis", dim=DIM)
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh.metric_matrix(), trained.metric_matrix())


def test_learnable_L_is_a_parameter() -> None:
    d = create_distance("mahalanobis", dim=3)
    assert [n for n, _ in d.named_parameters()] == ["L"]
    torch.testing.assert_close(d.L.detach(), torch.eye(3))
