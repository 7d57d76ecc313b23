"""Exploring finished runs: map points, stats, neighbours (by id or uploaded image), comparison, export.

Everything here reads a run folder through models.runfolder (which alone knows its files); the server only
adds caches: lazily computed maps (UMAP, the shared train+test map) and correct@1 columns are saved into the
run folder atomically, and one RetrievalIndex / model per run is kept in memory (LRU).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import threading
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from models.errors import Conflict, InvalidInput, NotFound
from models.projection import MapParams
from server.routes.deps import RunId, StoreDep
from server import points_codec
from server.routes.mapparams import POINT_COLUMNS, MapParamsDep, PointColumnsDep
from server.schemas import (ChangedImage, ClassCompare, ComparePublic, MetricDiff, Neighbor, NeighborQuery,
                            NeighborsPublic, PointsPublic, StatsPublic, run_public, thumb_url)
from server.store import ID_PATTERN, RunRecord, Store

router = APIRouter(prefix="/api", tags=["explore"])
Split = Literal["train", "test"]
SPLITS: tuple[Split, Split] = ("train", "test")
# Per-class values compared between runs (from stats.json), and the column order of the stats CSV.
CLASS_KEYS = ("count", "radius_mean", "radius_max", "radius_p95", "density", "relative_density", "gap", "delta1",
              "margin")


class _LRU:
    """A small thread-safe LRU of values built on demand (one build per key at a time).

    At most `size` values; with `max_bytes`, also at most that many bytes of `len(value)` (response bodies).
    """

    def __init__(self, size: int, max_bytes: int | None = None):
        self.size, self.max_bytes = size, max_bytes
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[Any, threading.Lock] = {}

    def _over(self) -> bool:
        if len(self._items) > self.size:
            return True
        return self.max_bytes is not None and sum(len(v) for v in self._items.values()) > self.max_bytes

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = build()
            with self._lock:
                self._items[key] = value
                while len(self._items) > 1 and self._over():
                    self._items.popitem(last=False)
                self._building.pop(key, None)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# A done run never changes (ids are not reused; only failed, cancelled or interrupted runs resume), so what is
# read or computed from one is kept. Every request still checks the run is done, so a deleted run is not served.
_views = _LRU(16)  # run id → _View (parsed JSON artifacts, embeddings)
_models = _LRU(8)  # run id → LoadedModel (model and trained distance, on the CPU)
_indexes = _LRU(8)  # (run id, split) → RetrievalIndex
_bodies = _LRU(64, max_bytes=256 << 20)  # (run id, what, ...) → encoded response body of points / stats
_file_locks = _LRU(64)  # (run folder, cached file) → Lock, so two requests never compute the same file twice


def clear_caches() -> None:
    for cache in (_views, _models, _indexes, _bodies, _file_locks):
        cache.clear()


def _finished(store: Store, run_id: str) -> RunRecord:
    rec = store.get_run(run_id)
    if rec.status != "done":
        raise Conflict(f"run {rec.id} is {rec.status}; its results exist once it is done")
    return rec


class _View:
    """A finished run's artifacts with its dataset's labels and class names, per split (kept: see `of`)."""

    def __init__(self, store: Store, rec: RunRecord):
        from models.runfolder import load_run

        self.store, self.rec = store, rec
        self.art = load_run(store.run_dir(rec.id))
        self.image_set = store.image_set(rec.dataset_id)
        self.class_names: list[str] = list(self.image_set.class_names)
        self._embeddings: dict[str, np.ndarray] = {}

    @classmethod
    def of(cls, store: Store, rec: RunRecord) -> "_View":
        """The kept view of a done run: its JSON is parsed and its arrays read once, not on every request."""
        return _views.get(rec.id, lambda: cls(store, rec))

    def image_ids(self, split: Split) -> np.ndarray:
        return self.art.split[split]

    def labels(self, split: Split) -> np.ndarray:
        return self.image_set.labels[self.art.split[split]]

    def embeddings(self, split: Split) -> np.ndarray:
        """An in-memory copy of the memory-mapped file (torch wants writable memory), made once and shared by
        every request: read it, never write to it."""
        if split not in self._embeddings:
            self._embeddings[split] = np.array(self.art.embeddings(split))
        return self._embeddings[split]

    def checkpoint(self) -> Path:
        """The run's dmlscope checkpoint; a run imported from a TorchScript module has none (409, not a 500)."""
        if not self.art.has_checkpoint():
            how = ("was imported as embeddings, with no model" if self.rec.origin == "embeddings" else
                   "was imported from a TorchScript module, which only its import worker runs")
            raise Conflict(f"run {self.rec.id!r} has no dmlscope checkpoint (it {how}): query it by image id instead")
        return self.art.checkpoint_path

    def loaded(self) -> Any:
        from models.inference import load_model

        self.checkpoint()
        return _models.get(self.rec.id, lambda: load_model(self.art.dir, device="cpu"))

    def index(self, split: Split) -> Any:
        from models.retrieval import RetrievalIndex
        from models.inference import load_distance  # not load_model: a TorchScript import's model never loads here

        return _indexes.get((self.rec.id, split),
                            lambda: RetrievalIndex(self.embeddings(split), load_distance(self.art.dir)))

    def correct_at_1(self, split: Split) -> np.ndarray:
        """1 where the sample's nearest other sample of its split (run's distance) has its class, else 0;
        computed once and cached in the run folder (later requests and restarts read it)."""
        with _file_locks.get((str(self.art.dir), "correct_at_1", split), threading.Lock):
            cached = self.art.correct_at_1(split)
            if cached is not None:
                return np.asarray(cached)
            labels = self.labels(split)
            ids = self.index(split).neighbours(self.embeddings(split), 1, exclude_self_ids=np.arange(len(labels)))
            value = (np.zeros(len(labels), np.int32) if ids.shape[1] == 0 else
                     (labels[ids[:, 0]] == labels).astype(np.int32))
            self.art.write_correct_at_1(split, value)
            return value

    def projection(self, method: str, split: str, params: MapParams) -> np.ndarray:
        """(N, dim) map; computed on first use, aligned to the parent run's map (models.run)."""
        from models.maps import ensure_projection

        parent = _parent(self.store, self.rec)
        if parent is not None:  # the parent's map first: a child's map starts from it and is aligned to it
            _View.of(self.store, parent).projection(method, split, params)
        with _file_locks.get((str(self.art.dir), "projection", method, split, params), threading.Lock):
            return ensure_projection(self.art.dir, method, split,
                                     self.store.run_dir(parent.id) if parent is not None else None, params)


