"""The relay for one page mount: :mod:`kibitz.relay` over the browser's ``fetch``.

A page session does not start (no presence, no peer connection) until ``/api/turn`` has
answered, so its first connections already carry the relay's credentials. With ``relayOnly`` (the
mount option, or the widget's "Hide my IP") every connection is ``iceTransportPolicy: "relay"``
and a page without relay credentials stays out of the call and says why, instead of connecting
directly. ``js`` is imported lazily, so CPython can import this module for its tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kibitz.backends.rtc import RtcTransport
from kibitz.relay import (
    Fetch,
    IceAnswer,
    RelayKeeper,
    RelaySettings,
    invite_link,
    mint_room_grant,
    relay_refusal,
)

log = logging.getLogger(__name__)


async def page_fetch(method: str, url: str, headers: Mapping[str, str], body: str | None) -> tuple[int, str]:
    """:data:`kibitz.relay.Fetch` with the page's (or worker's) ``fetch``: no cookies, no cache."""
    import js
    from pyodide.ffi import to_js

    init: dict[str, Any] = {"method": method, "headers": dict(headers), "cache": "no-store",
                            "credentials": "omit"}
    if body is not None:
        init["body"] = body
    response = await js.fetch(url, to_js(init, dict_converter=js.Object.fromEntries))
    return int(response.status), str(await response.text())


def relay_settings(config: Mapping[str, Any]) -> RelaySettings:
    """The relay side of a mount's config (what widget.js passes to ``open_session``)."""
    base = config.get("turnBase") or config.get("server") or "/"
    licence, grant = config.get("licenseKey"), config.get("grant")
    return RelaySettings(
        str(base), str(config.get("room") or ""),
        str(licence) if isinstance(licence, str) and licence else None,
        str(grant) if isinstance(grant, str) and grant else None,
        bool(config.get("relayOnly")),
    )


class PageRelay:
    """Asks for the relay before the page's session starts, keeps the credentials fresh, and mints
    invite grants for a licensed opener."""

    def __init__(self, settings: RelaySettings, transport: RtcTransport | None, fetch: Fetch = page_fetch,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self._transport = transport
        self._fetch = fetch
        self._on_change = on_change
        self.keeper = RelayKeeper(settings, fetch, self._apply)
        self.error: str | None = None
        """Why this relay-only page cannot connect (shown by the widget), else None."""
        self.settled = asyncio.Event()
        """Set once the first answer decided whether the session starts (or on close)."""

    @property
    def settings(self) -> RelaySettings:
        return self.keeper.settings

    @property
    def tier(self) -> str | None:
        answer = self.keeper.answer
        return answer.tier if answer is not None else None

    def state(self) -> dict[str, Any]:
        return {"relayOnly": self.settings.relay_only, "relayTier": self.tier, "relayError": self.error}

    def _apply(self, answer: IceAnswer) -> None:
        refused = relay_refusal(self.settings, answer)
        changed = refused != self.error
        self.error = refused
        transport = self._transport
        if refused is None and transport is not None:
            transport.set_rtc_config(dataclasses.replace(transport.rtc_config, ice_servers=answer.servers))
        if changed:
            self._on_change()

    async def start(self, start_session: Callable[[], None]) -> None:
        """Ask ``/api/turn``, then start the session unless this page must stay out; then keep
        the credentials fresh until :meth:`close`."""
        try:
            first = await self.keeper.ask()
            if self.keeper.closed:
                return
            if first.error is not None:
                self._apply(first)  # relay only: refuse (it could not be asked); else no servers
            if self.error is not None:
                log.warning("%s", self.error)
                return
            start_session()
        finally:
            self.settled.set()
        await self.keeper.run(first)

    async def invite_link(self, page_url: str) -> str:
        """``page_url`` as an invite: with a fresh ``?grant=`` when this member has a licence."""
        if not self.settings.licence:
            return invite_link(page_url, None)
        grant, _exp = await mint_room_grant(self.settings, self._fetch)
        return invite_link(page_url, grant)

    def close(self) -> None:
        self.keeper.close()
        self.settled.set()
