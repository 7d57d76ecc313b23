"""Questions asked of a finished run: its failures, its class pairs, a selection of its images (docs/api.md).

The computations live in `models.analysis`; this module reads the run through the app's Explorer
(server/explorer.py), which keeps each (run, split) result (a done run never changes), and shapes the answers.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from models.errors import InvalidInput
from server.explorer import SPLITS, RunView, Split
from server.routes.deps import ExplorerDep, RunId, StoreDep
from server.schemas import Neighbor, thumb_url

router = APIRouter(prefix="/api", tags=["analysis"])
FAILURE_NEIGHBOURS = 5
CONFUSION_K = 10


def _num(v: Any) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


class Failure(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    image_id: int
    class_: str = Field(alias="class")
    thumb_url: str
    margin: float | None
    nearest_other: float
    farthest_mate: float | None
    lipschitz: float | None
    logdet: float | None
    neighbors: list[Neighbor]


class FailuresPublic(BaseModel):
    run_id: str
    split: Split
    sort: str
    count: int = Field(description="images of the split whose nearest other image has another class")
    total: int = Field(description="images in the split")
    failures: list[Failure]


class ClassPairsPublic(BaseModel):
    run_id: str
    split: Split
    k: int
    classes: list[str] = Field(description="the split's classes, ordered by average-linkage clustering of the gaps")
    gap: list[list[float | None]] = Field(description="min d between the two classes' images; null on the diagonal")
    confusion: list[list[int]] = Field(description="row class's images' k nearest others, counted by their class")


class SelectionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_ids: list[int] = Field(..., min_length=1, max_length=200_000)
    split: Literal["train", "test", "all"] | None = Field(None, description="default: the split holding them all")


class SelectionClass(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_: str = Field(alias="class")
    count: int
    total: int


class SelectionPublic(BaseModel):
    run_id: str
    split: Literal["train", "test", "all"]
    size: int
    rest_size: int
    classes: list[SelectionClass]
    correct_at_1: dict[str, float | None]
    knn_inside: float | None
    expected: float | None
    radius_mean: dict[str, float | None]
    nearest_rest_mean: float | None
    lipschitz: dict[str, float | None]
    logdet: dict[str, float | None]


class HistoryPublic(BaseModel):
    run_id: str
    status: str
    epochs: int = Field(description="epochs the config asks for")
    checkpoint_epoch: int | None = Field(description="the epoch whose checkpoint is kept (resume continues after it)")
    history: list[dict[str, Any]] = Field(description="one entry per completed epoch: epoch, loss, terms, ...")


@router.get("/runs/{run_id}/history", operation_id="analysis-history")
def history(run_id: RunId, store: StoreDep) -> HistoryPublic:
    """The epochs a run has completed so far, in any status: what a live chart starts from and what a
    cancelled or failed run kept (history.json is written with each epoch's checkpoint)."""
    from models.runfolder import load_run

    rec = store.get_run(run_id)
    try:
        art = load_run(store.run_dir(rec.id))
        entries, has_checkpoint = art.history, art.checkpoint_path.exists()
    except FileNotFoundError:  # queued: its folder holds nothing yet
        entries, has_checkpoint = [], False
    return HistoryPublic(run_id=rec.id, status=rec.status, epochs=int(rec.config["epochs"]),
                         checkpoint_epoch=len(entries) if entries and has_checkpoint else None, history=entries)


def _cached(view: RunView, what: str, split: str, compute: Any) -> Any:
    return view.explorer.results.get((view.rec.id, what, split), compute)


@router.get("/runs/{run_id}/failures", operation_id="analysis-failures")
def failures(run_id: RunId, explorer: ExplorerDep, split: Split = "test",
             sort: Literal["margin", "lipschitz", "logdet"] = "margin",
             limit: int = Query(50, ge=1, le=1000)) -> FailuresPublic:
    from models.analysis import failure_order, failures as find

    view = explorer.view(run_id)
    found = _cached(view, "failures", split, lambda: find(view.embeddings(split), view.labels(split),
                                                          view.index(split).distance, FAILURE_NEIGHBOURS))
    rows = found["rows"]
    extra = {"lipschitz": view.art.lipschitz(split), "logdet": view.art.logdet(split)}
    if sort != "margin" and extra[sort] is None:
        raise InvalidInput(f"this run has no {sort} values (log|det J| needs the flow layer): sort by margin instead")
    key = found["margin"] if sort == "margin" else np.asarray(extra[sort], np.float64)[rows]
    labels, ids = view.labels(split), view.image_ids(split)
    out = []
    for i in failure_order(key, descending=sort != "margin")[:limit]:
        row, cls = int(rows[i]), view.class_names[int(labels[rows[i]])]
        out.append(Failure(
            image_id=int(ids[row]), class_=cls, thumb_url=thumb_url(view.rec.dataset_id, int(ids[row])),
            margin=_num(found["margin"][i]), nearest_other=float(found["nearest_other"][i]),
            farthest_mate=_num(found["farthest_mate"][i]),
            **{name: None if col is None else _num(col[row]) for name, col in extra.items()},
            neighbors=view.neighbour_list(found["neighbours"][i], found["distances"][i], split, cls)))
    return FailuresPublic(run_id=view.rec.id, split=split, sort=sort, count=len(rows), total=len(ids), failures=out)


@router.get("/runs/{run_id}/class-pairs", operation_id="analysis-class-pairs")
def class_pairs(run_id: RunId, explorer: ExplorerDep, split: Split = "test") -> ClassPairsPublic:
    from models.analysis import check_pair_classes, class_pairs as pairs

    view = explorer.view(run_id)
    check_pair_classes(view.labels(split))  # past the limit: refused before the embeddings and index are loaded
    found = _cached(view, "class-pairs", split, lambda: pairs(view.embeddings(split), view.labels(split),
                                                              view.index(split).distance, len(view.class_names),
                                                              CONFUSION_K))
    order = found["order"]
    return ClassPairsPublic(run_id=view.rec.id, split=split, k=CONFUSION_K,
                            classes=[view.class_names[int(c)] for c in order],
                            gap=[[_num(v) for v in row] for row in found["gap"][np.ix_(order, order)]],
                            confusion=found["confusion"][np.ix_(order, order)].tolist())


def _split_of(view: RunView, ids: np.ndarray) -> Literal["train", "test", "all"]:
    for split in SPLITS:
        if np.isin(ids, view.image_ids(split)).all():
            return split
    return "all"


@router.post("/runs/{run_id}/selection", operation_id="analysis-selection")
def selection(run_id: RunId, body: SelectionBody, explorer: ExplorerDep) -> SelectionPublic:
    from models.analysis import selection as describe

    view = explorer.view(run_id)
    wanted = np.unique(np.asarray(body.image_ids, np.int64))
    split = body.split or _split_of(view, wanted)
    splits: tuple[Split, ...] = SPLITS if split == "all" else (split,)  # type: ignore[assignment]
    ids = np.concatenate([view.image_ids(s) for s in splits])
    missing = wanted[~np.isin(wanted, ids)]
    if len(missing):
        raise InvalidInput(f"{len(missing)} image id(s) are not in the {split} images of this run (e.g. "
                         f"{', '.join(map(str, missing[:5]))}): take the ids from its points")
    rows = np.flatnonzero(np.isin(ids, wanted))
    emb = np.concatenate([view.embeddings(s) for s in splits])
    labels = np.concatenate([view.labels(s) for s in splits])
    try:
        found = describe(emb, labels, view.index(splits[0]).distance, rows)
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    mask = np.isin(np.arange(len(ids)), rows)

    def split_means(get: Any) -> dict[str, float | None]:
        parts = [get(s) for s in splits]
        if any(p is None for p in parts):
            return {"selection": None, "rest": None}
        col = np.concatenate([np.asarray(p, np.float64) for p in parts])
        return {"selection": _num(col[mask].mean()), "rest": _num(col[~mask].mean()) if (~mask).any() else None}

    classes = [SelectionClass(class_=view.class_names[c], count=int(n), total=int(found["class_totals"][c]))
               for c, n in enumerate(found["class_counts"]) if n]
    return SelectionPublic(
        run_id=view.rec.id, split=split, size=found["size"], rest_size=found["rest_size"],
        classes=sorted(classes, key=lambda c: -c.count), correct_at_1=found["correct_at_1"],
        knn_inside=found["knn_inside"], expected=found["expected"], radius_mean=found["radius_mean"],
        nearest_rest_mean=found["nearest_rest_mean"], lipschitz=split_means(view.art.lipschitz),
        logdet=split_means(view.art.logdet))
