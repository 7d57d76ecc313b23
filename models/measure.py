"""Measuring a run into its folder: embeddings → metrics → stats → PCA maps → summary, one code path for all.

A trained run, an imported checkpoint, a TorchScript module and an imported embeddings file differ only in how
their embeddings and per-sample maps are made (`measure_model` for a dmlscope model; the entry points in
models/run.py and models/embeddings_import.py for the others); `measure_embeddings` measures them identically.

Where: every stage runs on the one `device` its caller decided once for the run (the device it trained on,
`select_device(config.device)` for an import: CUDA when present under "auto"), passed explicitly to each — the
embedding passes (under the run's AMP on CUDA), the k-NN of evaluation (blocked products, models/knn.py), the
statistics' products and distances, the flow maps and the Lipschitz power iterations; data travel there chunk
by chunk and results come back to the CPU. On the CPU every value is the one the CPU path always gave. NMI's
k-means (faiss) and the PCA map stay on the CPU.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pytorch_metric_learning.distances import BaseDistance

from models.augment import eval_pixels
from models.budget import steps_per_epoch, under_trained
from models.config import RunConfig
from models.data import ImageSet
from models.diagnostics import network_lipschitz, saturation_map, summarise
from models.evaluate import evaluate
from models.geometry import common_space_stats, headline
from models.inference import embed_passes
from models.maps import aligned_to_parent
from models.network import EmbeddingNet
from models.progress import Cancelled, CancelCheck, Progress, ProgressCallback
from models.projection import project
from models.query_gallery import split_query_gallery
from models.runfolder import PROJECTION_SPLITS, SPLITS, RunFolder
from models.sample_maps import local_lipschitz, logdet_map
from models.stats import class_stats

LIPSCHITZ_BATCH = 1024

# Share of the progress bar per stage: training dominates; the rest is measured, not guessed, on mnist5k.
SPANS_TRAINED = {"train": (0.0, 0.8), "embed": (0.8, 0.84), "evaluate": (0.84, 0.88), "stats": (0.88, 0.98),
                 "project": (0.98, 1.0)}
SPANS_IMPORTED = {"embed": (0.0, 0.2), "evaluate": (0.2, 0.4), "stats": (0.4, 0.9), "project": (0.9, 1.0)}


class Stages:
    """Maps each stage's own 0..1 progress onto its span of the whole run and polls for cancellation."""

    def __init__(self, on_progress: ProgressCallback, should_cancel: CancelCheck, spans: dict[str, tuple]):
        self.on_progress, self.should_cancel, self.spans = on_progress, should_cancel, spans

    def start(self, stage: str, message: str = "") -> None:
        if self.should_cancel():
            raise Cancelled(f"cancelled before the {stage} stage")
        self.on_progress(Progress(stage=stage, fraction=self.spans[stage][0], message=message))

    def trainer_callback(self, p: Progress) -> None:
        lo, hi = self.spans["train"]
        p.fraction = lo + (hi - lo) * p.fraction
        self.on_progress(p)

    def done(self) -> None:
        self.on_progress(Progress(stage="done", fraction=1.0))


def measure_model(model: EmbeddingNet, distance: BaseDistance, image_set: ImageSet, split: dict[str, np.ndarray],
                  folder: RunFolder, stages: Stages, parent_dir: Path | None, seed: int, *, device: torch.device,
                  amp: bool = False) -> tuple[dict, dict]:
    """Embed both splits with a dmlscope model on `device` (autocast with `amp` on CUDA), then
    `measure_embeddings` there; (headline per split, timings). The model is moved to `device`."""
    model.to(device)
    pixels = eval_pixels(image_set, model.eval_resize, model.image_size)
    t = time.perf_counter()
    stages.start("embed", "embedding train and test images")
    passes = {s: embed_passes(model, pixels, split[s], stages.should_cancel, amp) for s in SPLITS}
    timings = {"embed_s": time.perf_counter() - t}

    maps: dict[str, dict[str, np.ndarray]] = {}

    def per_sample(s: str) -> dict[str, np.ndarray]:
        out = {}
        if model.flow is not None:
            out["logdet"] = logdet_map(model.flow, passes[s]["features"])
            out["saturation"] = saturation_map(model.flow, passes[s]["features"])
        # Large batches: the vmapped power iteration's cost is mostly per batch, not per sample.
        out["lipschitz"] = local_lipschitz(model.metric_layer(),
                                           torch.from_numpy(passes[s]["lipschitz_input"]).to(device),
                                           batch_size=LIPSCHITZ_BATCH, seed=seed)
        t_network = time.perf_counter()
        out["lipschitz_network"] = network_lipschitz(model, pixels, split[s], seed)
        timings[f"lipschitz_network_{s}_s"] = time.perf_counter() - t_network
        maps[s] = out
        return out

    heads, measured = measure_embeddings({s: passes[s]["embedding"] for s in SPLITS}, distance, image_set, split,
                                         folder, stages, parent_dir, seed, per_sample, device=device)
    return {s: {**heads[s], **summarise(maps[s])} for s in SPLITS}, {**timings, **measured}


