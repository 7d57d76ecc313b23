"""The opening all event streams share (routes/sse.subscribed): a missing record is refused before anything is
subscribed, the state is read after subscribing, and a read that fails after all leaves no subscriber behind."""
from __future__ import annotations

import asyncio

import pytest

from models.errors import NotFound
from server.events import EventHub
from server.routes.sse import subscribed


def test_subscribes_between_the_check_and_the_state() -> None:
    hub = EventHub()
    seen: list[list[str]] = []

    def read() -> str:
        seen.append(hub.keys())
        return f"state {len(seen)}"

    async def open_stream() -> tuple[asyncio.Queue, str]:
        return subscribed(hub, "r1", read)

    queue, state = asyncio.run(open_stream())
    assert seen == [[], ["r1"]] and state == "state 2"  # the first read checks, the second is the snapshot
    assert isinstance(queue, asyncio.Queue) and hub.keys() == ["r1"]


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_missing_record_leaves_no_subscriber(fail_at: int) -> None:
    hub = EventHub()
    calls = []

    def read() -> str:
        calls.append(1)
        if len(calls) == fail_at:
            raise NotFound("run r1 does not exist")
        return "state"

    async def open_stream() -> None:
        subscribed(hub, "r1", read)

    with pytest.raises(NotFound):
        asyncio.run(open_stream())
    assert hub.keys() == [] and len(calls) == fail_at