def _parent(store: Store, rec: RunRecord) -> RunRecord | None:
    if rec.parent_id is None:
        return None
    try:
        parent = store.get_run(rec.parent_id)
    except NotFound:
        return None
    return parent if parent.status == "done" else None


def _points(view: _View, split: str, projection: str, params: MapParams,
            wanted: tuple[str, ...]) -> dict[str, np.ndarray | None]:
    """The `wanted` columns of the map (only those are read or computed: correct@1 needs a k-NN search)."""
    splits: tuple[Split, ...] = SPLITS if split == "all" else (split,)  # type: ignore[assignment]

    def column(get: Callable[[Split], np.ndarray | None], dtype: Any) -> Callable[[], np.ndarray | None]:
        def build() -> np.ndarray | None:
            parts = [get(s) for s in splits]
            return None if any(p is None for p in parts) else np.concatenate([np.asarray(p) for p in parts]).astype(dtype)
        return build

    xy = view.projection(projection, split, params)
    getters: dict[str, Callable[[], np.ndarray | None]] = {
        "image_id": column(view.image_ids, np.int32),
        "label": column(view.labels, np.int32),
        "split": lambda: np.concatenate([np.full(len(view.image_ids(s)), SPLITS.index(s), np.int32) for s in splits]),
        "x": lambda: np.asarray(xy[:, 0], np.float32), "y": lambda: np.asarray(xy[:, 1], np.float32),
        "z": lambda: np.asarray(xy[:, 2], np.float32) if params.dim == 3 else None,
        "logdet": column(view.art.logdet, np.float32),
        "lipschitz": column(view.art.lipschitz, np.float32),
        "lipschitz_network": column(view.art.lipschitz_network, np.float32),  # NaN outside the sampled images
        "correct_at_1": column(view.correct_at_1, np.int32),
    }
    return {name: getters[name]() for name in wanted if name != "z" or params.dim == 3}


