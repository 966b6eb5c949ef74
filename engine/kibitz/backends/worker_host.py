"""The Python half of the engine host: what the engine's Worker does for the page that started it.

``widget/engine-host.js`` boots Pyodide in the Worker, then hands every message from the page to
:meth:`Host.receive` (JSON text) except the hot ones, which it calls directly:
:meth:`Host.broadcast` / :meth:`Host.send_to` (app data from the controller) and
:meth:`Host.relay_data` (a relayed data channel's message). Everything the engine says goes back as
JSON text through ``post``, except app messages, which take ``post_message(mount, text, sender)``:
one structured-clone array, so the page's thread only parses the app's own JSON.

Page → engine (JSON)::

    {"t":"ctl","mount":1,"id":9,"m":"join","args":[{"mic":false}]}   a controller call
    {"t":"close","mount":1}      {"t":"ice","mount":1,"servers":[...]}      {"t":"hide"}
    {"t":"fn","id":3,"name":"create_room_json","args":[...]}          a function needing no mount
    {"t":"dc","h":-4,"type":"open","d":{...}}                           a relayed channel's event
    {"t":"reply"|"event"|"cb", ...}                                      the page bridge's answers

Engine → page (JSON)::

    {"t":"done","id":9,"ok":true,"v":...}   {"t":"done","id":9,"ok":false,"e":["NotAllowedError","..."]}
    {"t":"emit","mount":1,"event":"participants","args":[...]}
    {"t":"refused","mount":1,"peer":"kbz-m-…","reason":"..."}          a send the page let through

Controller calls are dispatched by name (:data:`kibitz.controller.ENGINE_MEMBERS`); nothing here
knows the methods.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from kibitz.backends.page_bridge import Bridge, PageError, encode_default
from kibitz.backends.page_rtc import ChannelRelay
from kibitz.backends.page_session import PageSession, text_from_page

log = logging.getLogger(__name__)

Post = Callable[[str], None]
PostMessage = Callable[[int, str, str], None]
OpenSession = Callable[[str, Callable[..., Any]], PageSession]


def _dumps(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"), default=encode_default)


class Host:
    """Mounts by id, the controller RPC, and the routing of the page's messages."""

    def __init__(self, post: Post, post_message: PostMessage, bridge: Bridge, relay: ChannelRelay,
                 open_session: OpenSession, page_hidden: Callable[[], None]) -> None:
        self._post = post
        self._post_message = post_message
        self.bridge = bridge
        self.relay = relay
        self._open_session = open_session
        self._page_hidden = page_hidden
        self.mounts: dict[int, PageSession] = {}
        self.errors = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------ mounts

    def open(self, mount: int, config_json: str) -> None:
        """Open mount ``mount``'s session (raises with a clear message if the config is bad)."""
        self.close(mount)
        self.mounts[mount] = self._open_session(config_json, self._emitter(mount))

    def close(self, mount: int) -> None:
        page = self.mounts.pop(mount, None)
        if page is not None:
            try:
                page.close()
            except Exception:
                log.exception("closing mount %s failed", mount)

    def _emitter(self, mount: int) -> Callable[..., None]:
        def emit(event: str, *args: Any) -> None:
            if event == "message":  # the hot path: JSON text and the sender, as they are
                self._post_message(mount, args[0], args[1])
            else:
                self._post(_dumps({"t": "emit", "mount": mount, "event": event, "args": list(args)}))

        return emit

    # ------------------------------------------------------------------------ the page's messages

    def receive(self, text: str, extras: Any = None) -> None:
        """One JSON message from the page; never raises (a bad one is logged and counted)."""
        try:
            msg = json.loads(text)
            kind = msg.get("t")
            if kind in ("reply", "event", "cb"):
                self.bridge.handle(msg, extras)
            elif kind == "dc":
                self.relay.event(int(msg["h"]), str(msg["type"]), dict(msg.get("d") or {}), msg.get("v"))
            elif kind == "ctl":
                self._spawn(self._call(int(msg["mount"]), int(msg["id"]), str(msg["m"]), msg.get("args")))
            elif kind == "close":
                self.close(int(msg["mount"]))
            elif kind == "ice":
                page = self.mounts.get(int(msg["mount"]))
                if page is not None:
                    page.set_ice_servers(json.dumps(msg.get("servers") or []))
            elif kind == "hide":
                self._page_hidden()
                self.mounts.clear()
            elif kind == "fn":
                self._spawn(self._function(int(msg["id"]), str(msg["name"]), msg.get("args")))
            else:
                raise ValueError(f"unknown message type {kind!r}")
        except Exception:
            self.errors += 1
            log.exception("engine host message failed: %.200s", text)

    async def _call(self, mount: int, call_id: int, method: str, args: Any) -> None:
        page = self.mounts.get(mount)
        try:
            if page is None:
                raise RuntimeError(f"{method}() after unmount")
            value = await page.call(method, args)
            reply = {"t": "done", "id": call_id, "ok": True, "v": value}
        except PageError as exc:
            reply = {"t": "done", "id": call_id, "ok": False, "e": [exc.name, exc.message]}
        except Exception as exc:
            reply = {"t": "done", "id": call_id, "ok": False, "e": [type(exc).__name__, _reason(exc)]}
        try:
            text = _dumps(reply)
        except (TypeError, ValueError) as exc:
            text = _dumps({"t": "done", "id": call_id, "ok": False,
                           "e": ["TypeError", f"{method}() returned something the page cannot take: {exc}"]})
        self._post(text)

    async def _function(self, call_id: int, name: str, args: Any) -> None:
        """One of :data:`FUNCTIONS` (no mount needed: ``Kibitz.createRoom`` and the like)."""
        try:
            fn = FUNCTIONS.get(name)
            if fn is None:
                raise NotImplementedError(f"Kibitz: {name} is not available in this build")
            if not isinstance(args, list):
                raise TypeError(f"{name}: arguments must be a list")
            value = fn()(*args)
            if asyncio.iscoroutine(value):
                value = await value
            reply = {"t": "done", "id": call_id, "ok": True, "v": value}
        except Exception as exc:
            reply = {"t": "done", "id": call_id, "ok": False, "e": [type(exc).__name__, _reason(exc)]}
        self._post(_dumps(reply))

    # ------------------------------------------------------------------------ hot paths

    def broadcast(self, mount: int, text: Any) -> None:
        """``broadcast(data)`` from the page: the JSON text (long text as UTF-8 bytes)."""
        page = self.mounts.get(mount)
        if page is None:
            return
        try:
            page.broadcast_json(text)
        except Exception as exc:  # the page checked what it could: report, never raise into JS
            self._refused(mount, "*", exc)

    def send_to(self, mount: int, peer: str, text: Any) -> None:
        page = self.mounts.get(mount)
        if page is None:
            return
        reason = page.send_json(peer, text)
        if reason is not None:
            self._post(_dumps({"t": "refused", "mount": mount, "peer": peer, "reason": reason}))

    def relay_data(self, h: int, data: Any, utf8: bool = False) -> None:
        """A relayed data channel's message (text, long text as UTF-8 bytes, or binary)."""
        if type(data) is not str:
            if utf8:
                data = text_from_page(data)
            elif hasattr(data, "to_bytes"):
                data = bytes(data.to_bytes())
            else:
                data = bytes(data)
        self.relay.message(h, data)

    # ------------------------------------------------------------------------ internals

    def _refused(self, mount: int, peer: str, exc: Exception) -> None:
        self._post(_dumps({"t": "refused", "mount": mount, "peer": peer, "reason": _reason(exc)}))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _rooms(name: str) -> Callable[[], Callable[..., Any]]:
    def get() -> Callable[..., Any]:
        from kibitz.backends import page_rooms

        fn: Callable[..., Any] = getattr(page_rooms, name)
        return fn

    return get


FUNCTIONS: dict[str, Callable[[], Callable[..., Any]]] = {
    "create_room_json": _rooms("create_room_json"),
    "mint_invite_json": _rooms("mint_invite_json"),
}
"""What the page may call without a mount (``Kibitz.createRoom``, ``Kibitz.mintInvite``), by name."""


def _reason(exc: BaseException) -> str:
    """An exception's own words (a ``KeyError``'s argument, not its repr)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def make_host(post: Post, post_message: PostMessage) -> Host:
    """The host for this Worker's page, over the browser backend's bridge (widget/engine-host.js)."""
    from kibitz.backends import browser

    return Host(post, post_message, browser.page_bridge(), browser.channel_relay(), browser.open_session,
                browser.page_hidden)


__all__ = ["Host", "make_host"]
