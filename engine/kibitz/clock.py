"""Time and timers, as the engine sees them.

The engine never reads a wall clock or sleeps: it asks a :class:`Scheduler` for ``now()`` and for
callbacks later. asyncio (CPython), Pyodide's WebLoop and the fake clock in tests all provide it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Monotonic time in seconds plus one-shot timers; everything the engine needs of a clock.

    ``wall()`` is epoch seconds, only for what peers compare across machines (grant expiry,
    chat timestamps); everything else uses the monotonic ``now()``.
    """

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class AsyncioScheduler:
    """The scheduler on a running asyncio loop (CPython's or Pyodide's WebLoop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_event_loop()

    def now(self) -> float:
        return self._loop.time()

    def wall(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self._loop.call_later(max(0.0, delay), callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A deterministic scheduler for tests: time moves only when told to.

    ``call_soon`` work (e.g. message delivery on the in-memory bus) is modelled as a zero-delay
    timer, so ordering is total: by due time, then by scheduling order.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._queue: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        """Simulated time doubles as wall time: deterministic, and expiry still moves with advance()."""
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _FakeTimer:
        timer = _FakeTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._queue, (timer.when, next(self._seq), timer))
        return timer

    def call_soon(self, callback: Callable[[], None]) -> _FakeTimer:
        return self.call_later(0.0, callback)

    def run_until(self, deadline: float) -> None:
        """Fire every timer due at or before ``deadline`` (in order), then set now = deadline."""
        while self._queue and self._queue[0][0] <= deadline:
            when, _, timer = heapq.heappop(self._queue)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
        self._now = max(self._now, deadline)

    def advance(self, seconds: float) -> None:
        self.run_until(self._now + seconds)