@router.get("/runs/{run_id}/points", operation_id="explore-points", response_model=PointsPublic,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "JSON, or the binary layout of docs/api.md with format=binary"}})
def points(run_id: RunId, store: StoreDep, request: Request, split: Literal["train", "test", "all"] = "test",
           projection: Literal["pca", "umap"] = "umap", format: Literal["json", "binary"] = "json",
           params: MapParamsDep = MapParams(), columns: PointColumnsDep = POINT_COLUMNS) -> Response:
    rec = _finished(store, run_id)

    def encode() -> bytes:  # gzip-compressed: kept and sent that way (points_codec)
        view = _View.of(store, rec)
        cols = _points(view, split, projection, params, columns)
        count = sum(len(view.image_ids(s)) for s in (SPLITS if split == "all" else (split,)))
        header = {"run_id": rec.id, "split": split, "projection": projection, "count": count,
                  "class_names": view.class_names, "params": asdict(params)}
        if format == "binary":
            return points_codec.compress(points_codec.encode(header, cols, count))
        return points_codec.compress(PointsPublic(**header, columns={k: None if v is None else v.tolist()
                                                                     for k, v in cols.items()}).model_dump_json().encode())

    body = _bodies.get((rec.id, "points", split, projection, params, format, columns), encode)
    media_type = "application/octet-stream" if format == "binary" else "application/json"
    if not points_codec.accepts_gzip(request.headers.get("accept-encoding")):
        return Response(gzip.decompress(body), media_type=media_type, headers={"Vary": "Accept-Encoding"})
    return Response(body, media_type=media_type, headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})


@router.get("/runs/{run_id}/stats", operation_id="explore-stats", response_model=StatsPublic)
def stats(run_id: RunId, store: StoreDep) -> Response:
    rec = _finished(store, run_id)

    def encode() -> bytes:
        art = _View.of(store, rec).art
        return StatsPublic(run_id=rec.id, metrics=art.metrics or {}, stats=art.stats or {}, history=art.history,
                           summary=rec.summary or {}).model_dump_json().encode()

    return Response(_bodies.get((rec.id, "stats"), encode), media_type="application/json")


def _neighbour_list(view: _View, ids: np.ndarray, values: np.ndarray, split: Split,
                    query_class: str | None) -> list[Neighbor]:
    image_ids, labels = view.image_ids(split), view.labels(split)
    out = []
    for rank, (j, value) in enumerate(zip(ids, values), start=1):
        cls = view.class_names[int(labels[j])]
        out.append(Neighbor(rank=rank, image_id=int(image_ids[j]), class_=cls, distance=float(value),
                            correct=None if query_class is None else cls == query_class,
                            thumb_url=thumb_url(view.rec.dataset_id, int(image_ids[j]))))
    return out


def _locate(view: _View, image_id: int) -> tuple[Split, int]:
    for split in SPLITS:
        where = np.flatnonzero(view.image_ids(split) == image_id)
        if len(where):
            return split, int(where[0])
    raise NotFound(f"image {image_id} is in neither split of this run; pick an image id from its points")


