"""Dataset imports as jobs: one worker process per upload, its progress and outcome fanned out as events.

The worker runs `server.imports.execute_import` (the path the CLI runs in its own process), writing progress
and the outcome to the store; decoding is CPU-bound, so it runs beside the server, never inside a request
(`settings.import_executor`: a worker process, or a thread of the server that stops at its next file). A
supervisor thread polls the store for datasets being imported (the server's, and a CLI command's in the same
data folder) and publishes what changed to the EventHub behind `GET /api/datasets/{id}/events`; a worker
that dies without concluding its import is marked failed. Cancel stops the worker and discards the import.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
from dataclasses import replace
from multiprocessing.process import BaseProcess

from models.errors import Conflict
from models.progress import Cancelled
from server.events import EventHub
from server.settings import Settings
from server.store import IMPORT_INTERRUPTED, DatasetRecord, Store

log = logging.getLogger("dmlscope.imports")
_POLL_S = 0.2
Worker = BaseProcess | threading.Thread


def _import_worker(settings: Settings, dataset_id: str) -> None:
    """Entry point of an import worker process (spawned: a fresh interpreter)."""
    from server.imports import execute_import, stored_build
    from server.worker import watch_server

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    watch_server()  # a killed server: exit; its next start marks this import failed and cleans up
    store = Store.open(settings)
    try:
        execute_import(store, dataset_id, stored_build(store, store.get_dataset(dataset_id)))
    finally:
        store.close()


def _import_here(store: Store, dataset_id: str) -> None:
    """Body of an import thread (import_executor "thread"): the outcome is in the store either way."""
    from server.imports import execute_import, stored_build

    try:
        execute_import(store, dataset_id, stored_build(store, store.get_dataset(dataset_id)))
    except Cancelled:
        pass  # discarded
    except Exception:
        log.exception("import of dataset %s", dataset_id)  # marked failed, with the error


class ImportJobs:
    """Starts import workers and follows every import in progress; `start()` with the server, `stop()` at its end.

    Events per dataset id: ("progress", Progress dict) and ("dataset", DatasetRecord); the record's state is
    `importing`, then `ready`, `failed` or, for a cancelled import whose record is gone, `cancelled`.
    """

    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        self.hub = EventHub()
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._workers: dict[str, Worker] = {}
        self._seen: dict[str, DatasetRecord] = {}  # imports in progress, as last published
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="dmlscope-imports", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the supervisor and every worker; a process's import is marked failed (its upload is gone), a
        thread's is cancelled (discarded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            workers, self._workers = self._workers, {}
        for dataset_id, worker in workers.items():
            self._end(dataset_id, worker)
            rec = self.store.find_dataset(dataset_id)
            if rec is not None and rec.state == "importing":
                self.store.fail_import(dataset_id, IMPORT_INTERRUPTED)

    def submit(self, rec: DatasetRecord) -> None:
        """Import the recorded dataset `rec` (state `importing`, its upload stored) in a new worker."""
        name = f"dmlscope-import-{rec.id}"
        worker: Worker
        if self.settings.import_executor == "thread":
            worker = threading.Thread(target=_import_here, args=(self.store, rec.id), name=name, daemon=True)
        else:
            worker = self._ctx.Process(target=_import_worker, args=(self.settings, rec.id), name=name, daemon=True)
        self.watch(rec)
        try:
            worker.start()
        except BaseException:
            self.store.discard_import(rec.id)
            raise
        with self._lock:
            self._workers[rec.id] = worker

    def watch(self, rec: DatasetRecord) -> None:
        """Follow an import in progress until it ends, so its subscribers get the end even when it is quick."""
        with self._lock:
            if rec.state == "importing":
                self._seen.setdefault(rec.id, rec)

    def cancel(self, dataset_id: str) -> DatasetRecord:
        """Stop an import and leave nothing of it; returns its last record, in state `cancelled` (or the ready
        dataset, when the import finished first). A CLI command's import stops itself at its next file."""
        rec = self.store.get_dataset(dataset_id)
        if rec.state != "importing":
            raise Conflict(f"dataset {rec.id} is {rec.state}; only an import in progress can be cancelled")
        self.store.request_import_cancel(rec.id)
        with self._lock:
            worker = self._workers.pop(rec.id, None)
        if worker is not None:
            self._end(rec.id, worker)
            now = self.store.find_dataset(rec.id)
            if now is not None and now.state == "ready":
                return now
            self.store.discard_import(rec.id)
        cancelled = replace(rec, state="cancelled")
        self._publish_end(cancelled)
        return cancelled

    def _end(self, dataset_id: str, worker: Worker) -> None:
        """Stop a worker now: a process is killed; a thread is asked to stop (at its next file) and waited for."""
        if isinstance(worker, threading.Thread):
            self.store.request_import_cancel(dataset_id)
        else:
            worker.kill()
        worker.join()

    def _publish_end(self, rec: DatasetRecord) -> None:
        with self._lock:
            watched = self._seen.pop(rec.id, None) is not None
        if watched:
            self.hub.publish(rec.id, "dataset", rec)

    def _supervise(self) -> None:
        while not self._stop.wait(_POLL_S):
            try:
                self._reap()
                self._poll()
            except Exception:  # the next poll tries again; the server keeps serving
                log.exception("import supervisor")

    def _reap(self) -> None:
        """A worker that exited without concluding its import (killed, out of memory) fails it."""
        with self._lock:
            ended = {i: w for i, w in self._workers.items() if not w.is_alive()}
            for dataset_id in ended:
                del self._workers[dataset_id]
        for dataset_id, worker in ended.items():
            worker.join()
            rec = self.store.find_dataset(dataset_id)
            if rec is not None and rec.state == "importing":
                code = f" (exit code {worker.exitcode})" if isinstance(worker, BaseProcess) else ""
                self.store.fail_import(dataset_id, f"the import worker stopped unexpectedly{code}; import the "
                                                   "data again")

    def _poll(self) -> None:
        """Publish each import's new progress, and its end: `ready`, `failed`, or `cancelled` once it is gone."""
        for rec in self.store.list_datasets(state="importing"):
            self.watch(rec)
        with self._lock:
            seen = dict(self._seen)
        for dataset_id, last in seen.items():
            rec = self.store.find_dataset(dataset_id)
            if rec is None or rec.state != "importing":
                self._publish_end(rec or replace(last, state="cancelled"))
            elif rec.progress != last.progress:
                with self._lock:
                    self._seen[dataset_id] = rec
                self.hub.publish(dataset_id, "progress", rec.progress)
