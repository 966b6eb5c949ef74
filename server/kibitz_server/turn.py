"""GET /api/turn: the ICE-server provider seam, and TURN REST credentials for coturn.

Until a TURN relay is configured the answer is the seeds' contract ``{"iceServers": null,
"configured": false}``. With a relay (``turn_urls`` plus a shared secret) every request gets
fresh, short-lived credentials in the TURN REST API form coturn's ``--use-auth-secret`` checks:
the username is ``"<unix expiry>:<opaque id>"`` and the password is the base64 HMAC-SHA1 of that
username under the shared secret. The secret itself never leaves the server, nothing about the
caller is in the username, and the relay refuses the credentials once the expiry has passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol


class TurnProvider(Protocol):
    """Returns the JSON body for /api/turn: ``headers`` are the request's (``Authorization``,
    ``X-Kibitz-Grant``), ``room`` the room the page says it is in (``?room=``, for grants)."""

    async def ice_servers(self, headers: Mapping[str, str], room: str | None = None) -> dict[str, Any]: ...


class NoTurn:
    """No relay configured: clients use STUN-free host/srflx candidates only."""

    async def ice_servers(self, headers: Mapping[str, str], room: str | None = None) -> dict[str, Any]:
        return {"iceServers": None, "configured": False}


def rest_credential(secret: bytes, username: str) -> str:
    """The password coturn expects for a TURN REST username: base64(HMAC-SHA1(secret, username))."""
    return base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest()).decode()


class TurnRestProvider:
    """Mints TURN REST credentials for the relay at ``urls`` (``turn:`` / ``turns:`` URLs).

    Each answer is new (``Cache-Control: no-store`` on the route) and valid for ``ttl`` seconds.
    coturn checks the expiry when an allocation is made, not while it lives, so a call outlasts
    its credentials; the page fetches new ones at 3/4 of ``ttl`` for the connections it makes later.
    The same relay takes every caller (tier ``open``); :class:`~.gate.LicenceGate` wraps it to
    hand relay credentials only to licences and room grants.
    """

    def __init__(
        self,
        urls: Sequence[str],
        secret: bytes,
        *,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not urls:
            raise ValueError("a TURN relay needs at least one turn: or turns: URL")
        bad = [u for u in urls if not u.startswith(("turn:", "turns:"))]
        if bad:
            raise ValueError(f"TURN URLs must start with turn: or turns:, got {bad}")
        if len(secret) < 16:
            raise ValueError("the TURN shared secret must be at least 16 bytes")
        if not 10 <= ttl <= 86_400:
            raise ValueError(f"TURN credential lifetime must be 10 s to 24 h, got {ttl} s")
        self.urls = list(urls)
        self.ttl = ttl
        self._secret = secret
        self._clock = clock

    def mint(self, tier: str = "open") -> dict[str, Any]:
        """A fresh answer with relay credentials, labelled ``tier``."""
        username = f"{int(self._clock() + self.ttl)}:kbz-{secrets.token_hex(8)}"
        credential = rest_credential(self._secret, username)
        server = {"urls": self.urls, "username": username, "credential": credential}
        return {"iceServers": [server], "configured": True, "tier": tier, "ttl": int(self.ttl)}

    async def ice_servers(self, headers: Mapping[str, str], room: str | None = None) -> dict[str, Any]:
        return self.mint("open")
