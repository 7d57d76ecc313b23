"""Training jobs: one spawned worker process per running run, a queue kept in the database, progress fan-out.

The queue *is* the `queued` rows of the runs table (oldest first), so it survives a restart. A supervisor
thread starts workers while fewer than `settings.workers` run, drains the shared progress queue into the store
(latest state) and into the EventHub (SSE subscribers), and reaps workers: a worker that dies without
reporting is marked failed with its exit code, a cancelled one that does not stop in time is killed.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from models.errors import Conflict, QueueFull
from server.events import EventHub
from server.settings import Settings
from server.store import ACTIVE, RunRecord, Store
from server.weights import with_weights_file

log = logging.getLogger("dmlscope.jobs")
_POLL_S = 0.2
PROGRESS_EVERY_S = 0.25
PARENT_POLL_S = 0.5
ORPHAN_EXIT_CODE = 75  # EX_TEMPFAIL: the worker stopped because its server died, not because the run failed


def _run_worker(run_id: str, origin: str, dataset_dir: str, run_dir: str, parent_dir: str | None,
                config_json: str, device: str, torch_threads: int | None, events: Any, cancel: Any) -> None:
    """Entry point of a worker process (spawned: a fresh interpreter, so CUDA and torch start clean).

    A trained run executes (resuming from its checkpoint if one is there); an imported one measures the
    checkpoint, or the TorchScript module, that the import placed in its folder, without training.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it marks us interrupted
    _exit_with_parent(os.getppid())
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        import torch

        from models.config import RunConfig
        from models.data import ImageSet
        from models.embeddings_import import measure_embeddings_file
        from models.progress import Cancelled
        from models.run import execute_run, import_model, import_torchscript
        from models.runfolder import RunFolder

        if torch_threads:
            torch.set_num_threads(torch_threads)

        image_set, report = ImageSet(dataset_dir), _Throttled(run_id, events)
        should_cancel = cancel.is_set
        try:
            folder = RunFolder(run_dir)
            if origin == "import" and folder.is_torchscript():  # the user allowed its code
                summary = import_torchscript(folder.torchscript_path, image_set, run_dir,
                                             RunConfig.model_validate_json(config_json), on_progress=report,
                                             should_cancel=should_cancel, parent_dir=parent_dir)
            elif origin == "import":
                summary = import_model(folder.checkpoint_path, image_set, run_dir, on_progress=report,
                                       should_cancel=should_cancel, parent_dir=parent_dir)
            elif origin == "embeddings":
                summary = measure_embeddings_file(image_set, run_dir, RunConfig.model_validate_json(config_json),
                                                  on_progress=report, should_cancel=should_cancel, parent_dir=parent_dir)
            else:
                summary = execute_run(image_set, RunConfig.model_validate_json(config_json), run_dir,
                                      on_progress=report, should_cancel=should_cancel, parent_dir=parent_dir,
                                      resume=True)
        except Cancelled:
            events.put(("cancelled", run_id, None))
            return
        events.put(("done", run_id, summary))
    except BaseException as e:  # the worker's last word: whatever went wrong, the server must hear of it
        tail = "".join(traceback.format_exception(e)[-3:]).strip()
        events.put(("failed", run_id, f"{type(e).__name__}: {e}\n{tail}"))


