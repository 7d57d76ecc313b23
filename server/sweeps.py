"""The sweep manager: drives `models.sweep.Sweep` in the web process through the ordinary job manager.

Each planned run becomes an ordinary run (listed with the others, executed by server/jobs.py), linked to its
sweep in `sweep_runs`. A supervisor thread polls the linked runs: an ended run's summary (or its failure) is
recorded into the Sweep, the state is saved after every record, and the next planned runs are launched, at
most `settings.workers` of one sweep queued or running at a time so that other runs are not starved. When the
Sweep is done its report is stored and the sweep is `done`.

Cancel cancels the sweep's queued and running runs and stops. A server stop (or a crash, found at the next
start) leaves the sweep `interrupted`: its queued runs are cancelled, running ones are interrupted by the job
manager. Resume rebuilds the Sweep from the saved state, re-offers the runs it had handed out but that were
never launched (`Sweep.requeue`), resumes the unrecorded interrupted or cancelled runs from their checkpoints
and carries on launching.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from models.errors import Conflict, DmlscopeError, InvalidInput
from models.sweep import PlannedRun, Sweep, SweepSpec
from server.events import EventHub
from server.jobs import JobManager
from server.lifecycle import record
from server.settings import Settings
from server.store import ACTIVE, Store
from server.sweeps_store import SWEEP_ACTIVE, SweepRecord, SweepStore, outcome

log = logging.getLogger("dmlscope.sweeps")
POLL_S = 0.5
INTERRUPTED = "the server stopped while this sweep was running; resume it to continue where it stopped"


@dataclass
class _Live:
    """A running sweep: its state machine, the planned runs handed out but not yet launched (kept in memory
    only: after a restart `Sweep.requeue` offers them again), and what subscribers were last shown."""
    dataset_id: str
    sweep: Sweep
    pending: list[PlannedRun]
    shown: tuple = field(default=())  # the runs' (status, progress) last published to subscribers


class SweepManager:
    """App state (not a module global): `start()` before the job manager starts, `stop()` before it stops."""

    def __init__(self, store: Store, jobs: JobManager, settings: Settings):
        self.store, self.jobs, self.settings = store, jobs, settings
        self.db = SweepStore(store)
        self.hub = EventHub()  # keyed by sweep id; the payload is only a nudge to re-read the sweep
        self._live: dict[str, _Live] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Mark sweeps a previous server left active as interrupted, then start supervising. Returns their ids."""
        left = self.db.active_ids()
        for sweep_id in left:
            self._interrupt(sweep_id)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name="dmlscope-sweeps", daemon=True)
        self._thread.start()
        return left

    def stop(self) -> None:
        """Stop supervising and leave every live sweep interrupted (resumable)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for sweep_id in list(self._live):
                self._interrupt(sweep_id)
            self._live.clear()

    def _interrupt(self, sweep_id: str) -> None:
        for run in self.db.runs(sweep_id):
            if run.status == "queued":  # not started: it would train for a sweep nobody records any more
                self._cancel_run(run.run_id)
        self._set_status(sweep_id, "interrupted", INTERRUPTED)

    # ---- requests -------------------------------------------------------------------------------------
    def plan(self, spec: SweepSpec) -> tuple[Sweep, list[PlannedRun]]:
        """A fresh Sweep and its first planned runs: the caller checks them before anything is recorded."""
        sweep = Sweep(spec)
        return sweep, sweep.next_runs()

    def create(self, dataset_id: str, name: str, spec: SweepSpec, sweep: Sweep,
               first: list[PlannedRun]) -> SweepRecord:
        """Record the sweep (its first runs already checked against the dataset) and launch them."""
        with self._lock:
            live = _Live(dataset_id, sweep, list(first))
            rec = self.db.create(dataset_id, name, spec.to_json(), sweep.state(), sweep.total)
            self._live[rec.id] = live
            self._save(rec.id, live)  # the empty report lists every planned run
            self._step(rec.id, live)
            return self.db.get(rec.id)

    def cancel(self, sweep_id: str) -> SweepRecord:
        with self._lock:
            rec = self.db.get(sweep_id)
            if rec.status not in SWEEP_ACTIVE:
                raise Conflict(f"sweep {rec.id} is already {rec.status}; only a queued or running sweep can be "
                               f"cancelled")
            self._live.pop(rec.id, None)  # first: its cancelled runs must not be recorded as failures
            for run in self.db.runs(rec.id):
                if run.status in ACTIVE:
                    self._cancel_run(run.run_id)
            return self._set_status(rec.id, "cancelled", None)

    def resume(self, sweep_id: str) -> SweepRecord:
        with self._lock:
            rec = self.db.get(sweep_id)
            if rec.status not in ("interrupted", "cancelled"):
                raise Conflict(f"sweep {rec.id} is {rec.status}; only an interrupted or cancelled sweep can be resumed")
            sweep = Sweep(SweepSpec.from_json(rec.spec), rec.state)
            sweep.requeue()  # the launched ones among them are skipped by _advance
            live = _Live(rec.dataset_id, sweep, [])
            recorded = set(sweep.state()["results"])
            for run in self.db.runs(rec.id):
                if run.key not in recorded and run.status in ("interrupted", "cancelled"):
                    self.jobs.resume(run.run_id)  # from its last saved epoch
            self._live[rec.id] = live
            self._set_status(rec.id, "running", None)
            self._step(rec.id, live)
            return self.db.get(rec.id)

    # ---- supervisor -----------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.wait(POLL_S):
            try:
                with self._lock:
                    for sweep_id, live in list(self._live.items()):
                        self._step(sweep_id, live)
            except Exception:  # e.g. failing a sweep deleted with its dataset: that sweep has left _live already
                log.exception("sweep supervisor error")

    def _step(self, sweep_id: str, live: _Live) -> None:
        try:
            self._advance(sweep_id, live)
        except InvalidInput as e:  # a planned run the dataset cannot train (lifecycle.check_fits): no bug
            self._fail(sweep_id, str(e))
        except Exception as e:  # a bug or a Sweep that refuses a result: fail this sweep, keep the others
            log.exception("sweep %s failed", sweep_id)
            self._fail(sweep_id, f"{type(e).__name__}: {e}")

    def _advance(self, sweep_id: str, live: _Live) -> None:
        """Record what ended, then launch what may start, finish, or notice that nothing can move."""
        runs = self.db.runs(sweep_id)
        recorded = set(live.sweep.state()["results"])  # the Sweep's state, saved with each record, is the truth
        ended = [(run.key, result) for run in runs if run.key not in recorded and (result := outcome(run))]
        for key, (summary, error) in ended:
            live.sweep.record(key, summary, error=error)
        if ended:
            self._save(sweep_id, live)
        if live.sweep.done:
            self._live.pop(sweep_id, None)
            self._set_status(sweep_id, "done", None)
            return
        launched = {run.key for run in runs}
        live.pending += [p for p in live.sweep.next_runs() if p.key not in launched]
        active = sum(run.status in ACTIVE for run in runs)
        active += self._launch(sweep_id, live, active)
        if not active and not live.pending:
            raise RuntimeError(f"the sweep has {live.sweep.finished} of {live.sweep.total} runs recorded but "
                               f"planned no further run")
        self._publish_if_changed(sweep_id, live)

    def _launch(self, sweep_id: str, live: _Live, active: int) -> int:
        """Start pending runs while fewer than `workers` of this sweep are active and the queue has room."""
        started = 0
        while live.pending and active + started < self.settings.workers:
            if len(self.store.queued_run_ids()) >= self.settings.max_queued:
                break  # the queue is full of other runs: try again on the next tick
            planned = live.pending.pop(0)
            # checked as every run is (lifecycle.record): a later phase's config, or a weights file removed since
            # the sweep was planned, fails the sweep with the reason instead of recording a run that cannot train
            rec = record(self.store, live.dataset_id, planned.config, name=f"{planned.name} [{sweep_id}]")
            self.db.link(sweep_id, planned.key, rec.id, {"phase": planned.phase, "variant": planned.variant,
                                                         "split": planned.split, "seed": planned.seed,
                                                         "grid_index": planned.grid_index})
            self.jobs.submit(rec.id)
            started += 1
        return started

    def _save(self, sweep_id: str, live: _Live) -> None:
        """Persist the state after every record (a restart resumes from it) with the report so far."""
        report = live.sweep.report()
        self.db.save(sweep_id, live.sweep.state(), live.sweep.finished, live.sweep.total,
                     {**report.to_json(), "markdown": report.markdown(), "planned": live.sweep.planned()})
        self._publish(sweep_id)

    def _fail(self, sweep_id: str, error: str) -> None:
        self._live.pop(sweep_id, None)
        for run in self.db.runs(sweep_id):
            if run.status in ACTIVE:
                self._cancel_run(run.run_id)
        self._set_status(sweep_id, "failed", error)

    def _cancel_run(self, run_id: str) -> None:
        try:
            self.jobs.cancel(run_id)
        except DmlscopeError:  # it ended in the meantime
            pass

    def _set_status(self, sweep_id: str, status: str, error: str | None) -> SweepRecord:
        rec = self.db.set_status(sweep_id, status, error)
        self._publish(sweep_id)
        return rec

    def _publish(self, sweep_id: str) -> None:
        self.hub.publish(sweep_id, "sweep", None)

    def _publish_if_changed(self, sweep_id: str, live: _Live) -> None:
        """Subscribers hear of run status changes and training progress (whole per cents), not every tick."""
        shown = tuple((r.status, int(100 * (r.progress or {}).get("fraction", 0))) for r in self.db.runs(sweep_id))
        if shown != live.shown:
            live.shown = shown
            self._publish(sweep_id)
