"""The writer thread's queue: group commit and timers, shared by the SQLite and PostgreSQL stores.

One thread per store owns the write connection. Callers ``submit`` a payload for a batch
handler and await its result; the thread takes everything queued (up to ``MAX_BATCH``) and
hands it to the store's ``commit`` as one batch, so one transaction (one fsync) serves every
request that arrived together. ``run_at`` asks for an empty batch of a handler at a moment (the
audit log's idle checkpoint); the thread sleeps until the nearest one.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from gateway.errors import StoreUnavailable

H = TypeVar("H")
MAX_BATCH = 2048
Batch = list[tuple[H, Any, "asyncio.Future[Any]"]]
_STOP = object()
_WAKE = object()  # a timer was set from another thread: recompute how long to sleep


class WriterQueue(Generic[H]):
    """The queue in front of a store's writer thread, and the thread's loop."""

    def __init__(self, commit: Callable[[Batch[H], list[H] | None], None], name: str) -> None:
        """``commit(batch, idle)`` runs in the thread: ``batch`` the queued (handler, payload,
        future) triples, ``idle`` the handlers whose ``run_at`` moment has come (batch empty)."""
        self._commit = commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._timers: dict[H, float] = {}
        self._timers_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def submit(self, handler: H, payload: Any) -> Any:
        """Queue ``payload`` for ``handler``; return its result once the batch is durable."""
        if self._closed:
            raise StoreUnavailable("the gateway is shutting down; retry on another instance")
        future = asyncio.get_running_loop().create_future()
        self._queue.put((handler, payload, future))
        return await future

    def run_at(self, handler: H, deadline: float) -> None:
        """Run an empty batch of ``handler`` at ``deadline`` (``time.monotonic()``) or soon after.

        No payloads: the handler's ``run_batch`` gets none, then ``finish_batch`` and
        ``committed`` or ``rolled_back`` run as for any batch. An earlier deadline already set
        for ``handler`` stands. Callable from any thread.
        """
        with self._timers_lock:
            current = self._timers.get(handler)
            if current is not None and current <= deadline:
                return
            self._timers[handler] = deadline
        if threading.current_thread() is not self._thread:
            self._queue.put(_WAKE)

    def close(self) -> None:
        """Refuse new payloads from now on (``StoreUnavailable``)."""
        self._closed = True

    async def stop(self) -> None:
        """Refuse new payloads, finish the queued ones and end the thread."""
        self.close()
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def _due(self) -> tuple[list[H], float | None]:
        """The handlers whose time has come, and how long to sleep until the next (None: none)."""
        now = time.monotonic()
        with self._timers_lock:
            due = [handler for handler, at in self._timers.items() if at <= now]
            for handler in due:
                del self._timers[handler]
            wait = min(self._timers.values(), default=None)
        return due, None if wait is None else max(0.0, wait - now)

    def _run(self) -> None:
        stop = False
        while not stop:
            due, wait = self._due()
            if due:
                self._commit([], due)
                continue
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            batch: Batch[H] = []
            while True:
                if item is _STOP:
                    stop = True
                elif item is not _WAKE:
                    batch.append(item)
                if stop or len(batch) >= MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(batch, None)
