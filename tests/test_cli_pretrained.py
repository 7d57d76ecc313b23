"""`dmlscope train --pretrained imagenet --freeze-bn` from the command line: the flags reach the config, and
offline (an empty torch cache, downloads refused by a closed local proxy port) the run ends with one line that
says what to do, and is recorded as failed."""
from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import build_parser, main
from server.cli_config import build_config
from server.settings import Settings
from server.store import Store


def test_pretrained_and_freeze_bn_flags() -> None:
    args = build_parser().parse_args(["train", "--data", "digits", "--backbone", "resnet50", "--pretrained",
                                      "imagenet", "--freeze-bn"])
    config = build_config(args, Settings(device="cpu"))
    assert (config.backbone, config.pretrained, config.freeze_bn) == ("resnet50", "imagenet", True)
    args = build_parser().parse_args(["train", "--data", "digits"])
    assert (build_config(args, Settings(device="cpu")).pretrained, build_config(args, Settings()).freeze_bn) == \
        (None, False)


def test_offline_pretrained_is_one_line_and_a_failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    code = main(["train", "--data", "synthetic", "--backbone", "resnet18", "--pretrained", "imagenet",
                 "--epochs", "1", "--steps-per-epoch", "1", "--set", "classes_per_batch=2", "--set", "samples_per_class=4",
                 "--device", "cpu", "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith("dmlscope: error: could not download the ImageNet weights of resnet18")
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in err and "--pretrained-weights FILE" in err
    (run,) = Store.open(Settings(data_dir=tmp_path / "data")).list_runs()
    assert run.status == "failed" and "could not download" in run.error
