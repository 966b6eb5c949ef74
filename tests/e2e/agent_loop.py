"""An asyncio loop in a daemon thread for a CPython agent, shared by the e2e modules that put an
agent in a call with real tabs: Playwright's sync API owns the main thread, so the agent runs on
this loop and is driven with ``asyncio.run_coroutine_threadsafe``; every read of agent state runs
on that loop too (the engine is single-threaded)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class AgentLoop:
    """An asyncio loop in a daemon thread, for the agent while Playwright holds the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="agent-loop", daemon=True)
        self.thread.start()
        self.pump: Callable[[], None] = lambda: time.sleep(0.01)
        """Called while the main thread waits for the loop. It must keep Playwright dispatching:
        with the offline guard's ``route_web_socket`` every page WebSocket (the broker's signaling
        included) is relayed through this process, so blocking here would stall the tabs."""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop and return its result (its exception is re-raised here)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        deadline = time.monotonic() + timeout
        while not fut.done():
            if time.monotonic() > deadline:
                fut.cancel()
                raise TimeoutError(f"the agent's loop did not finish {coro!r} within {timeout} s")
            self.pump()
        return fut.result()

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Call ``fn`` on the loop thread (agent state is only ever touched there)."""

        async def wrapped() -> T:
            return fn()

        return self.run(wrapped(), timeout)

    def until(self, pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
        async def poll() -> None:
            deadline = time.monotonic() + timeout
            while not pred():
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                await asyncio.sleep(0.02)

        self.run(poll(), timeout + 10)

    def close(self) -> None:
        """Cancel what is left on the loop, stop it, join the thread and close the loop."""

        async def cancel_rest() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        self.pump = lambda: time.sleep(0.01)  # the tabs are gone by now
        with contextlib.suppress(Exception):
            self.run(cancel_rest(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        assert not self.thread.is_alive(), "the agent's event loop did not stop"
        self.loop.close()
