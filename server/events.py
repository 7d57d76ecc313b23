"""In-process fan-out of change events to asyncio subscribers (the SSE streams of runs, sweeps, imports).

Producers are threads (the job supervisor polling the store); consumers are request handlers on the event loop.
A subscriber's buffer is bounded: a reader that falls 256 events behind loses the oldest ones first.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

SUBSCRIBER_BUFFER = 256


class EventHub:
    """Per-key (a run id, a sweep id, ...) fan-out to asyncio subscribers; `publish` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = {}

    def subscribe(self, key: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(SUBSCRIBER_BUFFER)
        with self._lock:
            self._subs.setdefault(key, []).append((asyncio.get_running_loop(), q))
        return q

    def keys(self) -> list[str]:
        """The keys someone is subscribed to now."""
        with self._lock:
            return list(self._subs)

    def unsubscribe(self, key: str, q: asyncio.Queue) -> None:
        with self._lock:
            subs = [s for s in self._subs.get(key, []) if s[1] is not q]
            if subs:
                self._subs[key] = subs
            else:
                self._subs.pop(key, None)

    def publish(self, key: str, kind: str, payload: Any) -> None:
        """Hand (kind, payload) to every subscriber of `key`; for runs `kind` is "run" (payload: RunRecord) or
        "progress" (payload: a Progress dict)."""
        with self._lock:
            subs = list(self._subs.get(key, []))
        for loop, q in subs:
            try:
                loop.call_soon_threadsafe(_offer, q, (kind, payload))
            except RuntimeError:  # that subscriber's loop has closed
                self.unsubscribe(key, q)


def _offer(q: asyncio.Queue, item: tuple[str, Any]) -> None:
    # Progress is a "latest state" stream: when the buffer is full the oldest item goes, and the newest stays.
    while q.full():
        q.get_nowait()
    q.put_nowait(item)
