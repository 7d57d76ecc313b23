"""In chromium: the Train form's recipe picker redraws the form from a preset's whole config (GET /api/components)
and back to the defaults."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_benchmark_preset_fills_the_train_form(page, server: str, shots) -> None:
    page.goto("/?tab=train")
    field = lambda path: page.locator(f'[data-path="{path}"]')  # noqa: E731
    field("backbone").wait_for()
    assert field("backbone").input_value() == "small_cnn"
    page.select_option("#train-preset", "benchmark")
    page.get_by_text("Proxy-Anchor's benchmark recipe").wait_for()
    assert field("backbone").input_value() == "resnet50"
    assert field("augment.mode").input_value() == "standard"
    assert field("embedding_dim").input_value() == "512"
    assert float(field("optimizer.loss_lr").input_value()) == 0.01
    assert field("optimizer.name").input_value() == "adamw"
    assert page.locator("#train-pretrained").input_value() == "imagenet"
    page.locator("form").first.screenshot(path=str(shots / "train-preset-benchmark.png"))
    page.select_option("#train-preset", "")
    assert field("backbone").input_value() == "small_cnn"
    assert field("augment.mode").input_value() == "none"
