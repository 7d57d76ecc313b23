"""models.checkpoint and models.inference.model_from_checkpoint: save → load (weights_only) → the same model;
config read and checked; machine paths stripped."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from models.checkpoint import CheckpointError, checked_fields, load_checkpoint, read_config, save_checkpoint, strip_paths
from models.config import RunConfig
from models.inference import load_model, model_from_checkpoint
from models.runfolder import RunFolder
from models.trainer import build_distance, build_model

CONFIG = RunConfig(embedding_dim=8, image_size=16, distance={"name": "mahalanobis"}, device="cpu", amp=False)


def _save(path: Path, config: RunConfig = CONFIG, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    model, distance = build_model(config.skeleton(), 3, 16), build_distance(config)
    with torch.no_grad():
        distance.L.add_(torch.randn_like(distance.L))  # a learned parameter that must survive the round trip
    save_checkpoint(path, config=config, epoch=2, in_channels=3, image_size=16, class_ids=[0, 2],
                    model=model.state_dict(), criterion={}, distance=distance.state_dict(), optimizer={}, scaler=None,
                    rng={}, history=[{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}])
    return model.eval(), distance.eval()


def test_a_saved_checkpoint_loads_into_the_same_model(tmp_path: Path) -> None:
    model, distance = _save(tmp_path / "ckpt.pt")
    loaded = load_model(tmp_path / "ckpt.pt", device="cpu")
    x = torch.rand(4, 3, 16, 16) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).embedding, model(x).embedding, rtol=0, atol=0)
        e = torch.randn(5, 8)
        torch.testing.assert_close(loaded.distance(e), distance(e), rtol=0, atol=0)
    assert loaded.config == CONFIG and loaded.image_size == 16
    assert read_config(tmp_path / "ckpt.pt") == CONFIG
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["epoch"] == 2 and ckpt["class_ids"] == [0, 2] and len(ckpt["history"]) == 2


def test_a_run_folder_loads_through_its_checkpoint(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    _save(folder.checkpoint_path)
    assert load_model(folder.dir, device="cpu").config == CONFIG
    folder.checkpoint_path.unlink()
    folder.torchscript_path.write_bytes(b"module")
    with pytest.raises(ValueError, match="imported TorchScript module"):
        load_model(folder.dir)


class _Runs:
    def __reduce__(self) -> tuple:
        return (print, ("code ran",))


@pytest.mark.parametrize("content, why", [
    (b"not a checkpoint", "not a readable dmlscope checkpoint"),
    (pickle.dumps({"format": 1, "model": {}, "x": _Runs()}), "not a readable dmlscope checkpoint"),
    (None, "not a dmlscope checkpoint (format 1)"),
], ids=["bytes", "pickle with code", "other format"])
def test_only_a_dmlscope_checkpoint_loads(tmp_path: Path, content: bytes | None, why: str) -> None:
    path = tmp_path / "f.pt"
    if content is None:
        torch.save({"format": 99, "model": {}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=why.replace("(", r"\(").replace(")", r"\)")):
        load_checkpoint(path)


def _ckpt(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    _save(tmp_path / "c.pt")
    return {**load_checkpoint(tmp_path / "c.pt"), **fields}


@pytest.mark.parametrize("fields, why", [
    ({"in_channels": 3.0}, "in_channels: Input should be a valid integer"),
    ({"image_size": 4000}, "image_size: Input should be less than or equal to 1024"),
    ({"class_ids": [-1]}, "class_ids: expected a list of class numbers"),
    ({"config": {**CONFIG.model_dump(mode="json"), "embedding_dim": 10**6}}, "config.embedding_dim: Input should be"),
    ({"config": {**CONFIG.model_dump(mode="json"), "image_size": 32}}, "contradicts its config.image_size"),
])
def test_checked_fields_name_the_field(tmp_path: Path, fields: dict, why: str) -> None:
    with pytest.raises(CheckpointError, match=why):
        checked_fields(_ckpt(tmp_path, **fields))


def test_weights_that_do_not_fit_are_named(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, config={**CONFIG.model_dump(mode="json"), "embedding_dim": 16})
    with pytest.raises(CheckpointError, match="the checkpoint's model weights do not fit .*size mismatch"):
        model_from_checkpoint(ckpt)


def test_strip_paths_drops_a_weights_path_and_rewrites_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    _save(path)
    before = path.read_bytes()
    assert strip_paths(path, load_checkpoint(path)) == CONFIG
    assert path.read_bytes() == before  # nothing to strip: the file is not touched
    ckpt = load_checkpoint(path)
    ckpt["config"] = {**ckpt["config"], "pretrained_weights": "/home/someone/resnet.pt"}
    torch.save(ckpt, path)
    config = strip_paths(path, load_checkpoint(path))
    assert config.pretrained_weights is None
    assert load_checkpoint(path)["config"]["pretrained_weights"] is None
    assert load_model(path, device="cpu").config == config
