"""Robustness fixtures: an app over a data folder that already holds a dataset (see tests.support.app.Stored)."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.support.app import Stored, stored_app


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    """Shared by a module's tests: each must leave the store as it found it, or say what it added."""
    yield from stored_app(tmp_path_factory.mktemp("robust") / "data")
