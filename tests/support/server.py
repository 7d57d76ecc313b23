"""A live `dmlscope serve` (uvicorn) in a subprocess on a free loopback port, over a given data folder.

The process runs this checkout's code (PYTHONPATH), on CPU, without built-in datasets unless asked; `settings`
become DMLSCOPE_* environment variables, exactly as a user would configure a server.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SERVE = "from server.app import serve; from server.settings import Settings; serve(Settings())"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a test server process: this checkout's code, no built-ins, CPU, plus `settings`."""
    return {**os.environ, "DMLSCOPE_DATA_DIR": str(data_dir), "DMLSCOPE_PORT": str(port),
            "DMLSCOPE_BUILTIN_DATASETS": "", "DMLSCOPE_WARM_UMAP": "false", "DMLSCOPE_DEVICE": "cpu",
            "DMLSCOPE_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT),
            **{f"DMLSCOPE_{k.upper()}": v for k, v in settings.items()}}


class Server:
    """Started on construction (waits for /api/health); `stop()` sends what Ctrl-C sends. Its log lies next to
    the data folder (`output()` shows the end of it)."""

    def __init__(self, data_dir: Path, **settings: str):
        self.port, self.data_dir = free_port(), data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        env = server_env(data_dir, self.port, **settings)
        self.log = (data_dir.parent / f"server-{self.port}.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.proc.kill()
        raise AssertionError(f"the server did not come up:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-4000:]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C does: a graceful shutdown
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()
