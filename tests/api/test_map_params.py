"""The points endpoint's map parameters: UMAP n_neighbors / min_dist and 3-D maps, validated, and cached per
(method, split, parameters) in the run folder (models.runfolder.projection_file)."""
from __future__ import annotations

import numpy as np
import pytest

from models.projection import MapParams
from models.runfolder import projection_file
from tests.support.app import Trained


@pytest.mark.parametrize(("params", "field"), [({"n_neighbors": 1}, "n_neighbors"), ({"n_neighbors": 201}, "n_neighbors"),
                                               ({"min_dist": 1.0}, "min_dist"), ({"min_dist": -0.1}, "min_dist"),
                                               ({"dim": 4}, "dim")])
@pytest.mark.slow
def test_bad_map_parameters_are_a_422_naming_the_field(trained: Trained, params: dict, field: str) -> None:
    r = trained.client.get(f"/api/runs/{trained.a['id']}/points", params={"projection": "umap", **params})
    assert r.status_code == 422
    assert field in r.text


def test_file_names_keep_the_default_maps_and_separate_the_others() -> None:
    assert projection_file("umap", "test") == "projection_umap_test.npy"  # written before parameters existed
    assert projection_file("pca", "test", MapParams(n_neighbors=40)) == "projection_pca_test.npy"  # PCA ignores them
    assert projection_file("pca", "all", MapParams(dim=3)) == "projection_pca_all_3d.npy"
    names = {projection_file("umap", "test", MapParams(n, d, k)) for n, d, k in [(5, 0.5, 2), (6, 0.5, 2), (5, 0.2, 2), (5, 0.5, 3)]}
    assert len(names) == 4
    with pytest.raises(ValueError, match="n_neighbors"):
        MapParams(n_neighbors=1)


@pytest.mark.slow
def test_two_umap_parameter_sets_give_two_cached_maps_and_the_cache_is_reused(trained: Trained) -> None:
    c, a = trained.client, trained.a
    run_dir = c.app.state.store.run_dir(a["id"])
    url = f"/api/runs/{a['id']}/points"
    first = c.get(url, params={"projection": "umap", "n_neighbors": 4, "min_dist": 0.5}).json()
    second = c.get(url, params={"projection": "umap", "n_neighbors": 8, "min_dist": 0.0}).json()
    assert first["params"] == {"n_neighbors": 4, "min_dist": 0.5, "dim": 2}
    f1 = run_dir / projection_file("umap", "test", MapParams(4, 0.5))
    f2 = run_dir / projection_file("umap", "test", MapParams(8, 0.0))
    assert f1.exists() and f2.exists() and f1 != f2
    xy1, xy2 = np.load(f1), np.load(f2)
    assert xy1.shape == xy2.shape == (16, 2) and not np.allclose(xy1, xy2)
    np.testing.assert_allclose(first["columns"]["x"], xy1[:, 0], rtol=1e-6)

    # The folder's file is what is served: replace it, drop the in-memory bodies, and the API returns it.
    marker = np.arange(32, dtype=np.float32).reshape(16, 2)
    np.save(f1, marker)
    c.app.state.explorer.clear()
    again = c.get(url, params={"projection": "umap", "n_neighbors": 4, "min_dist": 0.5}).json()
    assert again["columns"]["x"] == marker[:, 0].tolist() and again["columns"]["y"] == marker[:, 1].tolist()
    np.save(f1, xy1)
    c.app.state.explorer.clear()


@pytest.mark.slow
def test_a_3d_map_has_a_z_column(trained: Trained) -> None:
    c, a = trained.client, trained.a
    body = c.get(f"/api/runs/{a['id']}/points", params={"projection": "pca", "dim": 3}).json()
    cols = body["columns"]
    assert body["params"]["dim"] == 3 and len(cols["z"]) == body["count"] == 16
    flat = c.get(f"/api/runs/{a['id']}/points", params={"projection": "pca"}).json()["columns"]
    assert "z" not in flat
    # The first two principal coordinates do not depend on how many are kept.
    np.testing.assert_allclose(np.abs(cols["x"]), np.abs(flat["x"]), rtol=1e-4, atol=1e-5)
    assert (c.app.state.store.run_dir(a["id"]) / "projection_pca_test_3d.npy").exists()
