"""`python -m server.worker RUN_ID DATA_DIR`: execute one recorded run, as started by an executor (server/executor.py).

The worker is given the run id and the data folder, nothing else: it opens the store, reads the run from it,
writes progress and the outcome to it and polls its `cancel_requested` (server/lifecycle.py). Under torchrun every
rank runs this; rank 0 records, the others train in step with it (models.run.follow_run) and write nothing.

Exit codes: 0 when the run concluded (done or cancelled), 1 when it failed (the reason is in the store),
ORPHAN_EXIT_CODE when the server that started it went away.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from server.executor import SERVER_PID_ENV

PARENT_POLL_S = 0.5
ORPHAN_EXIT_CODE = 75  # EX_TEMPFAIL: the worker stopped because its server died, not because the run failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_server() -> None:
    """Exit as soon as the server that started this worker, or this worker's parent (the server, or torchrun's
    agent), is gone, even if it was killed with SIGKILL.

    Nobody would record the result, and an orphan would hold the CPU or GPU (and the run folder) until it
    finished. A thread polls rather than the training loop, since embedding, statistics and maps do not poll
    for cancellation. Exiting at once is safe: every artifact is written atomically, and the next server start
    marks the run interrupted, to resume from its last saved epoch.
    """
    parent, server = os.getppid(), int(os.environ.get(SERVER_PID_ENV) or 0)

    def watch() -> None:
        while os.getppid() == parent and (not server or _alive(server)):
            time.sleep(PARENT_POLL_S)
        os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=watch, name="dmlscope-parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.worker", description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("data_dir", type=Path)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it marks the run interrupted
    watch_server()

    import torch

    from models import distributed
    from models.progress import Cancelled
    from server import lifecycle
    from server.settings import Settings
    from server.store import Store

    settings = Settings(data_dir=args.data_dir)  # the rest (device, threads) from the DMLSCOPE_* environment
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    store = Store.open(settings)
    try:
        device = store.get_run(args.run_id).run_config().device  # every rank: it decides gloo or nccl
        with distributed.process_group(device) as top:
            if not top.is_primary:
                from models.run import follow_run

                try:
                    follow_run()
                except Cancelled:
                    pass  # rank 0 saw the request and records it
                return 0
            try:
                lifecycle.run_recorded(store, args.run_id, lifecycle.StoreProgress(store, args.run_id),
                                       lifecycle.StoreCancel(store, args.run_id))
            except Cancelled:
                return 0
            except Exception:  # recorded in the store as the run's error
                return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
