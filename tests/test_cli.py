"""The `dmlscope` command line: config from flags, runs registered in the server's store, eval/compare/sweep
output, serve --help, and one-line errors with exit code 2 (1 for a run that diverges)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import BadInput, build_parser, main
from server.cli_config import FLAGS, build_config, config_field
from server.cli_train import _StopOnSigint
from server.settings import Settings
from server.store import Store

# Tiny runs on the built-in synthetic shapes (8 classes × 20 images, 32 px): a few seconds each.
TINY = ["--data", "synthetic", "--epochs", "1", "--steps-per-epoch", "2", "--embedding-dim", "8",
        "--set", "classes_per_batch=2", "--set", "samples_per_class=4", "--device", "cpu"]


def _config(*argv: str, settings: Settings | None = None):
    args = build_parser().parse_args(["train", "--data", "digits", *argv])
    return build_config(args, settings or Settings(device="cpu"))


def test_flags_become_the_run_config(tmp_path: Path) -> None:
    config = _config("--loss", "contrastive", "--distance", "snr", "--normalize", "--miner", "all", "--flow",
                     "--flow-depth", "2", "--flow-dueling", "--coupling", "additive", "--reg", "det=0.05",
                     "--reg", "density=0.5", "--epochs", "3", "--seed", "7", "--embedding-dim", "16", "--lr", "0.01",
                     "--set", "loss.params.pos_margin=0.1", "--set", "optimizer.name=sgd")
    assert (config.loss.name, config.distance.name, config.distance.normalize, config.miner.name) == \
        ("contrastive", "snr", True, "all")
    assert (config.flow.enabled, config.flow.depth, config.flow.dueling, config.flow.coupling) == \
        (True, 2, True, "additive")
    assert [(r.name, r.weight) for r in config.regularizers] == [("det", 0.05), ("density", 0.5)]
    assert (config.epochs, config.seed, config.embedding_dim, config.optimizer.lr) == (3, 7, 16, 0.01)
    assert config.loss.params == {"pos_margin": 0.1} and config.optimizer.name == "sgd"
    assert config.device == "cpu"  # from the settings (DMLSCOPE_DEVICE) when --device is not given

    base = tmp_path / "base.json"
    base.write_text(json.dumps({"epochs": 9, "regularizers": [{"name": "density", "weight": 0.2}]}))
    config = _config("--config", str(base), "--reg", "zero_mean=0.005", "--reg", "density=0.7")
    assert config.epochs == 9  # the file's value stays unless a flag overrides it
    assert [(r.name, r.weight) for r in config.regularizers] == [("density", 0.7), ("zero_mean", 0.005)]


def test_bad_flags_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="--reg expects NAME=VALUE"):
        _config("--reg", "det")
    with pytest.raises(BadInput, match="weight must be a number"):
        _config("--reg", "det=lots")
    with pytest.raises(BadInput, match="cannot read a JSON RunConfig"):
        _config("--config", str(tmp_path / "missing.json"))


@pytest.mark.slow
def test_train_registers_the_run_in_the_store_then_eval_and_compare(tmp_path: Path, capsys) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["train", *TINY, *data, "--name", "first"]) == 0
    out, err = capsys.readouterr()
    assert "is under-trained: only 2 optimizer steps (minimum 100)" in err  # TINY trains 2 steps
    store = Store.open(Settings(data_dir=tmp_path))
    (run,) = store.list_runs()
    assert run.status == "done" and run.name == "first" and run.summary["origin"] == "train"
    assert f"run {run.id}" in out and str(store.run_dir(run.id)) in out and "| MAP@R |" in out
    assert (store.run_dir(run.id) / "summary.json").is_file()

    assert main(["train", *TINY, *data, "--seed", "1", "--flow", "--reg", "det=0.05", "--parent", run.id]) == 0
    child = store.list_runs()[0]
    assert child.parent_id == run.id and child.config["flow"]["enabled"]
    capsys.readouterr()

    assert main(["eval", run.id[:6], *data]) == 0
    assert f"run {run.id}" in capsys.readouterr().out
    assert main(["compare", run.id, child.id, *data]) == 0
    out = capsys.readouterr().out
    assert f"A = {run.id}" in out and f"B = {child.id}" in out and "| A radius_mean | B radius_mean |" in out

    checkpoint = store.run_dir(child.id) / "checkpoint.pt"
    assert main(["eval", str(checkpoint), "--data", "synthetic", *data]) == 0
    imported = store.list_runs()[0]
    assert imported.origin == "import" and imported.status == "done"
    assert imported.summary["test"].pop("common") == pytest.approx(child.summary["test"]["common"])
    assert imported.summary["test"] == pytest.approx({k: v for k, v in child.summary["test"].items() if k != "common"})
    assert len(store.list_datasets()) == 1  # the built-in set is imported once and reused


@pytest.mark.slow
def test_sweep_end_to_end_prints_the_paired_table_and_writes_json(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    argv = ["sweep", *TINY, "--splits", "2", "--seeds", "1", "--variants", "baseline,density",
            "--data-dir", str(tmp_path / "data")]
    assert main([*argv, "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "paired t-test" in out and "### Selection on the validation classes" in out and "Partial" not in out
    row = next(line for line in out.splitlines() if line.startswith("| density | 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "±" in cells[2] and cells[3].startswith(("+", "-")) and "[" in cells[3]
    assert cells[8] == "2/2"  # 2 steps per run: every run is under-trained
    data = json.loads(report.read_text())
    assert data["complete"] and {r["variant"] for r in data["variants"]} == {"baseline", "density"}
    density = next(r for r in data["variants"] if r["variant"] == "density" and r["metric"] == "map_at_r")
    assert density["n"] == 2 and density["under_trained"] == 2 and set(density["chosen"]) == {"0", "1"}
    assert len(data["selection"]) == 2 * (2 + 3)  # splits × (baseline's margins + density's 3 points)
    runs = Store.open(Settings(data_dir=tmp_path / "data")).list_runs()
    finals = sorted(r.name for r in runs if not r.name.startswith("sweep select"))
    assert finals == ["sweep baseline split 0 seed 0", "sweep baseline split 1 seed 0",
                      "sweep density split 0 seed 0", "sweep density split 1 seed 0"]
    select = next(r for r in runs if r.name == "sweep select density split 1 grid 2")
    assert select.config["split"] == {"mode": "random_half", "seed": 1, "validation": True}
    assert all(r.config["steps_per_epoch"] == 2 and r.status == "done" for r in runs)


def test_sweep_refuses_unknown_variants_and_a_sweep_without_baseline(tmp_path: Path, capsys) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["sweep", *TINY, "--variants", "baseline,nope", *data]) == 2
    assert "unknown sweep variant 'nope'" in capsys.readouterr().err
    assert main(["sweep", *TINY, "--variants", "density", *data]) == 2
    assert "include 'baseline'" in capsys.readouterr().err
    assert Store.open(Settings(data_dir=tmp_path)).list_runs() == []


def test_errors_are_one_line_with_exit_code_2(tmp_path: Path, capsys) -> None:
    data = ["--data-dir", str(tmp_path)]
    cases = [
        (["train", *TINY, *data, "--loss", "trplet"], "config loss.name"),
        (["train", "--epochs", "1", *data], "required: --data"),
        (["train", *TINY[2:], "--data", str(tmp_path / "nowhere"), *data], "is not a built-in set"),
        (["train", *TINY, *data, "--epochs", "0"], "epochs"),
        (["eval", "abcdef", *data], "does not exist"),
        (["eval", str(tmp_path / "model.pt"), *data], "does not exist"),
        (["bogus"], "invalid choice"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("dmlscope: error: ") and words in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_a_diverging_run_exits_1_and_is_marked_failed(tmp_path: Path, capsys) -> None:
    argv = ["train", *TINY, "--data-dir", str(tmp_path), "--epochs", "20", "--lr", "10", "--set",
            "optimizer.name=sgd", "--set", "optimizer.momentum=0.99", "--loss", "contrastive", "--miner", "all",
            "--reg", "l2_embedding=1"]
    assert main(argv) == 1
    assert "training diverged at epoch" in capsys.readouterr().err
    (run,) = Store.open(Settings(data_dir=tmp_path)).list_runs()
    assert run.status == "failed" and "diverged" in run.error


def test_first_ctrl_c_asks_the_run_to_stop() -> None:
    with _StopOnSigint() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop()  # noted, no KeyboardInterrupt: the trainer stops between steps
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_serve_help_lists_every_setting(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for var, _, _ in Settings.field_help():
        assert var in out
    assert "--host" in out and "--port" in out and "--data-dir" in out


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_config_flags_are_explained_by_their_fields_descriptions(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = "".join(capsys.readouterr().out.split())  # argparse wraps lines (also at hyphens)
    for flag, path, _ in FLAGS:
        assert flag in out and "".join(config_field(path).description.split()) in out, flag
    assert "asecondflowbranchwhoselog|detJ|ismaximised" in out


@pytest.mark.slow
def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "server.cli", "train", "--data", "digits", "--loss", "trplet",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("dmlscope: error: config loss.name") and "Traceback" not in proc.stderr


def test_a_run_this_data_set_cannot_train_is_refused_before_it_is_recorded(tmp_path: Path, capsys) -> None:
    argv = ["train", *TINY, "--set", "classes_per_batch=40", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "set classes_per_batch to at most" in capsys.readouterr().err
    assert Store.open(Settings(data_dir=tmp_path)).list_runs() == []
