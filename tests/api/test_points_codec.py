"""The compact binary /points body (server/points_codec.py): round trips within the quantisation error, the
narrowest integer widths, a size bound at 1M points, and the endpoint's columns on demand and gzip."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server import points_codec
from server.app import create_app
from tests.support.app import make_settings

N = 150  # test images of the 160-image built-in `synthetic` set


def _round_trip(columns: dict[str, Any], count: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return points_codec.decode(points_codec.encode({"count": count}, columns, count))


def test_floats_come_back_within_half_a_step_and_nan_stays_nan() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(N) * 40 + 7).astype(np.float32)
    x[::17] = np.nan
    const = np.full(N, 2.5, np.float32)
    header, cols = _round_trip({"x": x, "const": const}, N)
    spec = {s["name"]: s for s in header["columns"]}
    assert spec["x"]["dtype"] == "uint16" and spec["x"]["range"] == [float(np.nanmin(x)), float(np.nanmax(x))]
    finite = np.isfinite(x)
    step = (np.nanmax(x) - np.nanmin(x)) / 65534
    assert np.isnan(cols["x"][~finite]).all()
    assert np.abs(cols["x"][finite] - x[finite]).max() <= step / 2 + 1e-4  # float32 rounding of ~100
    assert np.abs(cols["x"][finite] - x[finite]).max() > 0  # it is quantised, not float32
    # the ends of the box are exact, and every code is used in order: q = round((v - lo) / step)
    assert cols["x"][finite].min() == np.nanmin(x) and cols["x"][finite].max() == pytest.approx(np.nanmax(x), abs=1e-5)
    assert (cols["const"] == 2.5).all()


def test_integers_take_the_narrowest_width_and_round_trip_exactly() -> None:
    columns = {"u8": np.arange(N) % 256, "u16": np.arange(N) * 200, "u32": np.arange(N) * 300_000,
               "neg": np.arange(N) - 5, "flag": np.arange(N) % 2}
    header, cols = _round_trip({k: v.astype(np.int64) for k, v in columns.items()}, N)
    assert {s["name"]: s["dtype"] for s in header["columns"]} == {
        "u8": "uint8", "u16": "uint16", "u32": "uint32", "neg": "int32", "flag": "uint8"}
    for name, values in columns.items():
        assert cols[name].tolist() == values.tolist()
    assert all(s["offset"] % 4 == 0 for s in header["columns"])  # typed arrays can view every column


def test_byte_planes_are_the_documented_layout() -> None:
    """Column bytes: every row's low byte, then every row's high byte (docs/api.md), written out by hand."""
    data = points_codec.encode({"count": 3}, {"id": np.array([0x0102, 0x0304, 0x0506])}, 3)
    n = int.from_bytes(data[:4], "little")
    base = 4 + n + (-(4 + n)) % 4
    assert json.loads(data[4:4 + n])["columns"] == [{"name": "id", "dtype": "uint16", "offset": 0}]
    assert data[base:base + 6] == bytes([0x02, 0x04, 0x06, 0x01, 0x03, 0x05])


def test_a_column_without_values_takes_no_bytes() -> None:
    header, cols = _round_trip({"x": np.zeros(N, np.float32), "logdet": None,
                                "lip": np.full(N, np.nan, np.float32)}, N)
    assert header["absent"] == ["logdet", "lip"] and set(cols) == {"x"}


def test_a_million_random_points_fit_in_ten_megabytes() -> None:
    """The worst case for compression: uniform coordinates and colour values, random labels of 11k classes."""
    n = 1_000_000
    rng = np.random.default_rng(1)
    columns = {"image_id": np.arange(n), "label": rng.integers(0, 11_318, n), "split": np.ones(n, np.int32),
               "x": rng.random(n, dtype=np.float32), "y": rng.random(n, dtype=np.float32), "logdet": None,
               "lipschitz": rng.random(n, dtype=np.float32), "correct_at_1": rng.integers(0, 2, n)}
    body = points_codec.compress(points_codec.encode({"count": n}, columns, n))
    assert len(body) <= 10_000_000, len(body)
    assert len(body) < 0.35 * n * 4 * len(columns)  # vs the former float32/int32 columns


@pytest.mark.parametrize("header, expected", [
    ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.5", True), ("*", True), ("identity", False),
    (None, False), ("gzip;q=0", False), ("gzip;q=nonsense", False)])
def test_accept_encoding(header: str | None, expected: bool) -> None:
    assert points_codec.accepts_gzip(header) is expected


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, Path]]:
    """An app with one finished run whose folder holds a PCA map and embeddings (as models/run.py writes
    them) of N test images of the built-in `synthetic` set; no correct@1 yet."""
    from models.config import RunConfig
    from server.imports import ensure_builtin
    from server.store import Store

    settings = make_settings(tmp_path_factory.mktemp("codec") / "data", builtin_datasets=["synthetic"])
    store = Store.open(settings)
    try:
        dataset = ensure_builtin(store, "synthetic")
        rec = store.create_run(dataset.id, RunConfig(embedding_dim=4), name="codec", status="done")
        run_dir = store.run_dir(rec.id)
    finally:
        store.close()
    rng = np.random.default_rng(0)
    (run_dir / "config.json").write_text(RunConfig(embedding_dim=4).model_dump_json(), encoding="utf-8")
    (run_dir / "split.json").write_text(json.dumps({"train": [], "test": list(range(N))}), encoding="utf-8")
    np.save(run_dir / "embeddings_test.npy", rng.standard_normal((N, 4), dtype=np.float32))
    np.save(run_dir / "lipschitz_test.npy", rng.random(N, dtype=np.float32))
    np.save(run_dir / "projection_pca_test.npy", rng.standard_normal((N, 2), dtype=np.float32))
    with TestClient(create_app(settings)) as client:
        yield client, rec.id, run_dir


def test_columns_on_demand_send_and_compute_only_those(finished: tuple[TestClient, str, Path]) -> None:
    client, run_id, run_dir = finished
    url = f"/api/runs/{run_id}/points"
    r = client.get(url, params={"projection": "pca", "format": "binary", "columns": "y,x,label"})
    assert r.status_code == 200, r.text
    assert r.headers["content-encoding"] == "gzip" and r.num_bytes_downloaded < len(r.content)
    header, cols = points_codec.decode(r.content)
    assert [c["name"] for c in header["columns"]] == ["label", "x", "y"] and header["count"] == N
    xy = np.load(run_dir / "projection_pca_test.npy")
    np.testing.assert_allclose(cols["x"], xy[:, 0], atol=np.ptp(xy[:, 0]) / 65534)
    assert not (run_dir / "correct_at_1_test.npy").exists()  # not asked for: no k-NN search
    j = client.get(url, params={"projection": "pca", "columns": "correct_at_1,image_id"}).json()
    assert set(j["columns"]) == {"image_id", "correct_at_1"} and j["columns"]["image_id"] == list(range(N))
    assert (run_dir / "correct_at_1_test.npy").exists()


def test_a_client_without_gzip_gets_the_same_body_plain(finished: tuple[TestClient, str, Path]) -> None:
    client, run_id, _ = finished
    params = {"projection": "pca", "format": "binary", "columns": "x,image_id"}
    zipped = client.get(f"/api/runs/{run_id}/points", params=params)
    plain = client.get(f"/api/runs/{run_id}/points", params=params, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.headers["vary"] == "Accept-Encoding"
    assert plain.content == zipped.content == gzip.decompress(gzip.compress(plain.content))


@pytest.mark.parametrize("columns", ["x,colour", "", " , ", "x;y"])
def test_unknown_columns_are_a_422_listing_the_valid_ones(finished: tuple[TestClient, str, Path], columns: str) -> None:
    client, run_id, _ = finished
    r = client.get(f"/api/runs/{run_id}/points", params={"projection": "pca", "columns": columns})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("columns: ") and "image_id, label" in r.json()["detail"]
