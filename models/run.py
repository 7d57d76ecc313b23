"""One run, end to end, into one folder: split → train → embed → evaluate → stats → projections → summary.

The run folder (docs/architecture.md) is the unit the UI and the CLI compare; every file in it is written
atomically, so a reader (the server, while a run is still going) sees either the old file or the new one.
`import_model` fills the same folder from an exported checkpoint without training, so imported and trained
runs are measured by exactly the same code.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import ValidationError
from pytorch_metric_learning.distances import BaseDistance

from models import distributed
from models.compat import checked
from models.config import RunConfig
from models.augment import eval_pixels
from models.data import ImageSet, zero_shot_split
from models.budget import steps_per_epoch, under_trained
from models.diagnostics import network_lipschitz, saturation_map, summarise
from models.evaluate import evaluate
from models.geometry import common_space_stats, headline
from models.network import EmbeddingNet
from models.progress import Cancelled, CancelCheck, Progress, ProgressCallback, ignore_progress, never_cancel
from models.projection import MapParams, align, project
from models.stats import class_stats, local_lipschitz, logdet_map
from models.trainer import (CHECKPOINT, HISTORY, TrainResult, atomic_write, atomic_write_json, build_distance,
                            build_model, load_checkpoint, select_device, train)

SPLITS = ("train", "test")
PROJECTION_SPLITS = ("train", "test", "all")  # "all": train then test, in one shared map
EMBED_BATCH = 256
LIPSCHITZ_BATCH = 1024
TORCHSCRIPT = "model.torchscript.pt"  # an imported TorchScript embedder, kept in its run folder instead of CHECKPOINT

# Share of the progress bar per stage: training dominates; the rest is measured, not guessed, on mnist5k.
_SPANS_TRAINED = {"train": (0.0, 0.8), "embed": (0.8, 0.84), "evaluate": (0.84, 0.88), "stats": (0.88, 0.98),
                  "project": (0.98, 1.0)}
_SPANS_IMPORTED = {"embed": (0.0, 0.2), "evaluate": (0.2, 0.4), "stats": (0.4, 0.9), "project": (0.9, 1.0)}


class _Stages:
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


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the temp name
            np.save(f, array)

    atomic_write(path, write)


# ---- the model of a run -------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    model: EmbeddingNet  # eval mode, on `device`
    distance: BaseDistance  # on the CPU (evaluation and faiss run there)
    config: RunConfig
    image_size: int  # the side the model was trained at: query pixels must be prepared at this size
    device: torch.device


def load_model(source: str | Path, device: str = "auto") -> LoadedModel:
    """The model and distance from a run folder or a checkpoint file (weights_only=True: no code runs)."""
    path = Path(source)
    if path.is_dir() and not (path / CHECKPOINT).exists() and (path / TORCHSCRIPT).exists():
        raise ValueError(f"{path.name} is an imported TorchScript module: its code runs only in a worker, so it "
                         "cannot embed new images or be exported as a checkpoint; import a dmlscope checkpoint "
                         "for that")
    ckpt = load_checkpoint(path / CHECKPOINT if path.is_dir() else path)
    config = RunConfig.model_validate(ckpt["config"])
    # Every weight comes from the checkpoint: never open the pretrained file its config may name (it could be
    # any path, in a checkpoint someone uploaded).
    skeleton = config.skeleton()
    model = build_model(skeleton, int(ckpt["in_channels"]), int(ckpt["image_size"]))
    model.load_state_dict(ckpt["model"])
    distance = build_distance(config)
    distance.load_state_dict(ckpt["distance"])
    target = select_device(device)
    return LoadedModel(model.to(target).eval(), distance.cpu().eval(), config, int(ckpt["image_size"]), target)


def load_distance(run_dir: str | Path) -> BaseDistance:
    """A run's distance on the CPU: from its checkpoint (learned parameters), else from its config (a
    TorchScript import, whose distance is parameter-free). Loads no model code."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).exists():
        return load_model(run_dir, device="cpu").distance
    return build_distance(RunConfig.model_validate_json((run_dir / "config.json").read_text(encoding="utf-8"))).eval()


def read_checkpoint_config(path: str | Path) -> RunConfig:
    """The RunConfig a checkpoint was trained with (for recording an import before it runs)."""
    return checked(RunConfig.model_validate(load_checkpoint(Path(path))["config"]))