@router.get("/runs/{run_id}/neighbors", operation_id="explore-neighbors")
def neighbors(run_id: RunId, store: StoreDep, image_id: int = Query(..., ge=0), k: int = Query(10, ge=1, le=200),
              within: Literal["train", "test"] | None = None) -> NeighborsPublic:
    view = _View.of(store, _finished(store, run_id))
    split, row = _locate(view, image_id)
    within = within or split
    self_id = np.array([row if within == split else -1])
    ids, values = view.index(within).search(view.embeddings(split)[row:row + 1], k, exclude_self_ids=self_id)
    cls = view.class_names[int(view.labels(split)[row])]
    return NeighborsPublic(
        query=NeighborQuery(image_id=image_id, class_=cls, split=split, thumb_url=thumb_url(view.rec.dataset_id,
                                                                                          image_id)),
        neighbors=_neighbour_list(view, ids[0], values[0], within, cls))


@router.post("/runs/{run_id}/query", operation_id="explore-query")
async def query(run_id: RunId, store: StoreDep, file: UploadFile = File(...), k: int = Form(10, ge=1, le=200),
                within: Literal["train", "test"] = Form("test"), class_name: str | None = Form(None)) -> NeighborsPublic:
    rec = _finished(store, run_id)
    data = await file.read()

    def search() -> NeighborsPublic:
        from models.data import DatasetError
        from models.inference import embed_images

        view = _View.of(store, rec)
        if class_name is not None and class_name not in view.class_names:
            raise InvalidInput(f"class_name {class_name!r} is not a class of this dataset; leave it out or use one of: "
                             f"{', '.join(view.class_names[:20])}")
        loaded = view.loaded()
        try:
            pixels = view.image_set.query_pixels(data, loaded.image_size, store.upload_limits(),
                                                 resize=loaded.model.eval_resize)
        except DatasetError as e:
            raise InvalidInput(str(e)) from None
        ids, values = view.index(within).search(embed_images(loaded.model, pixels), k)
        return NeighborsPublic(query=NeighborQuery(image_id=None, class_=class_name, split=None, thumb_url=None),
                               neighbors=_neighbour_list(view, ids[0], values[0], within, class_name))

    return await run_in_threadpool(search)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _sub(b: Any, a: Any) -> float | None:
    x, y = _num(b), _num(a)
    return None if x is None or y is None else x - y


def _metric_diffs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, MetricDiff]]:
    out: dict[str, dict[str, MetricDiff]] = {}
    for split in SPLITS:
        ma, mb = a.get(split, {}), b.get(split, {})
        keys = [k for k in {**ma, **mb} if _num(ma.get(k)) is not None or _num(mb.get(k)) is not None]
        out[split] = {k: MetricDiff(a=_num(ma.get(k)), b=_num(mb.get(k)), diff=_sub(mb.get(k), ma.get(k)))
                      for k in keys}
    return out


def _class_rows(view: _View) -> dict[str, dict[str, float | None]]:
    return {name: {k: _num(row.get(k)) for k in CLASS_KEYS}
            for name, row in view.art.class_compactness("test").items()}


def _changed(va: _View, vb: _View, k: int, limit: int) -> list[ChangedImage]:
    """Shared test images whose k-NN sets (among the shared images) differ most between the two runs."""
    from models.retrieval import RetrievalIndex

    shared, ia, ib = np.intersect1d(va.image_ids("test"), vb.image_ids("test"), return_indices=True)
    if len(shared) < 2:
        return []
    k = min(k, len(shared) - 1)
    sets = []
    for view, rows in ((va, ia), (vb, ib)):
        emb = view.embeddings("test")[rows]
        index = RetrievalIndex(emb, view.loaded().distance)
        sets.append(index.neighbours(emb, k, exclude_self_ids=np.arange(len(shared))))
    inter = np.array([len(np.intersect1d(x, y)) for x, y in zip(*sets)])
    jaccard = inter / (2 * k - inter)
    labels = va.labels("test")[ia]
    return [ChangedImage(image_id=int(shared[i]), class_=va.class_names[int(labels[i])], jaccard=float(jaccard[i]),
                         thumb_url=thumb_url(va.rec.dataset_id, int(shared[i])),
                         a_neighbors=[int(shared[j]) for j in sets[0][i]],
                         b_neighbors=[int(shared[j]) for j in sets[1][i]])
            for i in np.argsort(jaccard, kind="stable")[:limit]]


