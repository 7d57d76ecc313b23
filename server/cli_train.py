"""`dmlscope train | eval`: a run recorded and executed in this process, through the server's run lifecycle.

`run_in_store` executes a recorded run with `server.lifecycle.run_recorded`, exactly as a server worker does:
progress goes to the store as well as to a progress bar, the outcome is recorded, and a cancel request from the
browser stops it like Ctrl-C does. Under torchrun, rank 0 records and executes; the other ranks follow it.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from server import lifecycle
from server.cli import BadInput, RunFailed, _settings, metrics_table, resolve_dataset
from server.cli_config import build_config

_STOPPED = "stopped while it ran from the command line; resume it from the browser"


class ProgressBar:
    """tqdm bar over the whole run (fraction of all stages), with epoch, loss, samples/s and ETA."""

    def __init__(self, name: str):
        from tqdm import tqdm

        self.name = name
        # The status goes in tqdm's `desc` at the end of the line (a postfix would get a leading comma).
        self.bar = tqdm(total=1000, desc=name, file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                        bar_format="{percentage:3.0f}%|{bar:20}| {desc}")

    def __call__(self, p: Any) -> None:
        parts = [self.name, p.stage]
        if p.stage == "train":
            parts.append(f"epoch {p.epoch}/{p.epochs}")
            if p.loss is not None:
                parts.append(f"loss {p.loss:.4f}")
            if p.samples_per_s:
                parts.append(f"{p.samples_per_s:.0f} img/s")
            if p.eta_s is not None:
                parts.append(f"ETA {int(p.eta_s) // 60}:{int(p.eta_s) % 60:02d}")
        elif p.message:
            parts.append(p.message)
        self.bar.set_description_str(" ".join(parts), refresh=False)
        self.bar.update(max(0, round(p.fraction * 1000) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


class _StopOnSigint:
    """First Ctrl-C asks the run to stop after the current step (kept checkpoint, status `cancelled`)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.getsignal(signal.SIGINT)

    def __enter__(self) -> "_StopOnSigint":
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_: Any) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *_: Any) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def __call__(self) -> bool:
        return self.requested


def run_in_store(store: Any, rec: Any, label: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Execute the run `rec` (recorded `running`) here with a progress bar (`label`, default "run ID") and record
    its outcome; returns the concluded record and the summary. Stops on Ctrl-C or a cancel request."""
    from models.trainer import TrainingDiverged

    bar = ProgressBar(label or f"run {rec.id}")
    to_store, cancel = lifecycle.StoreProgress(store, rec.id), lifecycle.StoreCancel(store, rec.id)

    def on_progress(p: Any) -> None:
        bar(p)
        to_store(p)

    try:
        with _StopOnSigint() as stop:
            summary = lifecycle.run_recorded(store, rec.id, on_progress, lambda: stop() or cancel(), _STOPPED)
    except TrainingDiverged as exc:
        raise RunFailed(f"run {rec.id}: {exc}") from None
    finally:
        bar.close()
    return store.get_run(rec.id), summary


def print_run(rec: Any, run_dir: Path, summary: dict[str, Any]) -> None:
    from models.diagnostics import saturation_warning

    print(f"run {rec.id}  {rec.name}")
    print(f"folder {run_dir}")
    print(metrics_table({"train classes": summary["train"], "test classes (unseen)": summary["test"]}))
    check = summary.get("under_trained")
    if check and check["flag"]:
        print(f"warning: run {rec.id} is under-trained: {'; '.join(check['reasons'])}", file=sys.stderr)
    if warning := saturation_warning(summary):
        print(warning)


def cmd_train(args: argparse.Namespace) -> int:
    from models import distributed
    from server.store import Store

    settings = _settings(args)
    config = build_config(args, settings)
    with distributed.process_group(config.device) as top:  # a no-op unless launched by torchrun
        if not top.is_primary:  # ranks > 0 train in step with rank 0's run and record nothing
            from models.run import follow_run

            follow_run()
            return 0
        store = Store.open(settings)
        dataset = resolve_dataset(store, args.data)
        parent = store.get_run(args.parent) if args.parent else None
        rec = lifecycle.record(store, dataset.id, config, name=args.name, parent_id=parent.id if parent else None,
                               status="running", processes=top.world_size)
        rec, summary = run_in_store(store, rec)
        print_run(rec, store.run_dir(rec.id), summary)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Print a stored run's metrics, or evaluate an exported checkpoint file (`--data`) as a new run."""
    from server.store import Store

    store = Store.open(_settings(args))
    target = Path(args.run)
    if target.suffix == ".pt" or target.is_file():
        return _eval_checkpoint(store, target, args)
    rec = store.get_run(args.run)
    if rec.status != "done" or rec.summary is None:
        raise BadInput(f"run {rec.id} is {rec.status}; only finished runs have metrics")
    print_run(rec, store.run_dir(rec.id), rec.summary)
    return 0


def _eval_checkpoint(store: Any, path: Path, args: argparse.Namespace) -> int:
    """Record an imported run from the checkpoint (its config is the record's), place a copy in the run's folder
    and measure it there, as the server's import does."""
    from models.checkpoint import read_config
    from models.runfolder import RunFolder

    if not path.is_file():
        raise BadInput(f"{path} does not exist; give a run id or an exported checkpoint .pt file")
    if not args.data:
        raise BadInput(f"evaluating the checkpoint {path} needs --data (the image set to embed and measure)")
    dataset = resolve_dataset(store, args.data)
    rec = store.create_run(dataset.id, read_config(path), name=args.name or f"import {path.name}",
                           origin="import", status="running")
    RunFolder(store.run_dir(rec.id)).copy_checkpoint_from(path)
    rec, summary = run_in_store(store, rec)
    print_run(rec, store.run_dir(rec.id), summary)
    return 0


def add_run_parsers(sub: Any) -> None:
    """Register `train` and `eval` on the CLI's sub-parsers."""
    from server.cli import _add_data_dir
    from server.cli_config import add_config_flags

    p = sub.add_parser("train", help="train a run and register it in the store",
                       description="Train one run in this process; it appears in the browser like any other.")
    p.add_argument("--data", required=True, help="mnist5k | digits | synthetic | FOLDER | ZIP | dataset id")
    p.add_argument("--name", help="run name shown in the browser")
    p.add_argument("--parent", help="a run id this one retrains (its UMAP map is aligned to the parent's)")
    add_config_flags(p)
    _add_data_dir(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="print a run's metrics, or evaluate an exported checkpoint",
                       description="RUN is a run id (prefix) whose metrics are printed, or an exported checkpoint "
                                   "(.pt) evaluated on --data as a new imported run (no training).")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", help="image set for a checkpoint file (as for train)")
    p.add_argument("--name", help="name of the imported run")
    _add_data_dir(p)
    p.set_defaults(func=cmd_eval)
