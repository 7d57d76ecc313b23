"""The geometry numbers of a run's headline, in two forms (SPEC §8, "Units").

- In the run's own distance: radii, margins and π in that distance's units (a relative squared error for SNR
  and relative Mahalanobis, a squared length for squared Euclidean). Only ratios within one run (radius
  test/train, margin ÷ mean inter-centroid distance) are free of the scale; even those change with the distance
  that measures them, so they compare runs of one distance.
- In one common space (`common`): the same statistics of the L2-normalised embeddings under the Euclidean
  distance, whatever the run's distance. These do not depend on the embedding's global scale nor on the run's
  distance, so runs under different distances can be compared on them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from models.distances import create_distance
from models.headline import HEADLINE
from models.stats import class_stats



def _geometry(stats: dict[str, Any]) -> dict[str, Any]:
    radii = [c["radius_mean"] for c in stats["per_class"] if c["radius_mean"] is not None]
    densities = [c["relative_density"] for c in stats["per_class"] if c["relative_density"] is not None]
    glob = stats["global"]
    return {"radius_mean": float(np.mean(radii)) if radii else None,
            "relative_density": float(np.mean(densities)) if densities else None,
            "margin": glob["margin"], "pi_inter": glob["pi_inter"], "pi_ratio": glob["pi_ratio"]}


def common_space_stats(embeddings: np.ndarray, labels: np.ndarray,
                       device: str | torch.device = "cpu") -> dict[str, Any]:
    """radius_mean, relative_density, margin, pi_inter, pi_ratio of the L2-normalised embeddings, Euclidean
    (computed on `device`, see `class_stats`).

    Centroids are plain means of the normalised points (inside the ball); every value is a length on the unit
    sphere's scale, so 2 is the largest possible distance.
    """
    x = F.normalize(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32), dim=1)
    stats = class_stats(x, labels, create_distance("euclidean", normalize=False), device=device)
    return _geometry(stats)


def headline(metrics: dict[str, Any], stats: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    """The numbers a run list or a sweep table shows, for one split: retrieval metrics, the geometry in the run's
    own distance (radius_mean, relative_density, margin, pi_inter, pi_ratio, spectral_decay) and `common`."""
    return {**{k: metrics.get(k) for k in HEADLINE}, **_geometry(stats),
            "spectral_decay": stats["global"]["spectral_decay"], "common": common}
