"""The worker processes the server starts for a run, found by their command lines in /proc (Linux).

A local run is one `python -m server.worker RUN_ID DATA_DIR`; a torchrun run is the agent
(`python -m torch.distributed.run ... -m server.worker RUN_ID ...`) and one such worker per rank.
"""
from __future__ import annotations

from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    """Running (a zombie has exited; only its exit status is left to collect)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def worker_pids(run_id: str) -> list[int]:
    """Live processes executing the run `run_id`, in pid order (the agent of a torchrun run first)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if b"server.worker" in args and run_id.encode() in args and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)
