"""GET /api/turn: the ICE-server provider seam.

Until a TURN relay is configured the answer is the seeds' contract ``{"iceServers": null,
"configured": false}``. A provider that mints TURN REST credentials (HMAC-SHA1 over
``"<expiry>:<id>"``, as coturn's ``--use-auth-secret`` expects) implements :class:`TurnProvider`
and is passed to :func:`kibitz.server.web.make_app`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class TurnProvider(Protocol):
    """Returns the JSON body for /api/turn; ``headers`` are the request's (Authorization, grant)."""

    async def ice_servers(self, headers: Mapping[str, str]) -> dict[str, Any]: ...


class NoTurn:
    """No relay configured: clients use STUN-free host/srflx candidates only."""

    async def ice_servers(self, headers: Mapping[str, str]) -> dict[str, Any]:
        return {"iceServers": None, "configured": False}
