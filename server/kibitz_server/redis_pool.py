"""The one way the server's Redis stores connect: a bounded pool (a burst waits for a connection
rather than failing), every command with a timeout (a hung Redis looks like a dead one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def bounded_redis(url: str, max_connections: int, *, socket_timeout: float = 5.0,
                  **kw: Any) -> aioredis.Redis:
    """A client for ``redis://HOST:PORT/DB`` on a pool of at most ``max_connections``."""
    import redis.asyncio as aioredis

    kw.setdefault("socket_connect_timeout", 2.0)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=5.0, socket_timeout=socket_timeout, **kw
    )
    return aioredis.Redis(connection_pool=pool)


def text(v: bytes | str) -> str:
    """A Redis reply as text."""
    return v.decode() if isinstance(v, bytes) else v


__all__ = ["bounded_redis", "text"]
