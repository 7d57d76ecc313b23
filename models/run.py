"""One run, end to end, into one folder: split → train → measure (models/measure.py) → summary.

The four entry points: `execute_run` trains (rank 0 under torchrun, with `follow_run` on the other ranks),
`import_model` measures an exported checkpoint and `import_torchscript` a TorchScript embedder without
training, so imported and trained runs are measured by exactly the same code. Every file goes through
models/runfolder.py (atomic writes), so a reader sees either the old file or the new one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import ValidationError

from models import distributed
from models.checkpoint import load_checkpoint
from models.config import RunConfig
from models.data import ImageSet, zero_shot_split
from models.inference import EMBED_BATCH, load_model, script_embed, script_input
from models.measure import SPANS_IMPORTED, SPANS_TRAINED, Stages, measure_embeddings, measure_model, summary
from models.progress import CancelCheck, ProgressCallback, ignore_progress, never_cancel
from models.runfolder import SPLITS, RunFolder
from models.sample_maps import local_lipschitz
from models.trainer import TrainResult, build_distance, select_device, train


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
    folder = RunFolder(run_dir)
    stages = Stages(on_progress or ignore_progress, should_cancel or never_cancel, SPANS_TRAINED)
    t0 = time.perf_counter()
    train_idx, test_idx = zero_shot_split(image_set, config.split)
    split = {"train": train_idx, "test": test_idx}
    folder.write_start(config, split)
    distributed.broadcast((str(image_set.root), config.model_dump(mode="json"), str(folder.dir), resume))

    stages.start("train", "training")
    result = train(config, image_set, train_idx, folder.dir, stages.trainer_callback, stages.should_cancel, resume)
    timings = {"train_s": result.seconds}
    heads, measured = measure_model(result.model, result.distance, image_set, split, folder, stages,
                                    Path(parent_dir) if parent_dir else None, config.seed, device=result.device,
                                    amp=config.amp)
    timings.update(measured, total_s=time.perf_counter() - t0)
    out = summary("train", config, split, heads, timings, result.history, result.device, result.samples_per_s)
    folder.write_summary(out)
    stages.done()
    return out


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
    folder = RunFolder(run_dir)
    checkpoint_path = Path(checkpoint_path)
    stages = Stages(on_progress or ignore_progress, should_cancel or never_cancel, SPANS_IMPORTED)
    t0 = time.perf_counter()
    loaded = load_model(checkpoint_path)
    if loaded.model.in_channels != image_set.channels:
        raise ValueError(f"the checkpoint's model takes {loaded.model.in_channels}-channel images but this image "
                         f"set has {image_set.channels}-channel images; import it with a matching image set")
    config = loaded.config
    train_idx, test_idx = zero_shot_split(image_set, config.split)
    split = {"train": train_idx, "test": test_idx}
    folder.write_start(config, split)
    folder.copy_checkpoint_from(checkpoint_path)
    history = list(load_checkpoint(folder.checkpoint_path)["history"])
    folder.write_history(history)

    # On this machine's device ("auto"): the checkpoint's own `device` names the machine it trained on.
    heads, timings = measure_model(loaded.model, loaded.distance, image_set, split, folder, stages,
                                   Path(parent_dir) if parent_dir else None, config.seed, device=loaded.device,
                                   amp=config.amp)
    timings["total_s"] = time.perf_counter() - t0
    out = summary("import", config, split, heads, timings, history, loaded.device, None)
    folder.write_summary(out)
    stages.done()
    return out


def import_torchscript(module_path: str | Path, image_set: ImageSet, run_dir: str | Path, config: RunConfig,
                       on_progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
                       parent_dir: str | Path | None = None,
                       on_config: Callable[[RunConfig], None] | None = None) -> dict[str, Any]:
    """Measure a TorchScript embedding model on `image_set` (no training) into `run_dir`; returns the summary.

    Loading a TorchScript archive runs its code: call this only for a file the user explicitly allowed, and
    in a worker process. Input convention: float32 (B, C, S, S), raw pixels / 255 (0..1, no mean/std
    normalisation), C the set's channel count, S `config.image_size` or else the set's native size; the
    module must return (B, D). `config` supplies the split, distance and seed; its embedding_dim and
    image_size are rewritten to what was measured, and `on_config` gets that config before the folder's copy is
    written (the store records it: the caller's record is the truth). No flow, so no logdet maps; local Lipschitz is taken
    with respect to the 0..1 input pixels (not a metric layer's input, as for a dmlscope model), and left
    out with a note in the summary if the module cannot be differentiated twice. The module runs on the CPU (a
    traced module may hold CPU tensors in its code); evaluation and statistics on `select_device(config.device)`.
    """
    folder = RunFolder(run_dir)
    stages = Stages(on_progress or ignore_progress, should_cancel or never_cancel, SPANS_IMPORTED)
    t0 = time.perf_counter()
    size = config.image_size or image_set.native_size
    if size is None:
        raise ValueError("the images of this set have different sizes; import the module with an image_size")
    module = torch.jit.load(str(module_path), map_location="cpu").eval()
    train_idx, test_idx = zero_shot_split(image_set, config.split)
    split = {"train": train_idx, "test": test_idx}
    pixels = image_set.pixels(size)

    stages.start("embed", "embedding train and test images with the TorchScript module")
    embeddings = {s: script_embed(module, pixels, split[s], stages.should_cancel) for s in SPLITS}
    timings = {"embed_s": time.perf_counter() - t0}
    dim = embeddings["train"].shape[1]
    try:
        config = RunConfig.model_validate({**config.model_dump(mode="json"), "embedding_dim": dim,
                                           "image_size": size, "flow": {"enabled": False}})
    except ValidationError as e:
        raise ValueError(f"the TorchScript module returns {dim}-dimensional embeddings, which a run cannot "
                         f"record: embedding_dim {e.errors()[0]['msg']}") from None
    if on_config is not None:
        on_config(config)
    folder.write_start(config, split)
    lipschitz_failure: list[str] = []

    def per_sample(s: str) -> dict[str, np.ndarray]:
        if lipschitz_failure:
            return {}
        idx = split[s]
        try:  # chunk by chunk: the whole split as float pixels may not fit in memory
            return {"lipschitz": np.concatenate([
                local_lipschitz(module, script_input(pixels, idx[i:i + EMBED_BATCH]), batch_size=EMBED_BATCH,
                                seed=config.seed) for i in range(0, len(idx), EMBED_BATCH)])}
        except RuntimeError as e:  # e.g. an op without a double backward
            lipschitz_failure.append(str(e).strip().splitlines()[-1])
            return {}

    device = select_device(config.device)
    heads, measured = measure_embeddings(embeddings, build_distance(config), image_set, split, folder, stages,
                                         Path(parent_dir) if parent_dir else None, config.seed, per_sample,
                                         device=device)
    timings.update(measured, total_s=time.perf_counter() - t0)
    out = {**summary("import", config, split, heads, timings, [], device, None),
               "model_format": "torchscript",
               "notes": [f"local Lipschitz omitted: the module cannot be differentiated twice "
                         f"({lipschitz_failure[0]})" if lipschitz_failure else
                         "local Lipschitz constants are with respect to the input pixels scaled 0..1"]}
    folder.write_summary(out)
    stages.done()
    return out
