"""Fixtures shared by the training tests."""
from __future__ import annotations

import numpy as np
import pytest

from models.config import SplitConfig
from models.data import ImageSet, import_builtin, zero_shot_split


@pytest.fixture(scope="module")
def train_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageSet, np.ndarray]:
    """A small synthetic image set (4 classes × 8 images of 16 px) and the indices of its training classes."""
    image_set = import_builtin("synthetic", tmp_path_factory.mktemp("data") / "shapes", num_classes=4,
                               per_class=8, size=16).image_set
    train_idx, _ = zero_shot_split(image_set, SplitConfig())
    return image_set, train_idx
