"""In chromium: a benchmark imported with `dmlscope import` shows its split on the Data tab (which shows the
command, not a server-path form), the Train form defaults to split mode "predefined" for it (and leaves it
for a set without one), and a weights file uploaded from the Train form joins its list, chosen."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision

from server.cli import main
from tests.support.benchmarks import inshop_tree

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_benchmark_split_and_weights_list(page, server: str, server_data: Path, tmp_path: Path, shots: Path) -> None:
    inshop_tree(tmp_path / "inshop")
    assert main(["import", "inshop", str(tmp_path / "inshop"), "--name", "In-Shop tiny",
                 "--data-dir", str(server_data)]) == 0
    with urllib.request.urlopen(f"{server}/api/datasets") as r:
        sets = json.load(r)["data"]
    inshop = next(d for d in sets if d["name"] == "In-Shop tiny")

    page.goto(f"/?tab=data&dataset={inshop['id']}")
    row = page.locator("tr", has_text="In-Shop tiny")
    assert row.locator("td.split").inner_text() == "2 / 2 classes"
    page.get_by_text("predefined split: train 4 images in 2 classes, test 4 images in 2 classes").wait_for()
    page.locator("summary", has_text="CUB-200, Cars196, SOP or In-Shop?").click()
    page.get_by_text("dmlscope import cub|cars|sop|inshop PATH").wait_for()
    assert page.locator("input[type=text][name*=path], input[placeholder*=PATH]").count() == 0
    page.screenshot(path=str(shots / "data-benchmark-split.png"))

    page.goto(f"/?tab=train&dataset={inshop['id']}")
    mode = page.locator('[data-path="split.mode"]')
    assert mode.input_value() == "predefined"
    other = next(d for d in sets if d["id"] != inshop["id"])
    page.select_option("#train-dataset", other["id"])
    assert mode.input_value() == "first_half"
    page.select_option("#train-dataset", inshop["id"])
    assert mode.input_value() == "predefined"
    assert page.locator("#train-pretrained option").all_inner_texts() == ["none", "imagenet"]

    page.select_option('[data-path="backbone"]', "resnet18")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    page.locator("summary", has_text="Upload a weights file").click()
    page.set_input_files("#weights-file", str(tmp_path / "r18.pth"))
    page.get_by_text("Uploaded “r18.pth”: chosen as the weights file.").wait_for()
    weights = page.locator('[data-path="weights_id"]')
    assert weights.locator("option:checked").inner_text() == "r18.pth (resnet18)"
    page.locator("fieldset", has_text="Backbone").first.screenshot(path=str(shots / "train-benchmark-weights.png"))
