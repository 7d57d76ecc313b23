"""Backbones: image (B, C, H, W), already normalised → features (B, out_features).

`small_cnn` trains from scratch in seconds on CPU at 8–64 px (the built-in sets); the others are torchvision's
architectures (ResNet-18/34/50/101, EfficientNet-B0, ViT-B/16, GoogLeNet as the nearest to BN-Inception) with
the classifier removed and the first convolution adapted to the image channels. Their ImageNet weights
(`pretrained="imagenet"`) come from torchvision's weights enums through the usual torch hub cache: downloaded
once when the machine is online, and offline a clear error within seconds; any state_dict file works too.
"""
from __future__ import annotations

import pickle
import re
import socket
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from models.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone", injected=("in_channels", "image_size"))

# torchvision weight enums per backbone, for names such as "IMAGENET1K_V1" and for pretrained="imagenet"
_TORCHVISION_WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                        "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights",
                        "efficientnet_b0": "EfficientNet_B0_Weights", "vit_b_16": "ViT_B_16_Weights",
                        "googlenet": "GoogLeNet_Weights"}
# ImageNet classifier heads (and GoogLeNet's auxiliary ones) in torchvision files: the backbones have none
_HEAD_PREFIXES = ("fc.", "classifier.", "heads.", "aux1.", "aux2.")
DOWNLOAD_TIMEOUT_S = 5.0  # per connection attempt and read: offline, the error comes within seconds
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


def _torchvision(factory, in_channels: int, first_conv: str, head: str, **kwargs: object) -> nn.Module:
    """torchvision architecture `factory` (random init) with its classifier `head` replaced by the identity and
    its `first_conv` (a dotted path) rebuilt for 1-channel images."""
    net = factory(weights=None, **kwargs)
    if in_channels != 3:
        *parents, leaf = first_conv.split(".")
        owner = net
        for part in parents:
            owner = getattr(owner, part)
        old = getattr(owner, leaf)
        setattr(owner, leaf, nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                       bias=old.bias is not None))
    layer = getattr(net, head)
    linear = layer if isinstance(layer, nn.Linear) else next(m for m in layer.modules() if isinstance(m, nn.Linear))
    net.out_features = linear.in_features
    setattr(net, head, nn.Identity())  # features, not ImageNet logits; the embedding head sits on top
    return net


_TV = torchvision.models


def _resnet(factory, doc: str):
    def build(in_channels: int, image_size: int) -> nn.Module:
        return _torchvision(factory, in_channels, "conv1", "fc")

    build.__doc__ = doc
    return build


for _name, _features, _use in (("resnet18", 512, "inputs of 32 px and up"), ("resnet34", 512, "inputs of 32 px and up"),
                               ("resnet50", 2048, "meant for photos at 128–224 px"),
                               ("resnet101", 2048, "meant for photos at 128–224 px")):
    BACKBONES.register(_name, tags=("torchvision",))(
        _resnet(getattr(_TV, _name), f"torchvision {_name} ({_features} features); {_use}."))


@BACKBONES.register("efficientnet_b0", tags=("torchvision",))
def efficientnet_b0(in_channels: int, image_size: int) -> nn.Module:
    """torchvision EfficientNet-B0 (1280 features); inputs of 32 px and up, 224 px as on ImageNet."""
    return _torchvision(_TV.efficientnet_b0, in_channels, "features.0.0", "classifier")


@BACKBONES.register("googlenet", tags=("torchvision",))
def googlenet(in_channels: int, image_size: int) -> nn.Module:
    """torchvision GoogLeNet (Inception v1, 1024 features): the nearest to the BN-Inception of DML papers."""
    return _torchvision(_TV.googlenet, in_channels, "conv1.conv", "fc", aux_logits=False, init_weights=True)


@BACKBONES.register("vit_b_16", tags=("torchvision",))
def vit_b_16(in_channels: int, image_size: int) -> nn.Module:
    """torchvision ViT-B/16 (768 features); image_size a multiple of 16 (224 for the ImageNet weights)."""
    if image_size % 16:
        raise ValueError(f"vit_b_16 needs an image_size that is a multiple of 16, got {image_size}")
    return _torchvision(_TV.vit_b_16, in_channels, "conv_proj", "heads", image_size=image_size)


