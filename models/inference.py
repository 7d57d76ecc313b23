"""A run's model at inference: rebuilt from a checkpoint, and batched embedding of pixels (dmlscope or TorchScript).

Every weight comes from the checkpoint: the model is built from the config's skeleton, so the pretrained file
a config may name (any path, in a checkpoint someone uploaded) is never opened.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pytorch_metric_learning.distances import BaseDistance

from models.checkpoint import CheckpointError, checked_fields, load_checkpoint
from models.config import RunConfig
from models.network import EmbeddingNet
from models.progress import Cancelled, CancelCheck, never_cancel
from models.runfolder import RunFolder
from models.trainer import amp_autocast, build_distance, build_model, select_device

EMBED_BATCH = 256


@dataclass
class LoadedModel:
    model: EmbeddingNet  # eval mode, on `device`
    distance: BaseDistance  # on the CPU, where faiss and the server's queries run (measuring moves it to its device)
    config: RunConfig
    image_size: int  # the side the model was trained at: query pixels must be prepared at this size
    device: torch.device


def model_from_checkpoint(ckpt: dict, device: str = "cpu") -> LoadedModel:
    """The model and distance a loaded checkpoint describes, every field checked and its weights loaded;
    CheckpointError names the part whose weights do not fit (a wrong shape is an error now, not a failed run)."""
    fields = checked_fields(ckpt)
    config = fields.config
    parts = {"model": (f"a {config.backbone} model with embedding_dim {config.embedding_dim} at "
                       f"{fields.image_size} px", lambda: build_model(config.skeleton(), fields.in_channels,
                                                                     fields.image_size)),
             "distance": (f"a {config.distance.name} distance in {config.embedding_dim} dimensions",
                          lambda: build_distance(config))}
    built = {}
    for key, (what, build) in parts.items():
        try:
            built[key] = build()
            built[key].load_state_dict(ckpt.get(key))
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:
            lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
            why = lines[1] if len(lines) > 1 else lines[0]  # torch's first line is only "Error(s) in loading"
            raise CheckpointError(f"the checkpoint's {key} weights do not fit {what} ({why[:300]}); export it "
                                  f"again from dmlscope") from None
    target = select_device(device)
    return LoadedModel(built["model"].to(target).eval(), built["distance"].cpu().eval(), config, fields.image_size,
                       target)


def load_model(source: str | Path, device: str = "auto") -> LoadedModel:
    """The model and distance from a run folder or a checkpoint file (weights_only=True: no code runs)."""
    path = Path(source)
    if path.is_dir():
        folder = RunFolder(path)
        if folder.is_torchscript():
            raise ValueError(f"{path.name} is an imported TorchScript module: its code runs only in a worker, so "
                             "it cannot embed new images or be exported as a checkpoint; import a dmlscope "
                             "checkpoint for that")
        path = folder.checkpoint_path
    return model_from_checkpoint(load_checkpoint(path), device)


def load_distance(run_dir: str | Path) -> BaseDistance:
    """A run's distance on the CPU: from its checkpoint (learned parameters), else from its config (a
    TorchScript or embeddings import, whose distance is parameter-free). Loads no model code."""
    folder = RunFolder(run_dir)
    if folder.has_checkpoint():
        return load_model(folder.dir, device="cpu").distance
    return build_distance(folder.config).eval()


def embed_images(source: str | Path | EmbeddingNet, pixels: np.ndarray) -> np.ndarray:
    """float32 (N, D) inference embeddings of raw uint8 pixels (N, C, S, S) or one image (C, S, S).

    `source` is a run folder, a checkpoint file, or a model. Pixels must be prepared like the run's images at
    the model's `image_size` (ImageSet.query_pixels does that); normalisation happens inside the model.
    """
    model = load_model(source).model if not isinstance(source, EmbeddingNet) else source
    pixels = np.asarray(pixels)
    if pixels.ndim == 3:
        pixels = pixels[None]
    return embed_passes(model, pixels, np.arange(len(pixels)))["embedding"]


def embed_passes(model: EmbeddingNet, pixels: np.ndarray, idx: np.ndarray,
                 should_cancel: CancelCheck = never_cancel, amp: bool = False) -> dict[str, np.ndarray]:
    """Batched, no-grad, eval-mode pass on the model's device: the embedding, the flow's input (`features`, with
    flow) and the metric layer's input (`lipschitz_input`: flow input with flow, backbone features without).
    Only the batch travels to the device and float32 results come back, so memory stays one batch there. `amp`:
    under the run's mixed precision on CUDA (`amp_autocast`, as it trained; a no-op on the CPU)."""
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
                with amp_autocast(device, amp):
                    f = model.backbone_features(x)
                    out = model.from_backbone(f)
                parts["embedding"].append(out.embedding.float().cpu())
                if out.features is not None:
                    parts["features"].append(out.features.float().cpu())
                parts["lipschitz_input"].append((out.features if out.features is not None else f).float().cpu())
    finally:
        model.train(was_training)
    return {k: torch.cat(v).numpy() for k, v in parts.items() if v}


def script_input(pixels: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    """A TorchScript embedder's input convention: float (B, C, S, S), raw pixels / 255 (0..1)."""
    return torch.from_numpy(np.ascontiguousarray(pixels[idx])).float().div_(255.0)


def script_embed(module: torch.jit.ScriptModule, pixels: np.ndarray, idx: np.ndarray,
                 should_cancel: CancelCheck = never_cancel) -> np.ndarray:
    """float32 (N, D) embeddings of images `idx` from a TorchScript embedder, fed `script_input` batches."""
    parts = []
    with torch.no_grad():
        for s in range(0, len(idx), EMBED_BATCH):
            if should_cancel():
                raise Cancelled("cancelled while embedding")
            x = script_input(pixels, idx[s:s + EMBED_BATCH])
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
