"""`dmlscope import cub|cars|sop|inshop PATH` on fabricated trees of each published layout: the dataset lands in
the store with its standard split, trains with split.mode "predefined" from the CLI and the API, and the API
lists it with its split; a malformed tree is a one-line error naming the missing file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.cli import main
from server.settings import Settings
from server.store import Store
from tests.support.app import TINY_CONFIG, make_settings
from tests.support.benchmarks import cars_tree, cub_tree, inshop_tree, sop_tree
from tests.support.polling import wait_for

# kind → (build the tree, images, classes, train images, train classes)
LAYOUTS: dict[str, tuple[Any, int, int, int, int]] = {
    "cub": (lambda root: cub_tree(root, n_classes=4, per_class=3), 12, 4, 6, 2),
    "cars": (lambda root: cars_tree(root, n_classes=4, per_class=2, devkit=True), 8, 4, 4, 2),
    "sop": (sop_tree, 8, 4, 4, 2),
    "inshop": (inshop_tree, 8, 4, 4, 2),
}
TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--embedding-dim", "8", "--image-size", "16", "--device", "cpu",
        "--set", "classes_per_batch=2", "--set", "samples_per_class=2", "--set", "miner.name=all"]


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_import_each_layout_keeps_its_split(kind: str, tmp_path: Path, capsys) -> None:
    build, images, classes, train_images, train_classes = LAYOUTS[kind]
    build(tmp_path / kind)
    assert main(["import", kind, str(tmp_path / kind), "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    (rec,) = Store.open(Settings(data_dir=tmp_path / "data")).list_datasets()
    assert rec.source == "benchmark" and rec.name == f"{kind} ({kind})"
    assert (rec.info["num_images"], rec.info["num_classes"]) == (images, classes)
    assert rec.info["predefined_split"] == {"train_images": train_images, "test_images": images - train_images,
                                            "train_classes": train_classes, "test_classes": classes - train_classes}
    assert f"dataset {rec.id}" in out and f"dmlscope train --data {rec.id} --set split.mode=predefined" in out


def test_an_imported_benchmark_serves_its_published_jpegs(tmp_path: Path) -> None:
    cub_tree(tmp_path / "cub")
    assert main(["import", "cub", str(tmp_path / "cub"), "--data-dir", str(tmp_path / "data")]) == 0
    with TestClient(create_app(make_settings(tmp_path / "data"))) as client:
        (listed,) = client.get("/api/datasets").json()["data"]
        image = client.get(f"/api/datasets/{listed['id']}/images/0")
        thumb = client.get(f"/api/datasets/{listed['id']}/images/0/thumb")
    published = tmp_path / "cub" / "CUB_200_2011" / "images" / "001.Bird_1" / "Bird_1_0.jpg"
    assert image.headers["content-type"] == "image/jpeg" and image.content == published.read_bytes()
    assert thumb.headers["content-type"] == "image/png"


@pytest.mark.slow
def test_predefined_split_trains_from_the_cli_and_the_api(tmp_path: Path, capsys) -> None:
    data_dir = tmp_path / "data"
    inshop_tree(tmp_path / "inshop")
    assert main(["import", "inshop", str(tmp_path / "inshop"), "--name", "In-Shop", "--data-dir", str(data_dir)]) == 0
    store = Store.open(Settings(data_dir=data_dir))
    (dataset,) = store.list_datasets()
    assert main(["train", "--data", dataset.id, *TINY, "--set", "split.mode=predefined", "--data-dir",
                 str(data_dir)]) == 0
    (run,) = store.list_runs()
    assert run.status == "done" and run.config["split"]["mode"] == "predefined"
    store.close()
    capsys.readouterr()

    with TestClient(create_app(make_settings(data_dir))) as client:
        (listed,) = client.get("/api/datasets").json()["data"]
        assert listed["name"] == "In-Shop" and listed["source"] == "benchmark" and listed["has_predefined_split"]
        assert listed["predefined_split"]["train_classes"] == 2
        config = {**TINY_CONFIG, "samples_per_class": 2, "split": {"mode": "predefined"}}
        r = client.post("/api/runs", json={"dataset_id": dataset.id, "config": config})
        assert r.status_code == 201, r.text
        assert wait_for(client, r.json()["id"], ("done", "failed"))["status"] == "done"


@pytest.mark.parametrize("kind,remove,named", [("cub", "CUB_200_2011/image_class_labels.txt", "image_class_labels.txt"),
                                               ("sop", "Stanford_Online_Products/Ebay_test.txt", "Ebay_test.txt"),
                                               ("cars", "cars_test_annos_withlabels.mat", "cars_test_annos_withlabels.mat"),
                                               ("inshop", "Eval/list_eval_partition.txt", "list_eval_partition.txt")])
def test_a_malformed_tree_is_one_line_naming_the_missing_file(kind: str, remove: str, named: str, tmp_path: Path,
                                                              capsys) -> None:
    LAYOUTS[kind][0](tmp_path / kind)
    (tmp_path / kind / remove).unlink()
    assert main(["import", kind, str(tmp_path / kind), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dmlscope: error: ") and named in err and "\n" not in err
    assert not Store.open(Settings(data_dir=tmp_path / "data")).list_datasets()
    assert not any((tmp_path / "data" / "datasets").iterdir())  # no half-imported folder stays


def test_not_a_folder_and_unknown_kind_are_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["import", "cub", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["import", "imagenet", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_ctrl_c_during_an_import_cancels_it_and_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys) -> None:
    """Through `dmlscope import`: the progress bar runs, Ctrl-C (KeyboardInterrupt) arrives between two files,
    the command ends with 130 and one line, and the data folder holds no record, folder or partial folder."""
    import models.data.importers as importers

    cub_tree(tmp_path / "cub")
    real_add, added = importers.add_file, []

    def interrupted_add(*args: Any, **kwargs: Any) -> int:
        if len(added) == 2:
            raise KeyboardInterrupt
        added.append(args)
        return real_add(*args, **kwargs)

    monkeypatch.setattr("models.data.benchmarks.add_file", interrupted_add)
    assert main(["import", "cub", str(tmp_path / "cub"), "--data-dir", str(tmp_path / "data")]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "dmlscope: error: import cub: cancelled; nothing of it was stored", err
    assert "import cub import" in err  # the bar: label, stage, files read
    assert not Store.open(Settings(data_dir=tmp_path / "data")).list_datasets()
    assert not any((tmp_path / "data" / "datasets").iterdir())
