"""The asyncio plumbing both halves of :class:`~kibitz.backends.rtc.RtcTransport` share.

:class:`RtcLoop` owns the event loop (found lazily), the tasks the transport spawns, the guard
around adapter callbacks, and the one ordered queue of :data:`~kibitz.transport.TransportEvent`
values to the sink: events are delivered in order and never from inside a Transport call, so the
engine can call back into the transport from its sink without re-entrancy.

This module must stay importable under Pyodide: asyncio only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from kibitz.transport import EventSink, TransportEvent

log = logging.getLogger("kibitz.backends.rtc")  # one logger for the whole transport


class RtcLoop:
    """Event queue to the sink, spawned tasks and guarded callbacks (one per transport)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self.sink: EventSink | None = None
        self._queue: deque[TransportEvent] = deque()
        self._flush_pending = False
        self._delivering = False
        self.tasks: set[asyncio.Task[None]] = set()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = asyncio.get_event_loop()
        return self._loop

    # ------------------------------------------------------------------------------ events out

    def emit(self, event: TransportEvent) -> None:
        """Queue ``event`` for a ``call_soon`` callback (never delivered from inside this call)."""
        self._queue.append(event)
        if not self._flush_pending:
            self._flush_pending = True
            self.get_loop().call_soon(self._flush)

    def hand_over(self, event: TransportEvent) -> None:
        """For an event arriving in a native callback (an inbound message): deliver it at once when
        nothing is queued ahead of it and no delivery is under way, else queue it like :meth:`emit`.
        Order and non-reentrancy hold either way, and the hot path saves a loop hop (160–330 µs per
        message under Pyodide's WebLoop)."""
        if self._queue or self._flush_pending or self._delivering:
            self.emit(event)
        else:
            self._deliver(event)

    def _flush(self) -> None:
        self._flush_pending = False
        while self._queue:
            self._deliver(self._queue.popleft())

    def _deliver(self, event: TransportEvent) -> None:
        sink = self.sink
        if sink is None:
            log.warning("transport event with no sink bound: %r", event)
            return
        self._delivering = True
        try:
            sink(event)
        except Exception:
            log.exception("transport sink raised on %r", event)
        finally:
            self._delivering = False

    # ------------------------------------------------------------------------------ tasks

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.get_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("transport task failed", exc_info=task.exception())

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for the tasks still running."""
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    @staticmethod
    def guard(fn: Callable[..., None]) -> Callable[..., None]:
        """Wrap an adapter-facing callback so an exception is logged, never propagated."""

        def wrapper(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("transport callback %s raised", getattr(fn, "__name__", fn))

        return wrapper
