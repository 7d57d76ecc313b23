"""The one shape of an event stream (runs, dataset imports): a snapshot, progress, changes, and a final `end`."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from server.events import EventHub

KEEPALIVE_S = 15.0
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def subscribed(hub: EventHub, key: str, read: Callable[[], Any]) -> tuple[asyncio.Queue, Any]:
    """The opening every event stream shares: `read()` once, so a missing record is a 404 before a stream starts,
    then subscribe to `key`, then `read()` the state the stream starts from: subscribed first, no event falls
    between that state and the queue (a read that fails after all leaves no subscription behind)."""
    read()
    queue = hub.subscribe(key)
    try:
        return queue, read()
    except BaseException:
        hub.unsubscribe(key, queue)
        raise


def follow(hub: EventHub, key: str, queue: asyncio.Queue, kind: str, snapshot: Any, progress: Any,
           public: Callable[[Any], Any], ended: Callable[[Any], bool]) -> StreamingResponse:
    """Stream `snapshot` (as event `kind`) and its `progress`, then the hub's events for `key` (from `queue`; both
    from `subscribed`): `progress` as is, records as `kind`, and `end` with the record
    once `ended(record)`. A comment every KEEPALIVE_S keeps proxies from closing a quiet stream."""
    async def stream() -> AsyncIterator[str]:
        try:
            yield sse(kind, public(snapshot))
            if ended(snapshot):
                yield sse("end", public(snapshot))
                return
            if progress is not None:
                yield sse("progress", progress)
            while True:
                try:
                    event, payload = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if event == "progress":
                    yield sse("progress", payload)
                    continue
                yield sse(kind, public(payload))
                if ended(payload):
                    yield sse("end", public(payload))
                    return
        finally:
            hub.unsubscribe(key, queue)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=HEADERS)
