"""Executors: how a recorded run's worker processes are started, watched and stopped.

One small interface — `launch(run_id)` gives an `Execution` with `poll()` and `cancel()` — and two
implementations: `LocalProcess` (one `python -m server.worker RUN_ID DATA_DIR`) and `Torchrun` (the same worker
under `python -m torch.distributed.run --standalone --nproc_per_node N`, data-parallel: gloo on CPU, nccl with
one GPU per process). The worker gets nothing but the run id and the data folder; everything else it reads from
the store. The server's settings that shape a worker (device, threads) travel as its DMLSCOPE_* environment,
as they would for any dmlscope process started by hand.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path

from server.settings import Settings

SERVER_PID_ENV = "DMLSCOPE_SERVER_PID"  # the worker exits when this process is gone (worker.watch_server)


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a worker: the server's, with the settings a worker reads spelled out (they may have
    been given to the server as arguments rather than in its environment)."""
    env = {**os.environ, "DMLSCOPE_DATA_DIR": str(settings.data_dir), "DMLSCOPE_DEVICE": settings.device,
           SERVER_PID_ENV: str(os.getpid())}
    if settings.database_url:
        env["DMLSCOPE_DATABASE_URL"] = settings.database_url
    if settings.torch_threads:
        env["DMLSCOPE_TORCH_THREADS"] = str(settings.torch_threads)
        env["OMP_NUM_THREADS"] = str(settings.torch_threads)  # else torchrun sets 1 for every process
    if settings.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # cpu hides the GPUs from the workers, as the setting promises
    return env


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc; elsewhere none are found and only `pid`'s group is signalled).
    Needed because torchrun starts each rank in a session of its own, out of reach of a process-group kill."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Execution:
    """The processes of one launched run: the one started here, and every process below it."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        """None while running; else the exit code (negative: killed by that signal)."""
        return self.process.poll()

    def cancel(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to every process of the run (each in its own process group: the worker's DataLoader
        children too). The cooperative cancel is the store's `cancel_requested`; this is the forceful one.
        Nothing is sent once the started process has been reaped: its pid may belong to another process by then."""
        if self.process.poll() is not None:
            return
        for pid in [self.pid, *_descendants(self.pid)]:  # the tree first: a killed parent orphans its children
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, sig)  # a process that is not a group leader
                except ProcessLookupError:
                    pass

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)


class Executor(ABC):
    """Starts the worker processes of a run recorded in the store."""

    processes: int

    def __init__(self, settings: Settings):
        self.settings = settings

    @abstractmethod
    def command(self, run_id: str) -> list[str]:
        """The command line that executes the run."""

    def launch(self, run_id: str) -> Execution:
        # A session of its own: a Ctrl-C meant for the server does not reach the worker (the server marks the
        # run interrupted), and cancel() can signal the whole group.
        process = subprocess.Popen(self.command(run_id), env=worker_env(self.settings), start_new_session=True,
                                   stdin=subprocess.DEVNULL)
        return Execution(process)


class LocalProcess(Executor):
    """One worker process on this machine."""

    processes = 1

    def command(self, run_id: str) -> list[str]:
        return [sys.executable, "-m", "server.worker", run_id, str(self.settings.data_dir)]


class Torchrun(Executor):
    """N data-parallel worker processes on this machine under torchrun; rank 0 records, the others follow."""

    def __init__(self, settings: Settings, processes: int):
        super().__init__(settings)
        self.processes = processes

    def command(self, run_id: str) -> list[str]:
        # --standalone: a private rendezvous on a free local port, so two runs never meet each other's ranks.
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(self.processes), "--max_restarts", "0", "-m", "server.worker", run_id, str(self.settings.data_dir)]


def executor_for(settings: Settings, processes: int) -> Executor:
    return LocalProcess(settings) if processes == 1 else Torchrun(settings, processes)


# ---- how many processes a run may ask for ------------------------------------------------------------------
def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. a container's share, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus(settings: Settings) -> int:
    """CUDA GPUs the workers see: none when the server's device setting is cpu."""
    if settings.device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count()


def resolve_processes(requested: int | str, device: str, batch_size: int, settings: Settings) -> int:
    """The process count for a run asked to use `requested` ("auto": every visible GPU, 1 without one) on the
    config's `device`; InvalidInput (what to choose instead) when this machine cannot give that many. A CUDA run
    takes one GPU per process; a CPU run at most one process per core. The global batch must split evenly."""
    from models.errors import InvalidInput

    gpus = visible_gpus(settings)
    cuda = device == "cuda" or (device == "auto" and gpus > 0)
    if requested == "auto":
        return max(gpus, 1) if cuda else 1
    count = int(requested)
    limit, what = (gpus, "visible GPU(s), one per process") if cuda else (cpu_cores(), "CPU core(s)")
    if not 1 <= count <= max(limit, 1):
        raise InvalidInput(f"processes: {count} is more than this server offers for device {device!r} ({limit} "
                         f"{what}); choose 1 to {max(limit, 1)}, or 'auto'")
    if batch_size % count:
        raise InvalidInput(f"processes: the batch of {batch_size} images (classes_per_batch × samples_per_class) "
                         f"does not split evenly over {count} processes; choose a divisor of {batch_size}")
    return count
