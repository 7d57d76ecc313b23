"""The images a model sees: the training view (random resized crop + flip), the evaluation view (resize + centre
crop) and the input normalisation. One owner, so training, evaluation, queries and exports cannot disagree.

Evaluation view: the short side resized to `resize`, then the centre `crop` × `crop` (the standard 256 → 224).
It is cut from the set's square pixel cache at `resize` (ImageSet.pixels: short side resized, centre square),
so a dataset image and an uploaded query pass through the very same two steps. Without augmentation `resize`
equals `crop` and the view is the cache itself, as before.

Training view (`augment.mode = "standard"`): RandomResizedCrop of the *stored* image (longest side ≤ the
import's max_side) at `crop`, scale (scale_min, 1), aspect ratio (3/4, 4/3), then a horizontal flip with
probability 1/2. Its randomness is a pure function of (run seed, epoch, step, position in the global batch),
drawn from a private generator: the result does not depend on the number of loader workers or processes, the
global random streams are untouched, and a resumed run sees exactly the crops an uninterrupted one would.

Normalisation lives in the model (EmbeddingNet's pixel_mean / pixel_std buffers, applied once in `normalise`):
ImageNet's statistics for an ImageNet-pretrained torchvision backbone, the data set's own otherwise.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from models.config import RunConfig
from models.data.imageset import ImageSet, center_crop

# torchvision's ImageNet weights were trained on inputs standardised with these (0..1 scale, RGB)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224  # the recipe's evaluation resize relative to the crop
ASPECT_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default
_ATTEMPTS = 10  # as torchvision: then fall back to the largest centred crop of an allowed aspect ratio


def uses_imagenet_statistics(config: RunConfig) -> bool:
    """True when the backbone starts from ImageNet weights: torchvision's enum, or a weights file for a
    torchvision architecture (a from-scratch architecture's file was trained on its own data's statistics)."""
    from models.backbones import BACKBONES  # late import: keeps this module light for the config layer

    if config.pretrained == "imagenet":
        return True
    has_file = bool(config.pretrained_weights or config.weights_id)
    return has_file and "from_scratch" not in BACKBONES.entry(config.backbone).tags


def input_normalisation(config: RunConfig, mean: Sequence[float] | None, std: Sequence[float] | None,
                        channels: int) -> tuple[Sequence[float] | None, Sequence[float] | None]:
    """(mean, std) per channel for the model's buffers: ImageNet's for pretrained torchvision backbones (grey sets
    get their channel average, matching the first convolution summed over RGB), else the data set's `mean/std`."""
    if not uses_imagenet_statistics(config):
        return mean, std
    if channels == 1:
        return (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
    return IMAGENET_MEAN, IMAGENET_STD


def eval_resize(config: RunConfig, crop: int) -> int:
    """The short side images are resized to before the centre `crop` (= crop without augmentation)."""
    if config.augment.mode == "none":
        return crop
    resize = config.augment.resize or round(crop * RESIZE_RATIO)
    if resize < crop:
        raise ValueError(f"augment.resize ({resize}) is smaller than the crop ({crop}); make it at least {crop}")
    return resize


def eval_pixels(image_set: ImageSet, resize: int, crop: int) -> np.ndarray:
    """uint8 (N, C, crop, crop): every image of `image_set` as evaluation, retrieval and queries see it (a view of
    the pixel cache at `resize`; the model's `eval_resize` and `image_size` give the two sides)."""
    return center_crop(image_set.pixels(resize), crop)


def sample_generator(seed: int, epoch: int, step: int, slot: int) -> torch.Generator:
    """The private generator of one training image's augmentation (slot: its position in the global batch)."""
    state = np.random.SeedSequence([seed, epoch, step, slot]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def resized_crop_box(height: int, width: int, scale: tuple[float, float], generator: torch.Generator,
                     ratio: tuple[float, float] = ASPECT_RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop: torchvision's RandomResizedCrop draw, from `generator`.

    Area ~ U(scale) × image area, log aspect ratio ~ U(log ratio); up to 10 tries for a box that fits, then
    the largest centred box whose aspect ratio is within `ratio`. Same draws, in the same order, as
    torchvision's `RandomResizedCrop.get_params` would make from a generator in the same state.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(_ATTEMPTS):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_view(image: Tensor, crop: int, scale_min: float, flip: bool, generator: torch.Generator) -> Tensor:
    """uint8 (C, H, W) stored image → uint8 (C, crop, crop) random resized crop, flipped with probability 1/2."""
    top, left, h, w = resized_crop_box(image.shape[-2], image.shape[-1], (scale_min, 1.0), generator)
    out = TF.resized_crop(image, top, left, h, w, [crop, crop], antialias=True)
    if flip and torch.rand(1, generator=generator).item() < 0.5:
        out = TF.horizontal_flip(out)
    return out
