"""Backbones: image (B, C, H, W), already normalised → features (B, out_features).

`small_cnn` trains from scratch in seconds on CPU at 8–64 px (the built-in sets); `resnet18`/`resnet50` are
torchvision's, randomly initialised, with the first convolution adapted to the image channels. Pretrained
weights are only ever read from local files (a state_dict path, or a torchvision weight name already in the
torch hub cache): nothing is downloaded.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from models.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone", injected=("in_channels", "image_size"))

# torchvision weight enums per backbone, for names such as "IMAGENET1K_V1"
_TORCHVISION_WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights"}
_WEIGHT_NAME = re.compile(r"(\w+_Weights\.)?[A-Z][A-Z0-9_]*")


class BackboneWeightsError(ValueError):
    """Pretrained weights that cannot be used; the message says which file or keys and what to do."""


class SmallCNN(nn.Module):
    """conv3×3-BN-ReLU blocks doubling the width, 2×2 max-pool between them while the map is ≥ 2 px, then
    global average pooling. Pooling stops early on tiny inputs, so 8-px digits and 64-px photos both work."""

    def __init__(self, in_channels: int, image_size: int, width: int = 32, blocks: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for b in range(blocks):
            out = width * 2 ** b
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if b < blocks - 1 and side >= 2:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


@BACKBONES.register("small_cnn", tags=("from_scratch",),
                    help={"width": "channels of the first block; each next block doubles it",
                          "blocks": "conv-BN-ReLU blocks; out_features = width × 2^(blocks−1)"})
def small_cnn(in_channels: int, image_size: int, width: int = 32, blocks: int = 3) -> nn.Module:
    """A few conv-BN-ReLU blocks with global pooling: fast on CPU, good at 8–64 px."""
    if width < 1 or blocks < 1:
        raise ValueError(f"small_cnn needs width ≥ 1 and blocks ≥ 1, got width={width}, blocks={blocks}")
    return SmallCNN(in_channels, image_size, width, blocks)


def _resnet(factory, in_channels: int) -> nn.Module:
    net = factory(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.out_features = net.fc.in_features
    net.fc = nn.Identity()  # features, not ImageNet logits; the embedding head sits on top
    return net


@BACKBONES.register("resnet18", tags=("torchvision",))
def resnet18(in_channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet-18 (512 features), random init; inputs of 32 px and up."""
    return _resnet(torchvision.models.resnet18, in_channels)


@BACKBONES.register("resnet50", tags=("torchvision",))
def resnet50(in_channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet-50 (2048 features), random init; meant for photos at 128–224 px."""
    return _resnet(torchvision.models.resnet50, in_channels)


def create_backbone(name: str, in_channels: int, image_size: int, weights: str | None = None,
                    **params: object) -> nn.Module:
    """Build backbone `name` (attribute `out_features`), optionally loading local pretrained weights.

    `weights` is a path to a state_dict file (also a checkpoint holding one under "state_dict"/"model", or a
    dmlscope checkpoint's "backbone." part), or a torchvision weight name such as "IMAGENET1K_V1" that is
    already in the torch hub cache. With 1 image channel, 3-channel first-conv weights are summed over
    colour, so a grey image excites the filters as the same grey in RGB would.
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    model = BACKBONES.create(name, in_channels, image_size, **params)
    if weights:
        load_weights(model, _read_state_dict(name, weights), source=weights)
    return model


def _read_state_dict(name: str, weights: str) -> dict[str, Tensor]:
    path = Path(weights).expanduser()
    if not path.is_file():
        if not _WEIGHT_NAME.fullmatch(weights):
            raise BackboneWeightsError(f"weights file {weights!r} not found; give the path of a saved state_dict")
        path = _hub_cache_file(name, weights)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BackboneWeightsError(f"{path} is not a plain state_dict (loading it would run code: {exc}); "
                                   "save the weights with torch.save(model.state_dict(), path)") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zip errors... for files that are not torch's
        raise BackboneWeightsError(f"{path} is not a readable torch weights file "
                                   f"({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise BackboneWeightsError(f"{path} does not hold a state_dict (a dict of tensors)")
    state = {k.removeprefix("module."): v for k, v in obj.items()}  # saved from DataParallel
    if any(k.startswith("backbone.") for k in state):  # a whole dmlscope model: keep its backbone
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return state


def _hub_cache_file(name: str, weight_name: str) -> Path:
    enum = _TORCHVISION_WEIGHTS.get(name)
    if enum is None:
        raise BackboneWeightsError(f"backbone {name!r} has no published weights; give a state_dict file path")
    qualified = weight_name if "." in weight_name else f"{enum}.{weight_name}"
    try:
        url = torchvision.models.get_weight(qualified).url
    except (KeyError, ValueError):
        known = ", ".join(getattr(torchvision.models, enum).__members__)
        raise BackboneWeightsError(f"unknown weights {weight_name!r} for {name}; known names: {known}") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cached.is_file():
        raise BackboneWeightsError(f"{qualified} is not in the torch hub cache ({cached}); dmlscope never downloads. "
                                   f"Fetch {url} elsewhere and put it there, or pass a state_dict path")
    return cached


def load_weights(model: nn.Module, state: dict[str, Tensor], source: str = "the weights") -> None:
    """Load `state` into `model`, naming missing, unexpected and mis-shaped keys if it does not fit.

    A torchvision classifier head (`fc.*`) is dropped (the backbone has none), and BatchNorm's
    `num_batches_tracked` counters may be absent (older files).
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("fc.") and k not in own)}
    for key, value in list(state.items()):
        target = own.get(key)
        if (target is not None and value.dim() == 4 and target.dim() == 4 and value.shape[1] == 3
                and target.shape[1] == 1 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            state[key] = value.sum(dim=1, keepdim=True)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mis_shaped = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mis_shaped:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", mis_shaped)) if keys]
        raise BackboneWeightsError(f"{source} does not fit this backbone ({model.__class__.__name__}); "
                                   f"{'; '.join(parts)}. Were the weights saved from another backbone or "
                                   "channel count?")
    model.load_state_dict(state, strict=False)
