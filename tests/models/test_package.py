"""`import models` exposes the registries and entry points (loaded lazily), as the README promises."""
import pytest

import models


def test_public_names_resolve() -> None:
    for name in models.__all__:
        assert getattr(models, name) is not None
    assert "triplet" in models.LOSSES.names() and "snr" in models.list_distances()
    assert "det" in models.REGULARIZERS.names() and "small_cnn" in models.BACKBONES.names()


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        models.nope  # noqa: B018
