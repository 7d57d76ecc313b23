"""Waiting without timing assertions: poll until a state is reached (or fail after a generous deadline)."""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

from fastapi.testclient import TestClient


def wait_for(client: TestClient, run_id: str, statuses: tuple[str, ...], timeout: float = 120.0) -> dict[str, Any]:
    """Poll a run until it reaches one of `statuses` (the SSE path has its own tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not reach {statuses}; last: {json.dumps(run)[:800]}")


def wait_for_dataset(client: Any, dataset_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll a dataset until its import has ended, `ready` or `failed` (the SSE path has its own tests).
    `client`: a TestClient or an httpx.Client."""
    def ended() -> dict[str, Any] | None:
        dataset = client.get(f"/api/datasets/{dataset_id}").json()
        return dataset if dataset["state"] != "importing" else None

    return wait_until(ended, f"the import of dataset {dataset_id} to end", timeout)


def wait_until(predicate: Any, what: str, timeout: float = 120.0) -> Any:
    """Poll `predicate()` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def read_sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs from a text/event-stream, until the stream ends."""
    event, data = None, []
    for line in lines:
        if line == "":
            if event is not None:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            data.append(line[len("data: "):])