def create_backbone(name: str, in_channels: int, image_size: int, weights: str | None = None,
                    pretrained: str | None = None, **params: object) -> nn.Module:
    """Build backbone `name` (attribute `out_features`), optionally loading pretrained weights.

    `pretrained="imagenet"` takes torchvision's default ImageNet weights for `name` from the torch hub cache,
    downloading them there first when they are missing (see `imagenet_weights_file`). `weights` is a path to
    a state_dict file (also a checkpoint holding one under "state_dict"/"model", or a dmlscope checkpoint's
    "backbone." part), or a torchvision weight name such as "IMAGENET1K_V1" already in the torch hub cache.
    With 1 image channel, 3-channel first-conv weights are summed over colour, so a grey image excites the
    filters as the same grey in RGB would.
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if pretrained not in (None, "imagenet"):
        raise BackboneWeightsError(f"pretrained must be 'imagenet' or null, got {pretrained!r}")
    if pretrained and weights:
        raise BackboneWeightsError("give either pretrained='imagenet' or a weights file, not both")
    model = BACKBONES.create(name, in_channels, image_size, **params)
    if pretrained:
        path = imagenet_weights_file(name)
        load_weights(model, read_state_dict(path), source=f"torchvision's ImageNet weights for {name} ({path})")
    elif weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            if not _WEIGHT_NAME.fullmatch(weights):
                raise BackboneWeightsError(f"weights file {weights!r} not found; give the path of a saved state_dict")
            path = _hub_cache_file(name, weights)
        load_weights(model, read_state_dict(path), source=weights)
    return model


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The state_dict in `path`, read with weights_only=True (no code runs), unwrapped from the usual
    containers; BackboneWeightsError when the file is not one."""
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
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise BackboneWeightsError(f"{path} does not hold a state_dict (a dict of tensors)")
    state = {k.removeprefix("module."): v for k, v in obj.items()}  # saved from DataParallel
    if any(k.startswith("backbone.") for k in state):  # a whole dmlscope model: keep its backbone
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return state


def _weights_enum(name: str):
    enum = _TORCHVISION_WEIGHTS.get(name)
    if enum is None:
        raise BackboneWeightsError(f"backbone {name!r} has no published weights; choose one of "
                                   f"{', '.join(_TORCHVISION_WEIGHTS)} or give a state_dict file")
    return getattr(torchvision.models, enum)


def imagenet_weights_file(name: str) -> Path:
    """The cached file of torchvision's default ImageNet weights for `name`, downloaded into the torch hub
    cache ($TORCH_HOME/hub/checkpoints) first if missing. The attempt is bounded (name lookup and each socket
    operation by DOWNLOAD_TIMEOUT_S), so an offline machine answers within seconds with what to do instead."""
    url = _weights_enum(name).DEFAULT.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if cached.is_file():
        return cached
    offline = (f"could not download the ImageNet weights of {name} ({url}) into the torch cache: {{}}. Offline, "
               f"fetch that file elsewhere and put it at {cached}, or upload a state_dict file (POST /api/weights, "
               "the Weights list of the train form) and choose it, or pass --pretrained-weights FILE on the CLI")
    host = urlparse(url).hostname or ""
    if not urllib.request.getproxies().get("https") and not _resolves(host):
        raise BackboneWeightsError(offline.format(f"the host {host} does not resolve (no network?)"))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except OSError as exc:  # URLError, timeouts, refused connections, a full disk
        raise BackboneWeightsError(offline.format(f"{type(exc).__name__}: {exc}")) from None
    finally:
        socket.setdefaulttimeout(previous)
    return cached


def _resolves(host: str) -> bool:
    """Whether `host` resolves within DOWNLOAD_TIMEOUT_S (getaddrinfo itself has no timeout)."""
    found: list[bool] = []

    def lookup() -> None:
        try:
            found.append(bool(socket.getaddrinfo(host, 443)))
        except OSError:
            found.append(False)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(DOWNLOAD_TIMEOUT_S)
    return bool(found and found[0])


def _hub_cache_file(name: str, weight_name: str) -> Path:
    enum = _weights_enum(name)
    qualified = weight_name if "." in weight_name else f"{enum.__name__}.{weight_name}"
    try:
        url = torchvision.models.get_weight(qualified).url
    except (KeyError, ValueError):
        known = ", ".join(enum.__members__)
        raise BackboneWeightsError(f"unknown weights {weight_name!r} for {name}; known names: {known}") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cached.is_file():
        raise BackboneWeightsError(f"{qualified} is not in the torch hub cache ({cached}). Fetch {url} and put it "
                                   "there, or use pretrained='imagenet' to download the default weights")
    return cached


def load_weights(model: nn.Module, state: dict[str, Tensor], source: str = "the weights") -> None:
    """Load `state` into `model`, naming missing, unexpected and mis-shaped keys if it does not fit.

    A torchvision classifier head (`fc.*`, `classifier.*`, `heads.*`, GoogLeNet's `aux1/2.*`) is dropped (the
    backbone has none), and BatchNorm's `num_batches_tracked` counters may be absent (older files).
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith(_HEAD_PREFIXES) and k not in own)}
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
