"""Serving: GET /api/runs/{id}/points as JSON vs the binary column layout (docs/api.md), over real HTTP.

A real uvicorn serves the app on a loopback port in this process; an httpx client downloads the whole body.
The run is a folder written through models/runfolder.py (config, split, per-split arrays and maps), filled
with synthetic values, plus the server's own correct@1 cache, so the timing is the endpoint's work
(read the arrays, build the columns, encode, send) and not a UMAP fit or a k-NN search.
"""
from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx
import numpy as np

from bench.report import Section, count, duration, nbytes, ratio
from bench.timing import compare

FULL: dict[str, Any] = {"sizes": (100_000, 1_000_000)}


def _fill_run(run_dir: Path, config: Any, n: int, num_images: int) -> None:
    """A finished run's folder with an n-point test split drawn (with repeats) from the data set's images."""
    from models.runfolder import RunFolder

    rng = np.random.default_rng(0)
    folder = RunFolder(run_dir)
    folder.write_start(config, {"train": np.zeros(0, np.int64), "test": rng.integers(0, num_images, n)})
    folder.write_array("embeddings", "test", rng.standard_normal((n, config.embedding_dim), dtype=np.float32))
    folder.write_array("lipschitz", "test", rng.random(n, dtype=np.float32))
    for method in ("pca", "umap"):
        folder.write_projection(method, "test", rng.standard_normal((n, 2), dtype=np.float32))
    folder.write_correct_at_1("test", (rng.random(n) < 0.8).astype(np.int32))


def _prepare(data_dir: Path, sizes: Sequence[int]) -> dict[int, str]:
    """A store with the small built-in `synthetic` set and one finished run per N; returns N → run id."""
    from models.config import RunConfig
    from server.imports import ensure_builtin
    from server.settings import Settings
    from server.store import Store

    store = Store.open(Settings(data_dir=data_dir, builtin_datasets=[]))
    try:
        dataset = ensure_builtin(store, "synthetic")
        num_images = len(store.image_set(dataset.id))
        config, runs = RunConfig(), {}
        for n in sizes:
            rec = store.create_run(dataset.id, config, name=f"bench {count(n)}", status="done")
            _fill_run(store.run_dir(rec.id), config, n, num_images)
            runs[n] = rec.id
        return runs
    finally:
        store.close()


class _LoopbackServer:
    """uvicorn serving `app` on 127.0.0.1 (a free port) in a thread, for `with`."""

    def __init__(self, app: Any):
        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "_LoopbackServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the benchmark server did not start on loopback (see the log above)")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


def run(sizes: Sequence[int] = (100_000,), repeat: int = 5) -> list[Section]:
    from server.app import create_app
    from server.settings import Settings

    section = Section("Serving: GET /points, JSON vs binary columns (real HTTP on loopback)",
                      ["N", "format", "bytes", "first request", "repeat request"])
    with tempfile.TemporaryDirectory(prefix="dmlscope-bench-") as tmp:
        data_dir = Path(tmp)
        runs = _prepare(data_dir, sizes)
        app = create_app(Settings(data_dir=data_dir, builtin_datasets=[]))
        with _LoopbackServer(app) as server, httpx.Client(base_url=server.url, timeout=600) as client:
            for n, run_id in runs.items():
                def get(fmt: str, projection: str = "umap") -> Callable[[], int]:
                    def fetch() -> int:
                        r = client.get(f"/api/runs/{run_id}/points",
                                       params={"split": "test", "projection": projection, "format": fmt})
                        r.raise_for_status()
                        return r.num_bytes_downloaded  # on the wire: gzip, as a browser receives it

                    return fetch

                get("binary", "pca")()  # the server's per-run view (split, labels, arrays) is loaded and kept
                (_, json_first), (_, binary_first) = compare(get("json"), get("binary"), repeat=1, warmup=0)
                (json_bytes, json_t), (binary_bytes, binary_t) = compare(get("json"), get("binary"), repeat=repeat,
                                                                         warmup=0)
                section.add(count(n), "JSON", nbytes(json_bytes), duration(json_first), duration(json_t))
                section.add(count(n), "binary", nbytes(binary_bytes), duration(binary_first), duration(binary_t))
                section.add(count(n), "binary ÷ JSON", ratio(binary_bytes, json_bytes), ratio(binary_first, json_first),
                            ratio(binary_t, json_t))
    section.notes += [
        f"N run: {', '.join(count(n) for n in sizes)} test points, 8 columns (image_id, label, split, x, y, logdet, "
        f"lipschitz, correct_at_1; logdet empty as for a run without flow). Bytes: on the wire, gzip-compressed "
        "(Content-Encoding, as every browser receives it; binary = points_codec's narrow columns). Latency: request "
        "sent to last byte received and decompressed by httpx. First request: the server builds and encodes "
        "the body (its per-run view already loaded); repeat request: the server's cached body, median of "
        f"{repeat}, the two formats in turns.",
        "The run folder has precomputed maps and correct@1 (as after the first map request), so this is the "
        "endpoint's own cost; image ids repeat over the 160-image built-in `synthetic` set (one byte each in the "
        "binary body; bench/browser_map.py measures a run of a million distinct images).",
    ]
    return [section]
