"""The train form's help text is the server's: each field's description from the RunConfig schema."""
from __future__ import annotations

import pytest

from models.config import FlowConfig, RunConfig

pytestmark = [pytest.mark.browser]


def test_the_train_form_explains_fields_with_their_descriptions(page, server: str) -> None:
    page.goto("/?tab=train")
    page.wait_for_selector("#train-flow-dueling")
    for input_id, description in [("train-flow-dueling", FlowConfig.model_fields["dueling"].description),
                                  ("train-samples_per_class", RunConfig.model_fields["samples_per_class"].description),
                                  ("train-image_size", RunConfig.model_fields["image_size"].description)]:
        assert page.locator(f"#{input_id} + .help").inner_text().strip() == description, input_id
    weights = page.locator("[data-path='weights_id'] + .help").inner_text().strip()
    assert weights == RunConfig.model_fields["weights_id"].description
