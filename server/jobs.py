"""Training jobs: a queue kept in the database, worker processes started by an executor, progress fan-out.

The queue *is* the `queued` rows of the runs table (oldest first), so it survives a restart. A supervisor
thread starts workers while fewer than `settings.workers` run (each through the executor its run asks for: one
local process, or torchrun with N), polls the store for what the workers write there (numbered progress
events, a run leaving `running`) and publishes it to the EventHub (SSE subscribers), and reaps workers: a
worker that exits without concluding its run is marked failed with its exit code, a cancelled one that does
not stop in time is killed with every process of its run. Runs trained by `dmlscope train` in the same data
folder are `running` rows too, so their progress streams the same way.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

from models.errors import Conflict, NotFound, QueueFull
from server.events import EventHub
from server.executor import Execution, Executor, executor_for
from server.settings import Settings
from server.store import ACTIVE, TERMINAL, RunRecord, Store

log = logging.getLogger("dmlscope.jobs")
_POLL_S = 0.2
STOP_GRACE_S = 10.0  # at shutdown, workers get this long after SIGTERM before SIGKILL


@dataclass
class _Job:
    execution: Execution
    kill_at: float | None = None  # set by cancel(): past this monotonic time every process of the run is killed


def _died(code: int) -> str:
    why = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    hint = " (out of memory?)" if code == -signal.SIGKILL else ""
    return f"the worker process died without reporting ({why}){hint}"


class JobManager:
    """Runs queued runs in worker processes; `start()` on server start-up, `stop()` on shutdown."""

    def __init__(self, store: Store, settings: Settings,
                 executors: Callable[[Settings, int], Executor] = executor_for):
        self.store = store
        self.settings = settings
        self.hub = EventHub()
        self._executors = executors
        self._jobs: dict[str, _Job] = {}
        self._seen: dict[str, int] = {}  # running run → number of its last progress event published
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Mark runs a previous server left `running` as interrupted, then start supervising. Returns those ids."""
        interrupted = self.store.mark_interrupted()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name="dmlscope-jobs", daemon=True)
        self._thread.start()
        return interrupted

    def stop(self) -> None:
        """Stop supervising; workers still training are stopped and their runs marked interrupted (resumable)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for job in self._jobs.values():
                job.execution.cancel(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for run_id, job in list(self._jobs.items()):
                while job.execution.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                job.execution.cancel(signal.SIGKILL)
                job.execution.wait()
                if (rec := self._record(run_id)) and rec.status == "running":  # the worker did not conclude it
                    self._finish(run_id, "interrupted", "the server stopped while this run was training; resume it "
                                                        "to continue from the last saved epoch")
            self._jobs.clear()

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
        """A queued run leaves the queue at once; a running one is asked to stop (its worker polls the store)
        and is killed if it has not stopped within `cancel_grace_s`."""
        with self._lock:
            rec = self.store.get_run(run_id)
            if rec.status not in ACTIVE:
                raise Conflict(f"run {rec.id} is already {rec.status}; only queued or running runs can be cancelled")
            if rec.status == "queued":  # it never started, so it simply leaves the queue
                return self._finish(rec.id, "cancelled", None)
            self.store.request_cancel(rec.id)  # also stops a `dmlscope train` run, which polls it too
            job = self._jobs.get(rec.id)
            if job is not None:
                job.kill_at = job.kill_at or time.monotonic() + self.settings.cancel_grace_s
            rec = self.store.get_run(rec.id)
        self.hub.publish(rec.id, "run", rec)
        return rec

    def resume(self, run_id: str, processes: int | None = None) -> RunRecord:
        """Queue a stopped run again, to continue from its checkpoint; with `processes`, in that many processes
        (checked by the caller, see executor.resolve_processes)."""
        rec = self.store.get_run(run_id)
        if rec.status not in ("interrupted", "cancelled", "failed"):
            raise Conflict(f"run {rec.id} is {rec.status}; only interrupted, cancelled or failed runs can be resumed")
        self.check_capacity()
        if processes is not None:
            self.store.set_processes(rec.id, processes)
        rec = self.store.set_status(rec.id, "queued")
        self.submit(rec.id)
        return rec

    # ---- supervisor -----------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._lock:
                    self._watch()
                    self._reap()
                    self._start_queued()
            except Exception:  # a bug here must not silently stop all training
                log.exception("job supervisor error")
            self._stopping.wait(_POLL_S)

    def _watch(self) -> None:
        """Publish the progress events the workers wrote since the last look, in order, and the new state of
        every run that left `running` (its worker concluded it). A watched run that concluded before it was
        ever seen running (a short `dmlscope train` run) is published whole, so its stream ends too."""
        subscribed = set(self.hub.keys())
        rows = self.store.progress_logs(sorted(set(self._seen) | subscribed))
        for gone in set(self._seen) - {run_id for run_id, _, _ in rows}:  # deleted
            del self._seen[gone]
        for run_id, status, events in rows:
            if status != "running" and run_id not in self._seen and status not in TERMINAL:
                continue  # a subscriber waits for a queued run: nothing to say yet
            last = self._seen.pop(run_id, 0)
            for seq, progress in events:
                if seq > last:
                    self.hub.publish(run_id, "progress", progress)
            if status == "running":
                self._seen[run_id] = max([last, *(seq for seq, _ in events)])
            elif rec := self._record(run_id):
                self.hub.publish(run_id, "run", rec)

    def _record(self, run_id: str) -> RunRecord | None:
        """The run's record, or None once it has been deleted (a concluded run may go while its worker exits)."""
        try:
            return self.store.get_run(run_id)
        except NotFound:
            return None

    def _reap(self) -> None:
        for run_id, job in list(self._jobs.items()):
            code = job.execution.poll()
            if code is None and (job.kill_at is None or time.monotonic() <= job.kill_at):
                continue
            if code is None:  # cancelled, and not stopped within the grace period
                job.execution.cancel(signal.SIGKILL)
                job.execution.wait()
                why = (f"stopped by force: the worker did not stop within {self.settings.cancel_grace_s:g} s of the "
                       f"cancel request")
                status = "cancelled"
            else:  # torchrun ranks an agent left behind exit by themselves (worker.watch_server)
                why, status = _died(code), "failed"
            del self._jobs[run_id]
            if (rec := self._record(run_id)) and rec.status == "running":  # the worker did not conclude the run
                self._watch()  # its last progress first
                self._finish(run_id, status, why)

    def _finish(self, run_id: str, status: str, error: str | None) -> RunRecord:
        rec = self.store.set_status(run_id, status, error)
        self._seen.pop(run_id, None)
        if status == "running":
            self._seen[run_id] = 0
        self.hub.publish(run_id, "run", rec)
        return rec

    def _start_queued(self) -> None:
        if self._stopping.is_set():
            return
        free = self.settings.workers - len(self._jobs)
        # A run whose previous worker is still exiting waits for it (one execution per run at a time).
        for run_id in [r for r in self.store.queued_run_ids() if r not in self._jobs][:max(free, 0)]:
            rec = self._finish(run_id, "running", None)  # before the worker starts: its conclusion comes after
            try:
                execution = self._executors(self.settings, rec.processes).launch(rec.id)
            except Exception as e:  # cannot spawn (no memory, no file descriptors): the run fails, the queue goes on
                self._finish(rec.id, "failed", f"could not start a worker process: {type(e).__name__}: {e}")
                continue
            self._jobs[rec.id] = _Job(execution)
            log.info("run %s started in %d process(es) (pid %s)", rec.id, rec.processes, execution.pid)
