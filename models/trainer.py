"""The training loop: device and AMP, P×K batches, loss + weighted regularizers, progress, cancel, checkpoints.

Reproducibility contract: a run is a pure function of its RunConfig (seed included), its image set and its
train indices on a given device. Every random source the loop draws from (torch, numpy, python `random`, the
sampler's own generator) is seeded from `config.seed` and saved in the per-epoch checkpoint, so resuming
after an interrupt continues exactly where an uninterrupted run would be (bit-identical on CPU).

Under torchrun (a process group joined by `models.distributed.process_group`) the same loop runs data-parallel
with DistributedDataParallel: each rank forwards its slice of the global P×K batch, the loss sees the gathered
global batch, and the result equals single-process training up to float rounding (models/distributed.py says
why). Only the primary rank reports progress and writes the checkpoint and history.
"""
from __future__ import annotations

import math
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.distances import BaseDistance
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from models import distributed
from models.augment import eval_pixels, input_normalisation
from models.budget import is_edge_step, steps_per_epoch
from models.checkpoint import load_checkpoint, save_checkpoint
from models.compat import check_config
from models.config import RunConfig
from models.data import ImageSet, MPerClassSampler
from models.data.loader import EpochJobs, TrainImages, loader_workers, train_loader
from models.distances import create_distance
from models.losses import create_criterion
from models.network import EmbeddingNet
from models.optim import GROUPS, build_optimizer, parameter_groups, regroup_state
from models.progress import Cancelled, CancelCheck, Progress, ProgressCallback, ignore_progress, never_cancel
from models.refresh import refresh_distance
from models.regularizers import RegularizerInputs, create_regularizer
from models.runfolder import RunFolder

WEIGHTS = "weights"  # TrainingDiverged.term when the loss stayed finite but a step left non-finite parameters


class TrainingDiverged(RuntimeError):
    """A loss term went NaN/inf; the run stops and keeps its last good (previous-epoch) checkpoint."""

    def __init__(self, epoch: int, step: int, term: str, value: float):
        self.epoch, self.step, self.term, self.value = epoch, step, term, value
        what = "the model weights are no longer finite" if term == WEIGHTS else f"the {term!r} term is {value}"
        super().__init__(f"training diverged at epoch {epoch}, step {step}: {what}; lower the learning rate or "
                         f"the regularizer weights (the last good checkpoint is kept)")


@dataclass
class TrainResult:
    model: EmbeddingNet  # on `device`, in eval mode
    criterion: nn.Module
    distance: BaseDistance  # the run's distance (learnable Mahalanobis L lives here)
    device: torch.device
    history: list[dict[str, Any]]  # one entry per completed epoch, resumed ones included
    epochs_trained: int  # epochs run by this call (0 when the checkpoint was already complete)
    seconds: float  # wall time of this call's training
    samples_per_s: float | None = None
    class_ids: list[int] = field(default_factory=list)  # train class ids, in the order of the criterion's labels


