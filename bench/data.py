"""Synthetic clustered embeddings: the arrays every embedding-side benchmark (and its peer) runs on."""
from __future__ import annotations

import numpy as np

# Class spread relative to the distance between class centres: chosen so MAP@R lands near 0.5, the regime of a
# half-trained model, where neighbour lists mix classes (a perfectly separated set would flatter every method).
SPREAD = 1.5


def clustered(n: int, dim: int = 128, class_size: int = 50, spread: float = SPREAD,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings float32 (n, dim), labels int64 (n,)): n // class_size Gaussian classes of equal size, shuffled.

    Centres have norm ≈ 1 (so two centres are ≈ √2 apart) and the within-class noise has norm ≈ `spread`,
    whatever `dim` is. At the default spread, 10k points in 128-d give MAP@R ≈ 0.5 and Recall@1 ≈ 0.97; more
    points make more classes, so 100k gives MAP@R ≈ 0.3.
    """
    classes = max(2, n // class_size)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim), dtype=np.float32) / np.sqrt(dim)
    labels = rng.permutation(np.arange(n) % classes).astype(np.int64)
    x = np.empty((n, dim), dtype=np.float32)
    step = 1 << 16  # chunked: at 1M × 128 the noise never needs a second full-size temporary
    for s in range(0, n, step):
        y = labels[s:s + step]
        x[s:s + step] = centres[y] + rng.standard_normal((len(y), dim), dtype=np.float32) * (spread / np.sqrt(dim))
    return x, labels
