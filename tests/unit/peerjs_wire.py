"""A raw PeerJS-wire client's three moves over a real WebSocket, shared by the broker tests
(one broker, a cluster in this process, ``kibitz serve`` processes)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame: a text frame holding a JSON object."""
    data = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(data, str)
    msg = json.loads(data)
    assert isinstance(msg, dict)
    return msg


async def send(ws: ClientConnection, msg: object) -> None:
    await ws.send(json.dumps(msg))


async def silent(ws: ClientConnection, timeout: float = 0.3) -> bool:
    """True if nothing arrives within ``timeout`` (used sparingly, for 'must not receive')."""
    try:
        await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        return True
    return False
