"""Every registered distance against a slow loop over pairs, plus its faiss view, asymmetry and gradients."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import SNRDistance

from models.distances import create_distance, list_distances
from reference import distance_matrix, pair_distance

DIM = 5
NAMES = list_distances()


def make(name: str, normalize: bool = False, dtype=torch.float64):
    """A distance whose learnable L (if any) is random but fixed, so Mahalanobis is not secretly Euclidean."""
    d = create_distance(name, normalize=normalize, dim=DIM).to(dtype)
    if hasattr(d, "L"):
        noise = torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(1), dtype=dtype)
        with torch.no_grad():
            d.L.copy_(torch.eye(DIM, dtype=dtype) + 0.5 * noise)
    return d


def test_registry_lists_the_six_distances() -> None:
    assert NAMES == sorted(["euclidean", "squared_euclidean", "cosine", "snr", "mahalanobis",
                            "relative_mahalanobis"])


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_matrix_and_pairwise_match_the_slow_loop(name: str, normalize: bool) -> None:
    d = make(name, normalize)
    q, r = torch.randn(4, DIM, dtype=torch.float64), torch.randn(6, DIM, dtype=torch.float64)
    qn, rn = (torch.nn.functional.normalize(q), torch.nn.functional.normalize(r)) if normalize else (q, r)
    expected = distance_matrix(pair_distance(name, d), qn, rn)
    torch.testing.assert_close(d(q, r), expected)
    torch.testing.assert_close(d.pairwise_distance(q, r[:4]), expected.diagonal())
    if normalize and name != "cosine":  # cosine is scale-free; every other distance must see the flag
        assert not torch.allclose(d(q, r), make(name, False)(q, r))


def test_snr_equals_pml_snr_distance() -> None:
    q, r = torch.randn(7, 16), torch.randn(9, 16)
    ours = create_distance("snr")
    pml = SNRDistance(normalize_embeddings=False)
    torch.testing.assert_close(ours(q, r), pml(q, r), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.pairwise_distance(q, r[:7]), pml.pairwise_distance(q, r[:7]),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_asymmetry_flag_and_query_first(name: str) -> None:
    d = make(name).requires_grad_(False)
    a, b = torch.randn(1, DIM, dtype=torch.float64), 3 * torch.randn(1, DIM, dtype=torch.float64)
    ref = pair_distance(name, d)
    assert float(d(a, b)) == pytest.approx(ref(a[0], b[0]))  # query (a) is the anchor
    swapped_differs = abs(float(d(a, b)) - float(d(b, a))) > 1e-6
    assert swapped_differs == d.asymmetric


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_faiss_on_retrieval_view_ranks_as_the_distance(name: str, normalize: bool) -> None:
    d = make(name, normalize, dtype=torch.float32)
    queries, refs = torch.randn(8, DIM), torch.randn(40, DIM)
    with torch.no_grad():
        brute = torch.argsort(d(queries, refs), dim=1, descending=d.is_inverted).numpy()
    qv, metric = d.retrieval_view(queries)
    rv, _ = d.retrieval_view(refs)
    index = faiss.IndexFlatIP(DIM) if metric == "ip" else faiss.IndexFlatL2(DIM)
    index.add(np.ascontiguousarray(rv.numpy()))
    _, ranked = index.search(np.ascontiguousarray(qv.numpy()), len(refs))
    np.testing.assert_array_equal(ranked, brute)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_in_float64(name: str) -> None:
    d = make(name, normalize=False)
    q = torch.randn(3, DIM, dtype=torch.float64, requires_grad=True)
    r = torch.randn(4, DIM, dtype=torch.float64, requires_grad=True)
    inputs = (q, r, d.L) if hasattr(d, "L") else (q, r)
    assert torch.autograd.gradcheck(lambda *xs: d(xs[0], xs[1]), inputs)
    assert torch.autograd.gradcheck(lambda *xs: d.pairwise_distance(xs[0], xs[1][:3]), inputs)


@pytest.mark.parametrize("name", NAMES)
def test_self_distance_gradient_is_finite(name: str) -> None:
    """A batch against itself has zero diagonals (sqrt's kink): gradients must stay finite, as in training."""
    d = make(name, dtype=torch.float32)
    x = torch.randn(6, DIM, requires_grad=True)
    d(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_duplicate_rows_give_exact_zeros_and_finite_gradients(name: str) -> None:
    """Duplicate images in a batch: the matrix-product form must not leave rounding noise or NaN gradients there."""
    d = make(name, dtype=torch.float32)
    x = (10 * torch.randn(64, 128 if name not in ("mahalanobis", "relative_mahalanobis") else DIM)).detach()
    x[1] = x[0]
    x.requires_grad_()
    mat = d(x)
    mat.sum().backward()
    assert torch.isfinite(x.grad).all()
    if not d.is_inverted:
        assert (mat.diagonal() == 0).all()
        # L·x may round two equal rows differently (BLAS blocks rows), so only a fixed view is bit-for-bit equal
        pair = mat.detach()[[0, 1], [1, 0]]
        assert (pair == 0).all() if not hasattr(d, "L") else (pair < 1e-4 * mat.detach().mean()).all()


def test_mahalanobis_needs_dim_and_checks_width() -> None:
    with pytest.raises(ValueError, match="dim"):
        create_distance("mahalanobis")
    with pytest.raises(ValueError, match="dim=3"):
        create_distance("relative_mahalanobis", dim=4)(torch.randn(2, 3))


def test_relative_mahalanobis_with_identity_is_zero_mean_snr() -> None:
    x = torch.randn(5, 8, dtype=torch.float64)
    x = x - x.mean(dim=1, keepdim=True)  # zero-mean vectors: SPEC §1.4's reduction
    rm = create_distance("relative_mahalanobis", dim=8).double()
    torch.testing.assert_close(rm(x), create_distance("snr")(x))


def test_learnable_L_is_a_parameter() -> None:
    d = create_distance("mahalanobis", dim=3)
    assert [n for n, _ in d.named_parameters()] == ["L"]
    torch.testing.assert_close(d.L.detach(), torch.eye(3))
