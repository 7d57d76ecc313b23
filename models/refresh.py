"""The per-epoch hook for distances estimated from data (relative Mahalanobis' M = (Σ + εI)⁻¹).

Any distance with a `refresh(embeddings)` method gets it at the start of every epoch, from the embeddings of a
sample of training images. Kept out of the training loop so the loop stays generic.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

REFRESH_SAMPLE = 1024  # training images embedded per refresh: Σ has D(D+1)/2 entries, 2080 at D = 64
_BATCH = 256


def refresh_distance(model: nn.Module, distance: nn.Module, pixels: np.ndarray, train_idx: np.ndarray,
                     seed: int, epoch: int, device: torch.device) -> None:
    """`distance.refresh(embeddings)` on up to REFRESH_SAMPLE training images, if the distance has that method.

    The sample is drawn by its own generator seeded with (seed, epoch), so the run's random streams are untouched
    and a resumed run refreshes exactly as an uninterrupted one. The pass is the eval-mode inference embedding
    (what evaluation and retrieval measure), under no_grad: it changes no weights and no BatchNorm statistics.
    """
    refresh = getattr(distance, "refresh", None)
    if refresh is None:
        return
    rng = np.random.default_rng([seed, epoch])
    idx = np.sort(rng.choice(train_idx, size=min(REFRESH_SAMPLE, len(train_idx)), replace=False))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            parts = [model.embed(torch.from_numpy(pixels[idx[s:s + _BATCH]]).to(device)).float()
                     for s in range(0, len(idx), _BATCH)]
    finally:
        model.train(was_training)
    refresh(torch.cat(parts))
