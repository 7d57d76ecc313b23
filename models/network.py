"""EmbeddingNet: backbone → linear embedding head → optional normalizing-flow metric layer (+ dueling branch).

With the flow on, the flow maps the L2-normalised head output u = h/‖h‖ to z and the embedding is ẑ = z/‖z‖
(the paper's hypersphere embeddings): no scale before or after the flow can change the log-volume the `det`
regulariser reads (docs/determinant.md). The `flow` control and `det` share this architecture.

The model takes raw pixels (uint8, or floats on the same 0..255 scale) and normalises them itself with the
dataset's mean/std, stored as buffers: a checkpoint therefore embeds images the same way in the trainer, the
server's query endpoint and a model import, with no preprocessing to keep in sync outside it.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.augment import eval_resize
from models.backbones import create_backbone
from models.config import RunConfig
from models.flow import FlowMetricLayer, sphere_log_volume


class EmbedOutput(NamedTuple):
    embedding: Tensor  # (B, D) what the loss, the evaluation and retrieval see (unit-norm flow branch 1 when on)
    features: Tensor | None  # (B, D) the flow layer's input u = head output / ‖head output‖; None without flow
    logdet: Tensor | None  # (B,) log-volume change of branch 1's sphere-to-sphere map at u; None without flow
    logdet_dueling: Tensor | None  # (B,) the same for the dueling branch; None unless flow.dueling


def _channel_buffer(values: Sequence[float] | None, channels: int, fill: float, what: str) -> Tensor:
    if values is None:
        values = [fill] * channels
    values = [float(v) for v in values]
    if len(values) == 1 and channels > 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{what} has {len(values)} values but the images have {channels} channels; "
                         f"give one value per channel")
    return torch.tensor(values, dtype=torch.float32).view(1, channels, 1, 1)


def _sphere_branch(flow: FlowMetricLayer, u: Tensor) -> tuple[Tensor, Tensor]:
    """(ẑ = flow(u)/‖flow(u)‖, log-volume change of u ↦ ẑ on the sphere)."""
    z, logdet = flow(u)
    return F.normalize(z, dim=1), sphere_log_volume(flow, u, z, logdet)


class EmbeddingNet(nn.Module):
    """The network a run trains. `mean`/`std` are per channel on the 0..1 scale (pixel / 255)."""

    def __init__(self, config: RunConfig, in_channels: int, image_size: int,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.image_size = image_size  # the input side: the training crop and the evaluation centre crop
        self.eval_resize = eval_resize(config, image_size)  # short side before the evaluation centre crop
        self.register_buffer("pixel_mean", _channel_buffer(mean, in_channels, 0.0, "mean"))
        self.register_buffer("pixel_std", _channel_buffer(std, in_channels, 1.0, "std"))
        if bool((self.pixel_std <= 0).any()):
            raise ValueError("std must be positive in every channel (a constant image set cannot be normalised)")
        if config.weights_id and not config.pretrained_weights:  # never train from scratch in its place, silently
            raise ValueError(f"weights_id {config.weights_id} names an uploaded file only the server can resolve "
                             "(server.weights.with_weights_file); outside it, give pretrained_weights=PATH")
        self.backbone = create_backbone(config.backbone, in_channels, image_size, weights=config.pretrained_weights,
                                        pretrained=config.pretrained)
        self.freeze_bn = config.freeze_bn
        if self.freeze_bn:  # Proxy-Anchor's frozen BatchNorm: pretrained statistics survive small P×K batches
            for module in self._backbone_batchnorms():
                module.requires_grad_(False)
        self.head = nn.Linear(self.backbone.out_features, config.embedding_dim)
        flow = config.flow
        self.flow = self.flow_dueling = None
        if flow.enabled:
            self.flow = FlowMetricLayer(config.embedding_dim, flow.depth, flow.hidden, flow.coupling)
            if flow.dueling:
                self.flow_dueling = FlowMetricLayer(config.embedding_dim, flow.depth, flow.hidden, flow.coupling)

    def _backbone_batchnorms(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> "EmbeddingNet":
        """As nn.Module.train, but with `freeze_bn` the backbone's BatchNorm layers stay in eval mode (running
        statistics neither used from the batch nor updated)."""
        super().train(mode)
        if self.freeze_bn:
            for module in self._backbone_batchnorms():
                module.eval()
        return self

    def normalise(self, x: Tensor) -> Tensor:
        """Raw 0..255 pixels (B, C, H, W) → the backbone's standardised float input."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return (x.float() / 255.0 - self.pixel_mean) / self.pixel_std

    def backbone_features(self, x: Tensor) -> Tensor:
        """Raw 0..255 pixels → (B, F) backbone features, the embedding head's input."""
        return self.backbone(self.normalise(x))

    def from_backbone(self, f: Tensor) -> EmbedOutput:
        """The rest of `forward` from backbone features (lets a caller keep the head's input too)."""
        h = self.head(f)
        if self.flow is None:
            return EmbedOutput(h, None, None, None)
        u = F.normalize(h, dim=1)
        z, logvol = _sphere_branch(self.flow, u)
        logvol_dueling = _sphere_branch(self.flow_dueling, u)[1] if self.flow_dueling is not None else None
        return EmbedOutput(z, u, logvol, logvol_dueling)

    def forward(self, x: Tensor) -> EmbedOutput:
        return self.from_backbone(self.backbone_features(x))

    def metric_layer(self) -> Callable[[Tensor], Tensor]:
        """The last learned map before the embedding: the flow (on normalised head outputs u) when on, else the
        head (on backbone features). Its local Lipschitz constant is what the determinant paper tries to control.
        It normalises its input, so at ‖u‖ = 1 its Jacobian is the sphere-to-sphere map's (radial direction 0)."""
        if self.flow is None:
            return self.head
        flow = self.flow
        return lambda u: F.normalize(flow(F.normalize(u, dim=1))[0], dim=1)

    def embed_standardised(self, x: Tensor) -> Tensor:
        """Inference embedding of standardised images (the backbone's input); skips the dueling branch and the
        log-volume. The whole network's local Lipschitz constant is taken on this map."""
        h = self.head(self.backbone(x))
        return F.normalize(self.flow(F.normalize(h, dim=1))[0], dim=1) if self.flow is not None else h

    def embed(self, x: Tensor) -> Tensor:
        """Inference embedding of raw pixels (flow branch 1 when on). No grad mode is the caller's."""
        return self.embed_standardised(self.normalise(x))