def _exit_with_parent(parent: int) -> None:
    """Exit as soon as the server that started this worker is gone, even if it was killed with SIGKILL.

    Nobody would record the result, and an orphan would hold the CPU or GPU (and the run folder) until it
    finished. A thread polls the parent id rather than the training loop, since embedding, statistics and
    maps do not poll for cancellation. Exiting at once is safe: every artifact is written atomically, and the
    next server start marks the run interrupted, to resume from its last saved epoch.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=watch, name="dmlscope-parent-watch", daemon=True).start()


class _Throttled:
    """Forward progress at most every PROGRESS_EVERY_S (and on each stage change): SSE clients and the database
    want the latest state, not every step."""

    def __init__(self, run_id: str, events: Any):
        self.run_id, self.events = run_id, events
        self.last_time, self.last_stage = 0.0, ""

    def __call__(self, progress: Any) -> None:
        t = time.monotonic()
        if progress.stage != self.last_stage or t - self.last_time >= PROGRESS_EVERY_S:
            self.last_time, self.last_stage = t, progress.stage
            self.events.put(("progress", self.run_id, progress.to_dict()))


@dataclass
class _Job:
    process: Any
    cancel: Any
    kill_at: float | None = None  # set by cancel(): past this monotonic time the worker is killed
    result: tuple[str, Any] | None = field(default=None)


class JobManager:
    """Runs queued runs in worker processes; `start()` on server start-up, `stop()` on shutdown."""

    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings
        self.hub = EventHub()
        self._ctx = mp.get_context("spawn")
        self._events: Any = None
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Mark runs a previous server left `running` as interrupted, then start supervising. Returns those ids."""
        interrupted = self.store.mark_interrupted()
        self._events = self._ctx.Queue()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name="dmlscope-jobs", daemon=True)
        self._thread.start()
        return interrupted

    def stop(self) -> None:
        """Stop supervising; workers still training are killed and their runs marked interrupted (resumable)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for run_id, job in list(self._jobs.items()):
                job.process.terminate()
                job.process.join(timeout=10)
                if job.process.is_alive():
                    job.process.kill()
                    job.process.join()
                self._finish(run_id, "interrupted", "the server stopped while this run was training; resume it "
                                                    "to continue from the last saved epoch")
            self._jobs.clear()
        if self._events is not None:
            self._events.close()
            self._events.join_thread()

    # ---- requests -------------------------------------------------------------------------------------
    def state(self) -> dict[str, int]:
        with self._lock:
            running = len(self._jobs)
        return {"workers": self.settings.workers, "running": running,
                "queued": len(self.store.queued_run_ids()), "max_queued": self.settings.max_queued}

    def check_capacity(self) -> None:
        """Raise QueueFull before a new run is recorded, so a refused request leaves nothing behind."""
        if len(self.store.queued_run_ids()) >= self.settings.max_queued:
            raise QueueFull(f"{self.settings.max_queued} runs are already queued (DMLSCOPE_MAX_QUEUED); wait for "
                            f"some to finish or cancel queued ones")

    def submit(self, run_id: str) -> None:
        """Announce a run recorded as queued; the supervisor starts it when a worker is free."""
        self.hub.publish(run_id, "run", self.store.get_run(run_id))

    def cancel(self, run_id: str) -> RunRecord:
        with self._lock:
            rec = self.store.get_run(run_id)
            if rec.status not in ACTIVE:
                raise Conflict(f"run {rec.id} is already {rec.status}; only queued or running runs can be cancelled")
            job = self._jobs.get(rec.id)
            if job is None:  # still queued: it never started, so it simply leaves the queue
                return self._finish(rec.id, "cancelled", None)
            job.cancel.set()
            job.kill_at = job.kill_at or time.monotonic() + self.settings.cancel_grace_s
            self.store.request_cancel(rec.id)
            rec = self.store.get_run(rec.id)
        self.hub.publish(rec.id, "run", rec)
        return rec

    def resume(self, run_id: str) -> RunRecord:
        rec = self.store.get_run(run_id)
        if rec.status not in ("interrupted", "cancelled", "failed"):
            raise Conflict(f"run {rec.id} is {rec.status}; only interrupted, cancelled or failed runs can be resumed")
        self.check_capacity()
        rec = self.store.set_status(rec.id, "queued")
        self.submit(rec.id)
        return rec

    # ---- supervisor -----------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                self._drain(timeout=_POLL_S)
                self._reap()
                self._start_queued()
            except Exception:  # a bug here must not silently stop all training
                log.exception("job supervisor error")
                time.sleep(_POLL_S)

    def _drain(self, timeout: float) -> None:
        """Wait up to `timeout` for the first message, then take whatever else is already there."""
        while True:
            try:
                kind, run_id, payload = self._events.get(timeout=timeout) if timeout else self._events.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return
            timeout = 0
            self._handle(kind, run_id, payload)

    def _handle(self, kind: str, run_id: str, payload: Any) -> None:
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None:
                return  # a late message from a worker already reaped or killed
            if kind == "progress":
                self.store.set_progress(run_id, payload)
                self.hub.publish(run_id, "progress", payload)
            else:
                job.result = (kind, payload)

    def _reap(self) -> None:
        with self._lock:
            for run_id, job in list(self._jobs.items()):
                if job.process.is_alive():
                    if job.kill_at is not None and time.monotonic() > job.kill_at:
                        job.process.kill()
                        job.process.join()
                        del self._jobs[run_id]
                        self._finish(run_id, "cancelled", f"stopped by force: the worker did not stop within "
                                                          f"{self.settings.cancel_grace_s:g} s of the cancel request")
                    continue
                job.process.join()
                if job.result is None:  # its last message may still be in the pipe
                    self._drain(timeout=0.5)
                del self._jobs[run_id]
                self._conclude(run_id, job)

    def _conclude(self, run_id: str, job: _Job) -> None:
        if job.result is None:
            code = job.process.exitcode
            why = f"killed by signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
            hint = " (out of memory?)" if code == -signal.SIGKILL else ""
            self._finish(run_id, "failed", f"the worker process died without reporting ({why}){hint}")
            return
        kind, payload = job.result
        if kind == "done":
            self.store.set_summary(run_id, payload)
            self._finish(run_id, "done", None)
        elif kind == "cancelled":
            self._finish(run_id, "cancelled", None)
        else:
            self._finish(run_id, "failed", str(payload))

    def _finish(self, run_id: str, status: str, error: str | None) -> RunRecord:
        rec = self.store.set_status(run_id, status, error)
        self.hub.publish(run_id, "run", rec)
        return rec

    def _start_queued(self) -> None:
        if self._stopping.is_set():
            return
        with self._lock:
            free = self.settings.workers - len(self._jobs)
            for run_id in self.store.queued_run_ids()[:max(free, 0)]:
                rec = self.store.get_run(run_id)
                try:
                    args = self._worker_args(rec)
                except Exception as e:  # e.g. a stored config that no longer validates: fail it, keep the queue
                    self._finish(rec.id, "failed", f"the run could not start: {e}")
                    continue
                self._launch(rec.id, args)

    def _worker_args(self, rec: RunRecord) -> tuple:
        parent_dir = None
        if rec.parent_id is not None and self.store.get_run(rec.parent_id).status == "done":
            parent_dir = str(self.store.run_dir(rec.parent_id))  # only a finished parent has maps to align to
        return (rec.id, rec.origin, str(self.store.dataset_dir(rec.dataset_id)), str(self.store.run_dir(rec.id)),
                parent_dir, with_weights_file(self.store, rec.run_config()).model_dump_json(), self.settings.device,
                self.settings.torch_threads)

    def _launch(self, run_id: str, args: tuple) -> None:
        cancel = self._ctx.Event()
        # Not a daemon: a daemonic process may not start children (e.g. DataLoader workers in a trainer).
        process = self._ctx.Process(target=_run_worker, name=f"dmlscope-run-{run_id}",
                                    args=(*args, self._events, cancel))
        try:
            process.start()
        except Exception as e:  # cannot spawn (no memory, no file descriptors): the run fails, the queue goes on
            self._finish(run_id, "failed", f"could not start a worker process: {type(e).__name__}: {e}")
            return
        self._jobs[run_id] = _Job(process, cancel)
        self._finish(run_id, "running", None)
        log.info("run %s started (pid %s)", run_id, process.pid)