def measure_embeddings(embeddings: dict[str, np.ndarray], distance: BaseDistance, image_set: ImageSet,
                       split: dict[str, np.ndarray], folder: RunFolder, stages: Stages, parent_dir: Path | None,
                       seed: int, per_sample: Callable[[str], dict[str, np.ndarray]],
                       *, device: torch.device) -> tuple[dict, dict]:
    """Save (N, D) embeddings per split, evaluate, compute stats and PCA maps into `folder`; the k-NN and the
    statistics run on `device` (the distance is moved there).

    `per_sample(split)` gives the model-specific (N,) maps (models.runfolder.PER_SAMPLE: logdet, lipschitz…):
    what a model offers differs (a TorchScript module has no flow), the rest is measured identically.
    Returns (headline per split, timings).
    """
    timings: dict[str, float] = {}
    distance = distance.to(device).eval()
    for s in SPLITS:
        folder.write_array("embeddings", s, embeddings[s])

    t = time.perf_counter()
    stages.start("evaluate", "Recall@K, MAP@R, NMI on unseen and train classes")
    metrics = {s: evaluate(embeddings[s], image_set.labels[split[s]], distance, nmi_seed=seed, device=device)
               for s in SPLITS}
    for s in SPLITS:
        folder.write_correct_at_1(s, metrics[s].pop("correct_at_1"))
    for s in SPLITS:  # In-Shop: its own query → gallery Recall@K besides the all-against-all metrics
        qg = split_query_gallery(None if image_set.partition is None else image_set.partition[split[s]],
                                 embeddings[s], image_set.labels[split[s]], distance, device=device)
        if qg is not None:
            metrics[s]["query_gallery"] = qg
    folder.write_metrics(metrics)
    timings["evaluate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    stages.start("stats", "class radius, density, margins, log|det J|, local Lipschitz")
    stats, common = {}, {}
    for s in SPLITS:
        result = class_stats(embeddings[s], image_set.labels[split[s]], distance, image_set.class_names, device)
        common[s] = common_space_stats(embeddings[s], image_set.labels[split[s]], device)
        folder.write_array("centroids", s, result.pop("centroids").astype(np.float32))
        stats[s] = result
        if stages.should_cancel():
            raise Cancelled("cancelled while computing statistics")
        for name, values in per_sample(s).items():
            folder.write_array(name, s, values.astype(np.float32))
    folder.write_stats(stats)
    timings["stats_s"] = time.perf_counter() - t

    t = time.perf_counter()
    stages.start("project", "PCA maps")
    embeddings = {**embeddings, "all": np.concatenate([embeddings["train"], embeddings["test"]])}
    for s in PROJECTION_SPLITS:
        xy = project(embeddings[s], "pca", seed=seed, distance=distance)
        folder.write_projection("pca", s, aligned_to_parent(xy, split, s, parent_dir, "pca"))
    timings["project_s"] = time.perf_counter() - t
    return {s: headline(metrics[s], stats[s], common[s]) for s in SPLITS}, timings


def summary(origin: str, config: RunConfig, split: dict[str, np.ndarray], heads: dict, timings: dict,
            history: list[dict], device: torch.device, samples_per_s: float | None) -> dict[str, Any]:
    """summary.json: what the store records about a finished run (headline metrics per split, timings…);
    `device` is the one the run was measured on (and trained on, for a trained run)."""
    out = {
        "origin": origin, "train": heads["train"], "test": heads["test"],
        "epochs": len(history), "final_loss": history[-1]["loss"] if history else None,
        "num_train": len(split["train"]), "num_test": len(split["test"]),
        "embedding_dim": config.embedding_dim, "distance": config.distance.name, "flow": config.flow.enabled,
        "device": device.type, "samples_per_s": samples_per_s, "timings": timings,
        # None for a TorchScript import: no training history to judge
        "under_trained": under_trained(history, steps_per_epoch(config, len(split["train"]))) if history else None,
    }
    json.dumps(out, allow_nan=False)  # fail here, not in the store, if a value is not JSON
    return out
