"""The one run lifecycle: record → execute → conclude, for the server's workers and the command line alike.

The store's row is the run's one truth. `execute` reads the config from it (the run folder's `config.json` and
the checkpoint carry copies for portability, never read back here), `StoreProgress` writes progress to it,
`StoreCancel` polls its `cancel_requested`, and `run_recorded` writes the outcome (summary and status). A
worker process (server/worker.py) and `dmlscope train` (in-process, with a progress bar) differ only in where
they run this, so a run started in either place looks the same in the browser, and either can be cancelled
from the browser.
"""
from __future__ import annotations

import time
import traceback
from collections import deque
from typing import Any

from models.config import RunConfig
from models.progress import Cancelled, CancelCheck, Progress, ProgressCallback
from models.errors import InvalidInput
from server.store import RunRecord, Store

PROGRESS_EVERY_S = 0.25  # progress written at most this often (and on every stage change)
CANCEL_POLL_S = 0.25  # the store is asked for a cancel request at most this often
PROGRESS_LOG = 32  # recent progress events kept in the row, numbered, for the server to stream in order


class StoreProgress:
    """Progress into the run's row: the latest state (`progress`) and the last PROGRESS_LOG events, numbered
    (`progress_log`), from which the server streams every stage change in order although it reads the row
    only a few times a second. Throttled: SSE clients and the database want the latest state, not every step."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id
        self.log: deque[tuple[int, dict[str, Any]]] = deque(maxlen=PROGRESS_LOG)
        self.seq, self.last_time, self.last_stage = 0, 0.0, ""

    def __call__(self, progress: Progress) -> None:
        t = time.monotonic()
        if progress.stage == self.last_stage and t - self.last_time < PROGRESS_EVERY_S:
            return
        self.last_time, self.last_stage, self.seq = t, progress.stage, self.seq + 1
        state = progress.to_dict()
        self.log.append((self.seq, state))
        self.store.set_progress(self.run_id, state, list(self.log))


class StoreCancel:
    """`should_cancel` for a run: true once someone (the browser, the API) set its `cancel_requested`."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id
        self.last_check, self.requested = 0.0, False

    def __call__(self) -> bool:
        t = time.monotonic()
        if not self.requested and t - self.last_check >= CANCEL_POLL_S:
            self.last_check = t
            self.requested = self.store.cancel_requested(self.run_id)
        return self.requested


def check_fits(store: Store, dataset_id: str, config: RunConfig) -> None:
    """InvalidInput now, not a failed run later: the dataset must split and batch the way the config asks, and an
    uploaded weights file it chooses must exist and fit its backbone."""
    from models.data import DatasetError, check_trainable
    from server.weights import check_weights_choice

    check_weights_choice(store, config)
    try:
        check_trainable(store.image_set(dataset_id), config)
    except DatasetError as e:
        raise InvalidInput(f"dataset {dataset_id} cannot be trained with this config: {e}") from None


def record(store: Store, dataset_id: str, config: RunConfig, name: str | None = None, parent_id: str | None = None,
           status: str = "queued", processes: int = 1) -> RunRecord:
    """Record a run to train, once its config is known to fit the dataset; the caller queues or executes it."""
    check_fits(store, dataset_id, config)
    return store.create_run(dataset_id, config, name=name, parent_id=parent_id, status=status, processes=processes)


def parent_dir(store: Store, rec: RunRecord) -> Any:
    """The folder of the run `rec` retrains, if that run finished (only a finished run has maps to align to)."""
    if rec.parent_id is None:
        return None
    parent = store.get_run(rec.parent_id)
    return store.run_dir(parent.id) if parent.status == "done" else None


def execute(store: Store, run_id: str, on_progress: ProgressCallback, should_cancel: CancelCheck) -> dict[str, Any]:
    """Execute the recorded run `run_id` into its folder and return its summary (recording nothing but its
    progress). What runs depends on the run's origin: training (resumed from a checkpoint already in its folder),
    or measuring the checkpoint, TorchScript module or embeddings file its import placed in its folder."""
    from models.data import ImageSet
    from models.embeddings_import import measure_embeddings_file
    from models.run import execute_run, import_model, import_torchscript
    from models.runfolder import RunFolder
    from server.weights import with_weights_file

    rec = store.get_run(run_id)
    image_set, run_dir = ImageSet(store.dataset_dir(rec.dataset_id)), store.run_dir(rec.id)
    config, parent, folder = rec.run_config(), parent_dir(store, rec), RunFolder(run_dir)
    common = {"on_progress": on_progress, "should_cancel": should_cancel, "parent_dir": parent}
    if rec.origin == "import" and folder.is_torchscript():  # the user allowed its code to run
        # The module's output dimension is known once it has run: the row gets the measured config first.
        return import_torchscript(folder.torchscript_path, image_set, run_dir, config,
                                  on_config=lambda measured: store.set_config(rec.id, measured), **common)
    if rec.origin == "import":
        return import_model(folder.checkpoint_path, image_set, run_dir, **common)
    if rec.origin == "embeddings":
        return measure_embeddings_file(image_set, run_dir, config, **common)
    return execute_run(image_set, with_weights_file(store, config), run_dir, resume=True, **common)


def failure(exc: BaseException) -> str:
    """What a failed run's `error` says: the message, and for an unexpected error where it happened."""
    from models.trainer import TrainingDiverged

    if isinstance(exc, TrainingDiverged):
        return str(exc)
    tail = "".join(traceback.format_exception(exc)[-3:]).strip()
    return f"{type(exc).__name__}: {exc}\n{tail}"


def run_recorded(store: Store, run_id: str, on_progress: ProgressCallback, should_cancel: CancelCheck,
                 cancelled_note: str | None = None) -> dict[str, Any]:
    """Execute the recorded run and conclude it in the store: `done` with its summary, `cancelled` (with
    `cancelled_note`), or `failed` with the reason. Returns the summary; re-raises what stopped the run."""
    try:
        summary = execute(store, run_id, on_progress, should_cancel)
    except (Cancelled, KeyboardInterrupt):
        store.set_status(run_id, "cancelled", cancelled_note)
        raise
    except BaseException as exc:
        store.set_status(run_id, "failed", failure(exc))
        raise
    store.set_summary(run_id, summary)
    store.set_status(run_id, "done")
    return summary
