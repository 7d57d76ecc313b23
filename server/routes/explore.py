"""Exploring finished runs over HTTP: map points, stats, neighbours (by id or uploaded image), comparison, export.

A thin translation layer: the domain work (reading run folders, the caches, maps, k-NN, comparison) is the
app's `Explorer` (server/explorer.py, `app.state.explorer`); this module parses requests and shapes answers.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import asdict
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from models.compare import CLASS_KEYS
from models.errors import InvalidInput
from models.projection import MapParams
from server import points_codec
from server.explorer import SPLITS, RunView, Split
from server.routes.deps import ExplorerDep, RunId
from server.routes.mapparams import POINT_COLUMNS, MapParamsDep, PointColumnsDep
from server.schemas import (ChangedImage, ClassCompare, ComparePublic, MetricDiff, NeighborQuery, NeighborsPublic,
                            PointsPublic, StatsPublic, run_public, thumb_url)
from server.store import ID_PATTERN

router = APIRouter(prefix="/api", tags=["explore"])


@router.get("/runs/{run_id}/points", operation_id="explore-points", response_model=PointsPublic,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "JSON, or the binary layout of docs/api.md with format=binary"}})
def points(run_id: RunId, explorer: ExplorerDep, request: Request, split: Literal["train", "test", "all"] = "test",
           projection: Literal["pca", "umap"] = "umap", format: Literal["json", "binary"] = "json",
           params: MapParamsDep = MapParams(), columns: PointColumnsDep = POINT_COLUMNS,
           align_to: str | None = Query(None, pattern=ID_PATTERN, description=(
               "another finished run of the same dataset: this map is rotated/reflected, scaled and shifted onto "
               "that run's map of the same images (Procrustes); `aligned_to` says whether it was"))) -> Response:
    rec = explorer.finished(run_id)
    reference = explorer.finished(align_to) if align_to is not None else None

    def encode() -> bytes:  # gzip-compressed: kept and sent that way (points_codec)
        view = explorer.view_of(rec)
        xy, aligned = explorer.map(view, projection, split, params,
                                   explorer.view_of(reference) if reference is not None else None)
        cols = explorer.point_columns(view, split, xy, params.dim, columns)
        count = sum(len(view.image_ids(s)) for s in (SPLITS if split == "all" else (split,)))
        header = {"run_id": rec.id, "split": split, "projection": projection, "count": count,
                  "class_names": view.class_names, "params": asdict(params),
                  "aligned_to": reference.id if aligned else None}
        if format == "binary":
            return points_codec.compress(points_codec.encode(header, cols, count))
        return points_codec.compress(PointsPublic(**header, columns={k: None if v is None else v.tolist()
                                                                     for k, v in cols.items()}).model_dump_json().encode())

    body = explorer.bodies.get((rec.id, "points", split, projection, params, format, columns, align_to), encode)
    media_type = "application/octet-stream" if format == "binary" else "application/json"
    if not points_codec.accepts_gzip(request.headers.get("accept-encoding")):
        return Response(gzip.decompress(body), media_type=media_type, headers={"Vary": "Accept-Encoding"})
    return Response(body, media_type=media_type, headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})


@router.get("/runs/{run_id}/stats", operation_id="explore-stats", response_model=StatsPublic)
def stats(run_id: RunId, explorer: ExplorerDep) -> Response:
    rec = explorer.finished(run_id)

    def encode() -> bytes:
        art = explorer.view_of(rec).art
        return StatsPublic(run_id=rec.id, metrics=art.metrics or {}, stats=art.stats or {}, history=art.history,
                           summary=rec.summary or {}).model_dump_json().encode()

    return Response(explorer.bodies.get((rec.id, "stats"), encode), media_type="application/json")


@router.get("/runs/{run_id}/neighbors", operation_id="explore-neighbors")
def neighbors(run_id: RunId, explorer: ExplorerDep, image_id: int = Query(..., ge=0),
              k: int = Query(10, ge=1, le=200), within: Literal["train", "test"] | None = None) -> NeighborsPublic:
    view = explorer.view(run_id)
    split, row, ids, values, within = explorer.neighbours(view, image_id, k, within)
    cls = view.class_names[int(view.labels(split)[row])]
    return NeighborsPublic(
        query=NeighborQuery(image_id=image_id, class_=cls, split=split, thumb_url=thumb_url(view.rec.dataset_id,
                                                                                          image_id)),
        neighbors=view.neighbour_list(ids, values, within, cls))


@router.post("/runs/{run_id}/query", operation_id="explore-query")
async def query(run_id: RunId, explorer: ExplorerDep, file: UploadFile = File(...), k: int = Form(10, ge=1, le=200),
                within: Literal["train", "test"] = Form("test"), class_name: str | None = Form(None)) -> NeighborsPublic:
    rec = explorer.finished(run_id)
    data = await file.read()

    def search() -> NeighborsPublic:
        view = explorer.view_of(rec)
        if class_name is not None and class_name not in view.class_names:
            raise InvalidInput(f"class_name {class_name!r} is not a class of this dataset; leave it out or use one "
                               f"of: {', '.join(view.class_names[:20])}")
        ids, values = explorer.query(view, data, k, within)
        return NeighborsPublic(query=NeighborQuery(image_id=None, class_=class_name, split=None, thumb_url=None),
                               neighbors=view.neighbour_list(ids, values, within, class_name))

    return await run_in_threadpool(search)


@router.get("/compare", operation_id="explore-compare")
def compare(explorer: ExplorerDep, a: str = Query(..., pattern=ID_PATTERN), b: str = Query(..., pattern=ID_PATTERN),
            k: int = Query(10, ge=1, le=100), limit: int = Query(20, ge=0, le=500)) -> ComparePublic:
    va, vb = explorer.view(a), explorer.view(b)
    cmp = explorer.compare(va, vb, k, limit)

    def diffs(per_split: dict) -> dict[str, dict[str, MetricDiff]]:
        return {s: {key: MetricDiff(**asdict(d)) for key, d in m.items()} for s, m in per_split.items()}

    return ComparePublic(
        a=run_public(va.rec), b=run_public(vb.rec), metrics=diffs(cmp.metrics), geometry=diffs(cmp.geometry),
        classes=[ClassCompare(class_=c.name, a=c.a, b=c.b, diff=c.diff) for c in cmp.classes],
        same_dataset=va.rec.dataset_id == vb.rec.dataset_id,
        changed=[ChangedImage(image_id=c.image_id, class_=va.class_names[c.label], jaccard=c.jaccard,
                              thumb_url=thumb_url(va.rec.dataset_id, c.image_id), a_neighbors=c.a_neighbors,
                              b_neighbors=c.b_neighbors) for c in cmp.changed])


def _named_metrics(view: RunView) -> dict[str, Any]:
    """metrics.json with each per-class record named: evaluate() keys them by integer label only."""
    metrics = view.art.metrics or {}
    return {split: {**m, "per_class": [{"name": view.class_names[int(r["label"])], **r} for r in m.get("per_class", [])]}
            if isinstance(m, dict) else m for split, m in metrics.items()}


def _stats_csv(view: RunView) -> str:
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
def export(run_id: RunId, explorer: ExplorerDep, what: Literal["checkpoint", "embeddings", "stats"],
           format: Literal["json", "csv"] = "json") -> Response:
    view = explorer.view(run_id)
    if what == "checkpoint":
        needed = "an export as a checkpoint needs: export its embeddings instead"
        return FileResponse(view.checkpoint(needed), media_type="application/octet-stream",
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