def select_device(requested: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; asking for `cuda` on a machine without one is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is visible; use device 'auto' or 'cpu'")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def resolve_image_size(config: RunConfig, image_set: ImageSet) -> int:
    size = config.image_size or image_set.native_size
    if size is None:
        raise ValueError("the images have different sizes; set image_size in the run config (e.g. 64 or 224)")
    return int(size)


def build_model(config: RunConfig, in_channels: int, image_size: int,
                mean: Any = None, std: Any = None) -> EmbeddingNet:
    """The run's network; `mean`/`std` are the data set's, replaced by ImageNet's for an ImageNet-pretrained
    torchvision backbone (models/augment.py). A checkpoint's buffers then carry them wherever the model goes."""
    mean, std = input_normalisation(config, mean, std, in_channels)
    return EmbeddingNet(config, in_channels, image_size, mean=mean, std=std)


def build_distance(config: RunConfig) -> BaseDistance:
    """The run's distance; a learnable Mahalanobis L is a parameter of it (trained, checkpointed)."""
    return create_distance(config.distance.name, normalize=config.distance.normalize, dim=config.embedding_dim,
                           **config.distance.params)


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    # numpy's state is converted to plain types + a tensor so the checkpoint loads with weights_only=True.
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "sampler": generator.get_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _comparable(config: RunConfig) -> dict[str, Any]:
    # Epochs may grow between resumes ("train longer"); the device may change; anything else must match. Where
    # the initial weights file lies does not matter: a resumed model takes every weight from its checkpoint.
    return config.model_dump(mode="json", exclude={"epochs", "device", "amp", "pretrained_weights"})


def amp_autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """The mixed precision of a run's forward passes (training and measuring alike): autocast to bf16 on CUDA
    where supported, else fp16; a no-op on the CPU or with `amp` off."""
    if not (enabled and device.type == "cuda"):
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


class _Amp:
    """`amp_autocast` + a GradScaler on CUDA (loss scaling for fp16 only); a no-op on CPU."""

    def __init__(self, device: torch.device, enabled: bool):
        self.device, self.enabled = device, enabled and device.type == "cuda"
        fp16 = self.enabled and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    def autocast(self) -> AbstractContextManager:
        return amp_autocast(self.device, self.enabled)


def _batch_loss(net: nn.Module, model: EmbeddingNet, criterion: nn.Module, distance: BaseDistance,
                regularizers: dict[str, tuple[float, nn.Module]], x: Tensor, y: Tensor,
                amp: _Amp) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
    """Total loss, each weighted term (the loss itself under "loss") and the criterion's diagnostics.

    `net` is `model` itself, or its DDP wrapper under torchrun; then `x` is this rank's slice of the batch and
    `y` the labels of the whole global batch, whose outputs are gathered before the loss.
    """
    with amp.autocast():
        out = net(x)
    # Losses and regularizers run in fp32: SNR's variance ratio and log-determinants are fragile in half.
    out = type(out)(*(distributed.gather(t.float()) if t is not None else None for t in out))
    loss_out = criterion(out.embedding, y)
    terms = {"loss": loss_out.loss}
    if regularizers:
        inputs = RegularizerInputs(embeddings=out.embedding, labels=y, features=out.features, logdet=out.logdet,
                                   logdet_dueling=out.logdet_dueling, flow=model.flow, model=model,
                                   distance=distance)
        for name, (weight, reg) in regularizers.items():
            terms[name] = weight * reg(inputs)
    return sum(terms.values()), terms, dict(loss_out.diagnostics)


def train(config: RunConfig, image_set: ImageSet, train_idx: np.ndarray, run_dir: Path,
          on_progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
          resume: bool = True) -> TrainResult:
    """Train on the images `train_idx` (indices into `image_set`), checkpointing into `run_dir` each epoch.

    With `resume`, a checkpoint already in `run_dir` (same config up to epochs/device) is continued. Raises
    Cancelled when `should_cancel()` turns true (checked before each step; nothing new is saved) and
    TrainingDiverged when a term goes non-finite.
    """
    check_config(config)  # the registries' verdict, even for a config built in Python without the API or CLI
    top = distributed.topology()
    on_progress = (on_progress or ignore_progress) if top.is_primary else ignore_progress
    should_cancel = should_cancel or never_cancel
    device = distributed.training_device(select_device(config.device))
    amp = _Amp(device, config.amp)
    generator = _seed_everything(config.seed)

    train_idx = np.asarray(train_idx, dtype=np.int64)
    class_ids = np.unique(image_set.labels[train_idx])
    if len(class_ids) < 2:
        raise ValueError(f"the train split has {len(class_ids)} class; metric learning needs at least 2")
    size = resolve_image_size(config, image_set)

    model = build_model(config, image_set.channels, size, image_set.mean, image_set.std)
    pixels = eval_pixels(image_set, model.eval_resize, size)  # for distances refreshed from embeddings (Mahalanobis)
    distance = build_distance(config)
    criterion = create_criterion(config.loss, config.miner, distance, len(class_ids), config.embedding_dim)
    regularizers = {r.name: (r.weight, create_regularizer(r.name, **r.params)) for r in config.regularizers}
    if top.distributed:  # BatchNorm over the global batch, as in a single process
        distributed.sync_batchnorm(model)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    for module in (model, criterion, distance, *(reg for _, reg in regularizers.values())):
        module.to(device)
    model.to(memory_format=memory_format)
    groups = parameter_groups(model, criterion, distance)
    optimizer = build_optimizer(config.optimizer, groups)
    optimizer_params = [p for g in GROUPS for p in groups[g]]
    # DDP averages the model's gradients; the criterion's own parameters are averaged by hand.
    outside_params = groups["loss"]
    net = model
    if top.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      forward_sync_buffers=False)  # synced BatchNorm keeps buffers equal

    # Built before any RNG state is restored, so a fresh and a resumed run construct it identically.
    steps = steps_per_epoch(config, len(train_idx))
    sampler = MPerClassSampler(image_set.labels, train_idx, config.classes_per_batch, config.samples_per_class,
                               steps, generator=generator)
    jobs = EpochJobs(sampler, lambda n: distributed.local_slice(list(range(n))))
    loader = train_loader(TrainImages(image_set, size, config.augment, config.seed), jobs,
                          loader_workers(config.augment), device.type == "cuda", config.seed)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    folder = RunFolder(run_dir)
    ckpt_path = folder.checkpoint_path
    # The primary reads the checkpoint and hands it to the other ranks: one source of truth for all of them.
    ckpt = distributed.broadcast(load_checkpoint(ckpt_path) if top.is_primary and resume and ckpt_path.exists()
                                 else None)
    if ckpt is not None:
        if _comparable(RunConfig.model_validate(ckpt["config"])) != _comparable(config):
            raise ValueError(f"{ckpt_path} was trained with a different config; "
                             f"start a new run (or pass resume=False to overwrite it)")
        model.load_state_dict(ckpt["model"])
        criterion.load_state_dict(ckpt["criterion"])
        distance.load_state_dict(ckpt["distance"])
        optimizer.load_state_dict(regroup_state(ckpt["optimizer"], optimizer))
        if ckpt["scaler"]:
            amp.scaler.load_state_dict(ckpt["scaler"])
        _restore_rng(ckpt["rng"], generator)
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"])

    total_steps = config.epochs * steps
    # Criterion labels are 0..C_train-1 (proxy losses keep one proxy per train class).
    label_of = torch.full((len(image_set.class_names),), -1, dtype=torch.int64)
    label_of[torch.from_numpy(class_ids)] = torch.arange(len(class_ids))
    image_labels = torch.from_numpy(image_set.labels)
    t_call = time.perf_counter()
    rate: float | None = None

    for epoch in range(start_epoch, config.epochs):
        refresh_distance(model, distance, pixels, train_idx, config.seed, epoch, device)  # e.g. M = (Σ + εI)⁻¹
        net.train()
        criterion.train()
        t_epoch = time.perf_counter()
        sums: dict[str, float] = {}
        step_losses: list[list[float]] = []  # [global step, metric loss] at the run's ends (models/budget.py)
        jobs.epoch = epoch
        t_step = time.perf_counter()  # a step's time includes waiting for its batch
        for step, (x, batch) in enumerate(loader):
            if distributed.any_rank(should_cancel(), device):
                raise Cancelled(f"cancelled at epoch {epoch + 1}, step {step + 1}")
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = label_of[image_labels[batch]].to(device, non_blocking=True)
            total, terms, diagnostics = _batch_loss(net, model, criterion, distance, regularizers, x, y, amp)
            values = {name: float(t.detach()) for name, t in terms.items()}
            for name, value in values.items():
                if not math.isfinite(value):
                    raise TrainingDiverged(epoch + 1, step + 1, name, value)
            optimizer.zero_grad(set_to_none=True)
            amp.scaler.scale(total).backward()
            distributed.average_gradients(outside_params)
            amp.scaler.step(optimizer)
            amp.scaler.update()

            for name, value in {**values, **{f"diag/{k}": v for k, v in diagnostics.items()}}.items():
                sums[name] = sums.get(name, 0.0) + value
            done = epoch * steps + step + 1
            if is_edge_step(done, total_steps):
                step_losses.append([done, values["loss"]])
            step_rate = len(batch) / max(time.perf_counter() - t_step, 1e-9)
            t_step = time.perf_counter()
            rate = step_rate if rate is None else 0.9 * rate + 0.1 * step_rate
            on_progress(Progress(
                stage="train", fraction=done / total_steps, epoch=epoch + 1, epochs=config.epochs, step=step + 1,
                steps=steps, loss=sum(values.values()), terms=values, diagnostics=diagnostics,
                samples_per_s=rate, eta_s=(total_steps - done) * config.batch_size / rate))

        if not all(bool(torch.isfinite(p).all()) for p in optimizer_params):  # never checkpoint a broken model
            raise TrainingDiverged(epoch + 1, steps, WEIGHTS, float("nan"))
        means = {k: v / steps for k, v in sums.items()}
        history.append({
            "epoch": epoch + 1,
            "loss": sum(v for k, v in means.items() if not k.startswith("diag/")),
            "terms": {k: v for k, v in means.items() if not k.startswith("diag/")},
            "diagnostics": {k.removeprefix("diag/"): v for k, v in means.items() if k.startswith("diag/")},
            "seconds": time.perf_counter() - t_epoch,
            "step_losses": step_losses,
        })
        if top.is_primary:
            save_checkpoint(ckpt_path, config=config, epoch=epoch + 1, in_channels=image_set.channels,
                            image_size=size, class_ids=class_ids.tolist(), model=model.state_dict(),
                            criterion=criterion.state_dict(), distance=distance.state_dict(),
                            optimizer=optimizer.state_dict(),
                            scaler=amp.scaler.state_dict() if amp.scaler.is_enabled() else None,
                            rng=_rng_state(generator), history=history)
            folder.write_history(history)

    model.eval()
    criterion.eval()
    return TrainResult(model=model, criterion=criterion, distance=distance, device=device, history=history,
                       epochs_trained=config.epochs - start_epoch, seconds=time.perf_counter() - t_call,
                       samples_per_s=rate, class_ids=class_ids.tolist())