@router.get("/compare", operation_id="explore-compare")
def compare(store: StoreDep, a: str = Query(..., pattern=ID_PATTERN), b: str = Query(..., pattern=ID_PATTERN),
            k: int = Query(10, ge=1, le=100), limit: int = Query(20, ge=0, le=500)) -> ComparePublic:
    va, vb = _View.of(store, _finished(store, a)), _View.of(store, _finished(store, b))
    rows_a, rows_b = _class_rows(va), _class_rows(vb)
    classes = [ClassCompare(class_=name, a=rows_a[name], b=rows_b[name],
                            diff={key: _sub(rows_b[name][key], rows_a[name][key]) for key in CLASS_KEYS})
               for name in rows_a if name in rows_b]
    same = va.rec.dataset_id == vb.rec.dataset_id
    return ComparePublic(a=run_public(va.rec), b=run_public(vb.rec),
                         metrics=_metric_diffs(va.art.metrics or {}, vb.art.metrics or {}), classes=classes,
                         same_dataset=same, changed=_changed(va, vb, k, limit) if same else [])


def _named_metrics(view: _View) -> dict[str, Any]:
    """metrics.json with each per-class record named: evaluate() keys them by integer label only."""
    metrics = view.art.metrics or {}
    return {split: {**m, "per_class": [{"name": view.class_names[int(r["label"])], **r} for r in m.get("per_class", [])]}
            if isinstance(m, dict) else m for split, m in metrics.items()}


def _stats_csv(view: _View) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    metric_keys = ("recall_at_1", "map_at_r", "r_precision")
    writer.writerow(["class", "split", *CLASS_KEYS, "nearest_class", *metric_keys])
    metrics = _named_metrics(view)
    for split in SPLITS:
        per_class_metrics = {m["name"]: m for m in metrics.get(split, {}).get("per_class", [])}
        for name, row in view.art.class_compactness(split).items():
            m = per_class_metrics.get(name, {})
            nearest = row.get("nearest_class")
            writer.writerow([name, split, *(row.get(key) for key in CLASS_KEYS),
                             view.class_names[nearest] if isinstance(nearest, int) else "",
                             *(m.get(key) for key in metric_keys)])
    return out.getvalue()


def _download(data: bytes, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/runs/{run_id}/export", operation_id="explore-export", response_class=Response)
@router.head("/runs/{run_id}/export", include_in_schema=False)  # a link checker's HEAD; one operation in OpenAPI
def export(run_id: RunId, store: StoreDep, what: Literal["checkpoint", "embeddings", "stats"],
           format: Literal["json", "csv"] = "json") -> Response:
    view = _View.of(store, _finished(store, run_id))
    if what == "checkpoint":
        return FileResponse(view.checkpoint(), media_type="application/octet-stream",
                            filename=f"dmlscope-{run_id}.pt")
    if what == "embeddings":
        arrays = {f"{s}{suffix}": get(s) for s in SPLITS
                  for suffix, get in (("", view.embeddings), ("_image_id", view.image_ids), ("_label", view.labels))}
        buf = io.BytesIO()
        np.savez(buf, class_names=np.array(view.class_names), **arrays)
        return _download(buf.getvalue(), "application/octet-stream", f"dmlscope-{run_id}-embeddings.npz")
    if format == "csv":
        return _download(_stats_csv(view).encode(), "text/csv", f"dmlscope-{run_id}-stats.csv")
    doc = {"run": run_public(view.rec).model_dump(mode="json"), "metrics": _named_metrics(view), "stats": view.art.stats}
    return _download(json.dumps(doc, indent=1).encode(), "application/json", f"dmlscope-{run_id}-stats.json")
