"""GET /api/signal: which broker a peer should use.

With several brokers, two peers of the same room must land on the same one, or they never meet.
We use rendezvous (highest-random-weight) hashing of (room, broker URL) over the brokers that
passed their last health check: every server instance with the same health view gives the same
answer, and losing one broker only moves the rooms that were on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from kibitz.ids import normalize_room


@dataclass(frozen=True)
class BrokerInfo:
    """A broker as PeerJS clients need it: host/port/path/secure, plus the ws URL."""

    url: str
    key: str

    def describe(self) -> dict[str, Any]:
        parts = urlsplit(self.url)
        secure = parts.scheme in ("wss", "https")
        return {
            "host": parts.hostname,
            "port": parts.port or (443 if secure else 80),
            "path": parts.path or "/",
            "secure": secure,
            "key": self.key,
            "url": self.url,
        }

    def health_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "https" if parts.scheme in ("wss", "https") else "http"
        return f"{scheme}://{parts.netloc}{parts.path or '/'}"


def rendezvous(room: str, candidates: list[str]) -> str | None:
    """The candidate with the highest hash of (room, candidate); stable across processes."""
    best: tuple[bytes, str] | None = None
    for c in candidates:
        score = hashlib.blake2b(f"{room}\x00{c}".encode(), digest_size=8).digest()
        if best is None or score > best[0]:
            best = (score, c)
    return best[1] if best else None


class BrokerDirectory:
    """The local broker (always healthy while we run) plus remote ones checked periodically."""

    def __init__(self, key: str, remote: tuple[str, ...], interval: float, timeout: float) -> None:
        self.key = key
        self.local: str | None = None
        self.remote = list(remote)
        self.healthy: set[str] = set()
        self.interval = interval
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None

    def choose(self, room: str, local_url: str | None) -> dict[str, Any]:
        """Pick for ``room``; ``local_url`` is how this request's client reaches our own broker.

        The local broker is hashed under a fixed name, so clients that reach it through different
        host names (localhost vs 127.0.0.1) still agree on the choice.
        """
        # Hash the room as the engine names it, so "My Room" and "my-room" meet on one broker.
        room = normalize_room(room) or room
        pool = {u: u for u in self.remote if u in self.healthy}
        if local_url:
            pool[self.local or "local"] = local_url
        pick = rendezvous(room, sorted(pool))
        if pick is None:
            return {"host": None}
        return BrokerInfo(pool[pick], self.key).describe()

    async def check_once(self, session: aiohttp.ClientSession) -> None:
        async def probe(url: str) -> tuple[str, bool]:
            try:
                async with session.get(
                    BrokerInfo(url, self.key).health_url(),
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as r:
                    return url, r.status == 200
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                return url, False

        results = await asyncio.gather(*(probe(u) for u in self.remote))
        self.healthy = {u for u, ok in results if ok}

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                await self.check_once(session)
                await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self.remote and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