def embed_images(source: str | Path | EmbeddingNet, pixels: np.ndarray) -> np.ndarray:
    """float32 (N, D) inference embeddings of raw uint8 pixels (N, C, S, S) or one image (C, S, S).

    `source` is a run folder, a checkpoint file, or a model. Pixels must be prepared like the run's images at
    the model's `image_size` (ImageSet.query_pixels does that); normalisation happens inside the model.
    """
    model = load_model(source).model if not isinstance(source, EmbeddingNet) else source
    pixels = np.asarray(pixels)
    if pixels.ndim == 3:
        pixels = pixels[None]
    return _embed(model, pixels, np.arange(len(pixels)))["embedding"]


def _embed(model: EmbeddingNet, pixels: np.ndarray, idx: np.ndarray,
           should_cancel: CancelCheck = never_cancel) -> dict[str, np.ndarray]:
    """Batched, no-grad, eval-mode pass: the embedding, the flow's input (`features`, with flow) and the metric
    layer's input (`lipschitz_input`: flow input with flow, backbone features without)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"embedding": [], "features": [], "lipschitz_input": []}
    try:
        with torch.no_grad():
            for s in range(0, len(idx), EMBED_BATCH):
                if should_cancel():
                    raise Cancelled("cancelled while embedding")
                x = torch.from_numpy(np.ascontiguousarray(pixels[idx[s:s + EMBED_BATCH]])).to(device)
                f = model.backbone_features(x)
                out = model.from_backbone(f)
                parts["embedding"].append(out.embedding.float().cpu())
                if out.features is not None:
                    parts["features"].append(out.features.float().cpu())
                parts["lipschitz_input"].append((out.features if out.features is not None else f).float().cpu())
    finally:
        model.train(was_training)
    return {k: torch.cat(v).numpy() for k, v in parts.items() if v}


# ---- measuring a trained model ------------------------------------------------------------------------------
def _measure(model: EmbeddingNet, distance: BaseDistance, image_set: ImageSet, split: dict[str, np.ndarray],
             run_dir: Path, stages: _Stages, parent_dir: Path | None, seed: int) -> tuple[dict, dict[str, float]]:
    """Embed both splits with a dmlscope model, then `_measure_embeddings`; (headline per split, timings)."""
    pixels = eval_pixels(image_set, model.eval_resize, model.image_size)
    t = time.perf_counter()
    stages.start("embed", "embedding train and test images")
    passes = {s: _embed(model, pixels, split[s], stages.should_cancel) for s in SPLITS}
    timings = {"embed_s": time.perf_counter() - t}
    device = next(model.parameters()).device

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

    headline, measured = _measure_embeddings({s: passes[s]["embedding"] for s in SPLITS}, distance, image_set,
                                             split, run_dir, stages, parent_dir, seed, per_sample)
    return {s: {**headline[s], **summarise(maps[s])} for s in SPLITS}, {**timings, **measured}


def _measure_embeddings(embeddings: dict[str, np.ndarray], distance: BaseDistance, image_set: ImageSet,
                        split: dict[str, np.ndarray], run_dir: Path, stages: _Stages, parent_dir: Path | None,
                        seed: int, per_sample: Callable[[str], dict[str, np.ndarray]]
                        ) -> tuple[dict, dict[str, float]]:
    """Save (N, D) embeddings per split, evaluate, compute stats and PCA maps into `run_dir`.

    `per_sample(split)` gives the model-specific (N,) maps saved as `<name>_<split>.npy` (logdet, lipschitz):
    what a model offers differs (a TorchScript module has no flow), the rest is measured identically.
    Returns (headline per split, timings).
    """
    timings: dict[str, float] = {}
    distance = distance.cpu().eval()
    for s in SPLITS:
        _save_npy(run_dir / f"embeddings_{s}.npy", embeddings[s])

    t = time.perf_counter()
    stages.start("evaluate", "Recall@K, MAP@R, NMI on unseen and train classes")
    metrics = {s: evaluate(embeddings[s], image_set.labels[split[s]], distance, nmi_seed=seed) for s in SPLITS}
    atomic_write_json(run_dir / "metrics.json", metrics)
    timings["evaluate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    stages.start("stats", "class radius, density, margins, log|det J|, local Lipschitz")
    stats, common = {}, {}
    for s in SPLITS:
        result = class_stats(embeddings[s], image_set.labels[split[s]], distance, image_set.class_names)
        common[s] = common_space_stats(embeddings[s], image_set.labels[split[s]])
        _save_npy(run_dir / f"centroids_{s}.npy", result.pop("centroids").astype(np.float32))
        stats[s] = result
        if stages.should_cancel():
            raise Cancelled("cancelled while computing statistics")
        for name, values in per_sample(s).items():
            _save_npy(run_dir / f"{name}_{s}.npy", values.astype(np.float32))
    atomic_write_json(run_dir / "stats.json", stats)
    timings["stats_s"] = time.perf_counter() - t

    t = time.perf_counter()
    stages.start("project", "PCA maps")
    embeddings = {**embeddings, "all": np.concatenate([embeddings["train"], embeddings["test"]])}
    for s in PROJECTION_SPLITS:
        xy = project(embeddings[s], "pca", seed=seed, distance=distance)
        _save_npy(run_dir / projection_file("pca", s), _aligned(xy, split, s, parent_dir, "pca"))
    timings["project_s"] = time.perf_counter() - t
    return {s: headline(metrics[s], stats[s], common[s]) for s in SPLITS}, timings


def _split_ids(split: dict[str, np.ndarray], which: str) -> np.ndarray:
    return np.concatenate([split["train"], split["test"]]) if which == "all" else split[which]


def _aligned(xy: np.ndarray, split: dict[str, np.ndarray], which: str, parent_dir: Path | None,
             method: str, params: MapParams = MapParams()) -> np.ndarray:
    """`xy` rotated/scaled onto the parent run's map of the same images, so a retrain keeps its parent's layout;
    unchanged without a parent map or with fewer than 3 shared images."""
    if parent_dir is None:
        return xy
    parent = load_run(parent_dir)
    parent_xy = parent.projection(method, which, params)
    if parent_xy is None:
        return xy
    try:
        return align(xy, parent_xy, _split_ids(split, which), _split_ids(parent.split, which))
    except ValueError:  # too few shared images (another dataset or split): nothing to align to
        return xy


def _write_start(run_dir: Path, config: RunConfig, split: dict[str, np.ndarray]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", config.model_dump(mode="json"))
    atomic_write_json(run_dir / "split.json", {s: split[s].tolist() for s in SPLITS})


def _summary(origin: str, config: RunConfig, split: dict[str, np.ndarray], headline: dict, timings: dict,
             history: list[dict], device: torch.device, samples_per_s: float | None) -> dict[str, Any]:
    summary = {
        "origin": origin, "train": headline["train"], "test": headline["test"],
        "epochs": len(history), "final_loss": history[-1]["loss"] if history else None,
        "num_train": len(split["train"]), "num_test": len(split["test"]),
        "embedding_dim": config.embedding_dim, "distance": config.distance.name, "flow": config.flow.enabled,
        "device": device.type, "samples_per_s": samples_per_s, "timings": timings,
        # None for a TorchScript import: no training history to judge
        "under_trained": under_trained(history, steps_per_epoch(config, len(split["train"]))) if history else None,
    }
    json.dumps(summary, allow_nan=False)  # fail here, not in the store, if a value is not JSON
    return summary


def execute_run(image_set: ImageSet, config: RunConfig, run_dir: str | Path,
                on_progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
                parent_dir: str | Path | None = None, resume: bool = True) -> dict[str, Any]:
    """Train and measure one run into `run_dir`; returns the summary (also written to summary.json).

    With `resume`, a checkpoint already in `run_dir` is continued (the server's "resume"). `parent_dir` is the
    run this one retrains: its maps are aligned to the parent's. Raises Cancelled, TrainingDiverged, or
    ValueError/DatasetError for configs the data cannot satisfy.

    Under torchrun this is rank 0's call: it sends the job to the other ranks (waiting in `follow_run`), trains
    with them, then measures and writes the run folder alone.
    """
    if not distributed.topology().is_primary:
        raise RuntimeError("execute_run writes the run folder and runs on rank 0 only; other ranks call follow_run()")
    run_dir = Path(run_dir)
    stages = _Stages(on_progress or ignore_progress, should_cancel or never_cancel, _SPANS_TRAINED)
    t0 = time.perf_counter()
    train_idx, test_idx = zero_shot_split(image_set, config.split)
    split = {"train": train_idx, "test": test_idx}
    _write_start(run_dir, config, split)
    distributed.broadcast((str(image_set.root), config.model_dump(mode="json"), str(run_dir), resume))

    stages.start("train", "training")
    result = train(config, image_set, train_idx, run_dir, stages.trainer_callback, stages.should_cancel, resume)
    timings = {"train_s": result.seconds}
    headline, measured = _measure(result.model, result.distance, image_set, split, run_dir, stages,
                                  Path(parent_dir) if parent_dir else None, config.seed)
    timings.update(measured, total_s=time.perf_counter() - t0)
    summary = _summary("train", config, split, headline, timings, result.history, result.device,
                       result.samples_per_s)
    atomic_write_json(run_dir / "summary.json", summary)
    stages.done()
    return summary


def follow_run() -> TrainResult:
    """A torchrun rank other than 0: receive rank 0's job from its `execute_run` (image set folder, config, run
    folder), train in step with it, and return; writes nothing. The image set's folder must be readable at the
    same path here (same machine, or a data folder shared between nodes)."""
    if distributed.topology().is_primary:
        raise RuntimeError("follow_run is for torchrun ranks other than 0; rank 0 calls execute_run")
    root, config_dump, run_dir, resume = distributed.broadcast(None)
    image_set = ImageSet(root)
    config = RunConfig.model_validate(config_dump)
    train_idx, _ = zero_shot_split(image_set, config.split)
    return train(config, image_set, train_idx, Path(run_dir), resume=resume)


def import_model(checkpoint_path: str | Path, image_set: ImageSet, run_dir: str | Path,
                 on_progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
                 parent_dir: str | Path | None = None) -> dict[str, Any]:
    """Measure an exported dmlscope checkpoint on `image_set` (no training) into `run_dir`; returns the summary.

    The checkpoint is loaded with weights_only=True and copied into the run folder, so the imported run can
    be queried and exported like a trained one. The split is the checkpoint config's split of this image set.
    """
    run_dir = Path(run_dir)
    checkpoint_path = Path(checkpoint_path)
    stages = _Stages(on_progress or ignore_progress, should_cancel or never_cancel, _SPANS_IMPORTED)
    t0 = time.perf_counter()
    loaded = load_model(checkpoint_path)
    if loaded.model.in_channels != image_set.channels:
        raise ValueError(f"the checkpoint's model takes {loaded.model.in_channels}-channel images but this image "
                         f"set has {image_set.channels}-channel images; import it with a matching image set")
    config = loaded.config
    train_idx, test_idx = zero_shot_split(image_set, config.split)
    split = {"train": train_idx, "test": test_idx}
    _write_start(run_dir, config, split)
    if checkpoint_path.resolve() != (run_dir / CHECKPOINT).resolve():
        atomic_write(run_dir / CHECKPOINT, lambda tmp: shutil.copyfile(checkpoint_path, tmp))
    history = list(load_checkpoint(run_dir / CHECKPOINT)["history"])
    atomic_write_json(run_dir / HISTORY, history)

    headline, timings = _measure(loaded.model, loaded.distance, image_set, split, run_dir, stages,
                                 Path(parent_dir) if parent_dir else None, config.seed)
    timings["total_s"] = time.perf_counter() - t0
    summary = _summary("import", config, split, headline, timings, history, loaded.device, None)
    atomic_write_json(run_dir / "summary.json", summary)
    stages.done()
    return summary


def _script_embed(module: torch.jit.ScriptModule, pixels: np.ndarray, idx: np.ndarray,
                  should_cancel: CancelCheck = never_cancel) -> np.ndarray:
    """float32 (N, D) embeddings of images `idx` from a TorchScript embedder, fed float (B, C, S, S) in 0..1."""
    parts = []
    with torch.no_grad():
        for s in range(0, len(idx), EMBED_BATCH):
            if should_cancel():
                raise Cancelled("cancelled while embedding")
            x = _script_input(pixels, idx[s:s + EMBED_BATCH])
            try:
                out = module(x)
            except Exception as e:  # TorchScript raises its own types; the message is what the user needs
                raise ValueError(f"the TorchScript module failed on a float batch of shape {tuple(x.shape)} "
                                 f"(B, C, H, W, pixels scaled 0..1): {str(e).strip().splitlines()[-1]}") from None
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != len(x):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"the TorchScript module returned {shape} for a batch of {len(x)} images; an "
                                 f"embedder must return one tensor of shape (B, D)")
            parts.append(out.float())
    return torch.cat(parts).numpy()


def _script_input(pixels: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels[idx])).float().div_(255.0)


def import_torchscript(module_path: str | Path, image_set: ImageSet, run_dir: str | Path, config: RunConfig,
                       on_progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
                       parent_dir: str | Path | None = None) -> dict[str, Any]:
    """Measure a TorchScript embedding model on `image_set` (no training) into `run_dir`; returns the summary.

    Loading a TorchScript archive runs its code: call this only for a file the user explicitly allowed, and
    in a worker process. Input convention: float32 (B, C, S, S), raw pixels / 255 (0..1, no mean/std
    normalisation), C the set's channel count, S `config.image_size` or else the set's native size; the
    module must return (B, D). `config` supplies the split, distance and seed; its embedding_dim and
    image_size are rewritten to what was measured. No flow, so no logdet maps; local Lipschitz is taken
    with respect to the 0..1 input pixels (not a metric layer's input, as for a dmlscope model), and left
    out with a note in the summary if the module cannot be differentiated twice.
    """
    run_dir = Path(run_dir)
    stages = _Stages(on_progress or ignore_progress, should_cancel or never_cancel, _SPANS_IMPORTED)
    t0 = time.perf_counter()
    size = config.image_size or image_set.native_size
    if size is None:
        raise ValueError("the images of this set have different sizes; import the module with an image_size")
    module = torch.jit.load(str(module_path), map_location="cpu").eval()
    train_idx, test_idx = zero_shot_split(image_set, config.split)
    split = {"train": train_idx, "test": test_idx}
    pixels = image_set.pixels(size)

    stages.start("embed", "embedding train and test images with the TorchScript module")
    embeddings = {s: _script_embed(module, pixels, split[s], stages.should_cancel) for s in SPLITS}
    timings = {"embed_s": time.perf_counter() - t0}
    dim = embeddings["train"].shape[1]
    try:
        config = RunConfig.model_validate({**config.model_dump(mode="json"), "embedding_dim": dim,
                                           "image_size": size, "flow": {"enabled": False}})
    except ValidationError as e:
        raise ValueError(f"the TorchScript module returns {dim}-dimensional embeddings, which a run cannot "
                         f"record: embedding_dim {e.errors()[0]['msg']}") from None
    _write_start(run_dir, config, split)
    lipschitz_failure: list[str] = []

    def per_sample(s: str) -> dict[str, np.ndarray]:
        if lipschitz_failure:
            return {}
        idx = split[s]
        try:  # chunk by chunk: the whole split as float pixels may not fit in memory
            return {"lipschitz": np.concatenate([
                local_lipschitz(module, _script_input(pixels, idx[i:i + EMBED_BATCH]), batch_size=EMBED_BATCH,
                                seed=config.seed) for i in range(0, len(idx), EMBED_BATCH)])}
        except RuntimeError as e:  # e.g. an op without a double backward
            lipschitz_failure.append(str(e).strip().splitlines()[-1])
            return {}

    headline, measured = _measure_embeddings(embeddings, build_distance(config), image_set, split, run_dir,
                                             stages, Path(parent_dir) if parent_dir else None, config.seed,
                                             per_sample)
    timings.update(measured, total_s=time.perf_counter() - t0)
    summary = {**_summary("import", config, split, headline, timings, [], torch.device("cpu"), None),
               "model_format": "torchscript",
               "notes": [f"local Lipschitz omitted: the module cannot be differentiated twice "
                         f"({lipschitz_failure[0]})" if lipschitz_failure else
                         "local Lipschitz constants are with respect to the input pixels scaled 0..1"]}
    atomic_write_json(run_dir / "summary.json", summary)
    stages.done()
    return summary


# ---- reading a run back -------------------------------------------------------------------------------------
class RunArtifacts:
    """Lazy, read-only view of a run folder; each file is read on first access (arrays memory-mapped)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        if not (self.dir / "config.json").is_file():
            raise FileNotFoundError(f"{self.dir} is not a dmlscope run folder (config.json is missing)")

    def _json(self, name: str) -> Any:
        path = self.dir / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def _npy(self, name: str) -> np.ndarray | None:
        path = self.dir / name
        return np.load(path, mmap_mode="r") if path.is_file() else None

    @cached_property
    def config(self) -> RunConfig:
        return RunConfig.model_validate(self._json("config.json"))

    @cached_property
    def split(self) -> dict[str, np.ndarray]:
        """Image indices (into the ImageSet) of each split, in the row order of every per-split array."""
        raw = self._json("split.json") or {}
        return {s: np.asarray(raw.get(s, []), dtype=np.int64) for s in SPLITS}

    @property
    def summary(self) -> dict[str, Any] | None:
        return self._json("summary.json")

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self._json("metrics.json")

    @property
    def stats(self) -> dict[str, Any] | None:
        return self._json("stats.json")

    @property
    def history(self) -> list[dict[str, Any]]:
        return self._json(HISTORY) or []

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / CHECKPOINT

    def embeddings(self, split: str) -> np.ndarray | None:
        return self._npy(f"embeddings_{split}.npy")

    def centroids(self, split: str) -> np.ndarray | None:
        return self._npy(f"centroids_{split}.npy")

    def logdet(self, split: str) -> np.ndarray | None:
        """(N,) log|det J| of the flow per sample; None when the run has no flow layer."""
        return self._npy(f"logdet_{split}.npy")

    def lipschitz(self, split: str) -> np.ndarray | None:
        return self._npy(f"lipschitz_{split}.npy")

    def lipschitz_network(self, split: str) -> np.ndarray | None:
        """(N,) the whole network's local Lipschitz constant, NaN where not sampled (models.diagnostics)."""
        return self._npy(f"lipschitz_network_{split}.npy")

    def projection(self, method: str, split: str, params: MapParams = MapParams()) -> np.ndarray | None:
        """(N, dim) map if computed (the 2-D PCA always is; the others after `ensure_projection`)."""
        return self._npy(projection_file(method, split, params))

    def class_compactness(self, split: str) -> dict[str, dict[str, Any]]:
        """Per-class stats of one split keyed by class name (what `compare` aligns two runs on)."""
        stats = self.stats or {}
        return {c["name"]: c for c in stats.get(split, {}).get("per_class", [])}


def load_run(run_dir: str | Path) -> RunArtifacts:
    return RunArtifacts(run_dir)


def projection_file(method: str, split: str, params: MapParams = MapParams()) -> str:
    """The one place a cached map's file name is made: per method, split and `MapParams`."""
    return f"projection_{method}_{split}{params.suffix(method)}.npy"


def ensure_projection(run_dir: str | Path, method: str, split: str = "test",
                      parent_dir: str | Path | None = None, params: MapParams = MapParams()) -> np.ndarray:
    """The run's map of `split` ("train", "test" or "all"), computed on first call and cached in the folder
    under `projection_file` (one file per method, split and `params`).

    UMAP starts from the parent run's map of the same images and parameters when there is one (else this run's
    PCA) and is then Procrustes-aligned to it, so a retrained run's map keeps its parent's layout.
    """
    if split not in PROJECTION_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(PROJECTION_SPLITS)}")
    run = load_run(run_dir)
    cached = run.projection(method, split, params)
    if cached is not None:
        return np.asarray(cached)
    parts = [run.embeddings(s) for s in (SPLITS if split == "all" else (split,))]
    if any(p is None for p in parts):
        raise FileNotFoundError(f"{run.dir} has no embeddings yet; the run must finish before it can be mapped")
    embeddings = np.concatenate(parts)
    distance = load_distance(run.dir)
    init = None
    parent = load_run(parent_dir) if parent_dir else None
    if parent is not None:
        parent_xy = parent.projection(method, split, params)
        if parent_xy is not None and np.array_equal(_split_ids(parent.split, split), _split_ids(run.split, split)):
            init = np.asarray(parent_xy)
    xy = project(embeddings, method, init=init, seed=run.config.seed, distance=distance,
                 n_neighbors=params.n_neighbors, min_dist=params.min_dist, dim=params.dim)
    xy = _aligned(xy, run.split, split, Path(parent_dir) if parent_dir else None, method, params)
    _save_npy(run.dir / projection_file(method, split, params), xy)
    return xy
