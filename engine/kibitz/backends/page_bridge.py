"""The engine's side of the page bridge: page objects driven by message from the engine's Worker.

The engine (Pyodide, the room, the mesh, signaling, timers) runs in a dedicated Worker; some objects
exist only on the page's thread: ``RTCPeerConnection`` and its transceivers, ``getUserMedia`` and
its tracks, ``MediaStream`` objects for ``<video>`` elements, the audio analysers. The page keeps
them in a table of *handles* and the engine holds a :class:`PageRef` per handle: calls, property
writes and event listeners travel as small JSON messages, results and events come back the same
way. The JS end (``widget/bridge.js``) is generic: it knows nothing of WebRTC beyond which
objects to describe when they cross.

Wire (JSON text both ways; ``h`` is a handle, ``id`` a request or listener number)::

    engine → page   {"t":"new","h":7,"ctor":"RTCPeerConnection","args":[...]}
                    {"t":"call","h":7,"m":"createOffer","args":[],"id":3}      (a reply follows)
                    {"t":"call","h":7,"m":"createDataChannel","args":[...],"ret":8}  (result → handle 8)
                    {"t":"call","h":7,"m":"close","args":[]}                     (nothing comes back)
                    {"t":"get","h":9,"p":"sender","ret":10}  {"t":"set","h":9,"p":"direction","v":"x"}
                    {"t":"on","h":7,"type":"track","pick":["track","transceiver"],"id":4}
                    {"t":"off","id":4}     {"t":"drop","h":7,"n":2}
    page → engine   {"t":"reply","id":3,"ok":true,"v":...,"d":{...}}
                    {"t":"reply","id":3,"ok":false,"e":[name, message]}
                    {"t":"event","id":4,"v":{...},"d":{...}}    {"t":"cb","id":5,"args":[...]}

Values: a page object that cannot be copied crosses as ``{"$ref": h, "$d": {...}}``, a handle plus
a description of what the engine may read synchronously (a transceiver's ``mid``, a track's
``kind``); ``d`` refreshes the description of the call's or event's target. A Python callable
passed as :class:`PageCallback` crosses as ``{"$cb": id}`` and the page calls back with ``cb``.
The page allocates negative handles, the engine positive ones (so neither waits for the other),
0 is the page's shim. A handle is dropped when its :class:`PageRef` is garbage collected; ``n``
counts the times the page sent it, so a drop that crosses a fresh reference in flight is ignored.

Transferred ``RTCDataChannel`` objects do not go through here (see :mod:`kibitz.backends.page_rtc`).
This module imports neither ``js`` nor ``pyodide``: tests drive it with a fake page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Post = Callable[[str], None]
"""Sends one JSON text message to the page."""


class PageError(Exception):
    """A call on the page threw (or rejected): ``name`` is the JS error's name (``NotAllowedError``…)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message


class PageCallback:
    """Wraps a Python callable passed to a page function (``levelMeter(cb)``); the page calls it
    back with JSON-able arguments. Lives until :meth:`release`."""

    __slots__ = ("_bridge", "fn", "id")

    def __init__(self, bridge: Bridge, fn: Callable[..., Any]) -> None:
        self._bridge = bridge
        self.fn = fn
        self.id = bridge._register_callback(self)

    def release(self) -> None:
        self._bridge._callbacks.pop(self.id, None)


class PageRef:
    """A page object, by handle. ``desc`` is what the page last said about it (see the module doc).

    Methods mirror what a JS caller does: :meth:`call` awaits a method's (possibly async) result,
    :meth:`fire` calls without waiting (errors are logged), :meth:`call_ref` / :meth:`get_ref`
    keep a synchronous result on the page as a new handle, :meth:`set` writes a property, and
    :meth:`on` forwards an event. Messages run on the page in the order they were sent.
    """

    __slots__ = ("__weakref__", "_bridge", "desc", "h")

    def __init__(self, bridge: Bridge, h: int, desc: dict[str, Any] | None = None) -> None:
        self._bridge = bridge
        self.h = h
        self.desc: dict[str, Any] = desc or {}

    def call(self, method: str, *args: Any,
             on_reply: Callable[[bool, Any], None] | None = None) -> asyncio.Future[Any]:
        """``method(*args)`` on the page object; the future settles with its result. ``on_reply(ok,
        value)``, if given, runs synchronously in the task that delivers the reply, before the
        future's callbacks (which asyncio runs a loop turn later): a transferred data channel must
        get its listeners in that very task, or an ``open``/``message`` event in between is lost."""
        return self._bridge._request({"t": "call", "h": self.h, "m": method, "args": list(args)}, self,
                                     on_reply)

    def fire(self, method: str, *args: Any) -> None:
        self._bridge._send({"t": "call", "h": self.h, "m": method, "args": list(args)})

    def call_ref(self, method: str, *args: Any, desc: dict[str, Any] | None = None,
                 cls: type[PageRef] | None = None) -> PageRef:
        ref = self._bridge._new_ref(desc, cls)
        self._bridge._send({"t": "call", "h": self.h, "m": method, "args": list(args), "ret": ref.h})
        return ref

    def get_ref(self, prop: str, desc: dict[str, Any] | None = None,
                cls: type[PageRef] | None = None) -> PageRef:
        ref = self._bridge._new_ref(desc, cls)
        self._bridge._send({"t": "get", "h": self.h, "p": prop, "ret": ref.h})
        return ref

    def set(self, prop: str, value: Any) -> None:
        self._bridge._send({"t": "set", "h": self.h, "p": prop, "v": value})

    def on(self, event: str, callback: Callable[[dict[str, Any]], None],
           pick: tuple[str, ...] = ()) -> Callable[[], None]:
        """Forward ``event`` (its ``pick`` fields, as values) to ``callback``; returns ``off()``."""
        return self._bridge._listen(self, event, callback, pick)

    def __repr__(self) -> str:
        return f"PageRef({self.h}, {self.desc!r})"

    def __del__(self) -> None:
        bridge = getattr(self, "_bridge", None)
        if bridge is not None and self.h != 0:
            bridge._dropped(self.h)


class PageTrack(PageRef):
    """A ``MediaStreamTrack`` on the page (:class:`~kibitz.backends.rtc_api.MediaTrack`): what the
    engine reads of it is its description; ``stop()`` and ``enabled`` go to the page."""

    __slots__ = ()

    @property
    def kind(self) -> str:
        return str(self.desc.get("kind", ""))

    @property
    def id(self) -> str:
        return str(self.desc.get("id", ""))

    @property
    def ready_state(self) -> str:
        return str(self.desc.get("readyState", "live"))

    @property
    def enabled(self) -> bool:
        return bool(self.desc.get("enabled", True))

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.desc["enabled"] = bool(value)
        self.set("enabled", bool(value))

    def stop(self) -> None:
        self.desc["readyState"] = "ended"
        self.fire("stop")


class Bridge:
    """The engine's end: sends through ``post`` and is fed the page's messages by :meth:`receive`."""

    def __init__(self, post: Post, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._post = post
        self._loop = loop
        self._next = 0
        self._refs: weakref.WeakValueDictionary[int, PageRef] = weakref.WeakValueDictionary()
        self._seen: dict[int, int] = {}
        """How often the page sent each handle (kept for the handle's life: a drop must say it)."""
        self._pending: dict[int, tuple[asyncio.Future[Any], PageRef | None]] = {}
        self._on_reply_now: dict[int, Callable[[bool, Any], None]] = {}
        self._listeners: dict[int, tuple[PageRef, Callable[[dict[str, Any]], None]]] = {}
        self._callbacks: dict[int, PageCallback] = {}
        self._extras: Any = None
        self.closed = False
        self.errors = 0
        self.root = PageRef(self, 0)
        """The page's shim object (media helpers, streams, the level meter)."""

    # ------------------------------------------------------------------------ engine → page

    def new(self, ctor: str, *args: Any, desc: dict[str, Any] | None = None,
            cls: type[PageRef] | None = None) -> PageRef:
        """``new ctor(...args)`` on the page (``RTCPeerConnection``, ``MediaStream``)."""
        ref = self._new_ref(desc, cls)
        self._send({"t": "new", "h": ref.h, "ctor": ctor, "args": list(args)})
        return ref

    def callback(self, fn: Callable[..., Any]) -> PageCallback:
        return PageCallback(self, fn)

    def ref(self, h: int, desc: dict[str, Any] | None = None, kind: str | None = None) -> PageRef:
        """The engine's reference for page handle ``h`` (one per handle while it is alive);
        ``kind`` is the page's word for what it is (``"track"`` → :class:`PageTrack`)."""
        ref = self._refs.get(h)
        if ref is None:
            ref = (PageTrack if kind == "track" else PageRef)(self, h, desc)
            self._refs[h] = ref
        elif desc is not None:
            ref.desc = desc
        return ref

    @property
    def live(self) -> int:
        """Handles the engine still holds (leak checks)."""
        return len(self._refs)

    def close(self) -> None:
        """The page is gone: fail every pending call, forget every listener."""
        self.closed = True
        pending, self._pending = self._pending, {}
        self._on_reply_now.clear()
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(PageError("InvalidStateError", "the page bridge closed"))
        self._listeners.clear()
        self._callbacks.clear()

    # ------------------------------------------------------------------------ page → engine

    def receive(self, text: str, extras: Any = None) -> None:
        """One message from the page (JSON text). ``extras`` holds what was transferred with it
        (data channels), which the text names as ``{"$dc": index}``. Never raises: a bad message
        is logged and counted."""
        try:
            msg = json.loads(text)
        except ValueError:
            self.errors += 1
            log.warning("page bridge message is not JSON: %.200s", text)
            return
        self.handle(msg, extras)

    def handle(self, msg: dict[str, Any], extras: Any = None) -> None:
        """:meth:`receive` for a message already parsed."""
        try:
            self._extras = extras
            kind = msg["t"]
            if kind == "reply":
                self._on_reply(msg)
            elif kind == "event":
                entry = self._listeners.get(int(msg["id"]))
                value, desc = self.decode(msg.get("v") or {}), self.decode(msg.get("d"))
                if entry is not None:  # (decoded even when unheard: the handles it names are counted)
                    target, callback = entry
                    if desc is not None:
                        target.desc = desc
                    callback(value)
            elif kind == "cb":
                cb = self._callbacks.get(int(msg["id"]))
                if cb is not None:
                    cb.fn(*self.decode(msg.get("args") or []))
            else:
                raise ValueError(f"unknown message type {kind!r}")
        except Exception:
            self.errors += 1
            log.exception("page bridge message failed: %.200r", msg)
        finally:
            self._extras = None

    def decode(self, value: Any) -> Any:
        """Wire → Python: ``{"$ref": h, "$d": {...}}`` becomes the handle's :class:`PageRef`."""
        if isinstance(value, dict):
            if "$dc" in value:
                extras = self._extras
                return None if extras is None else extras[int(value["$dc"])]
            if "$ref" in value:
                h = int(value["$ref"])
                ref = self.ref(h, kind=value.get("$t"))
                self._seen[h] = self._seen.get(h, 0) + 1
                if "$d" in value:
                    ref.desc = self.decode(value["$d"])
                return ref
            return {k: self.decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        return value

    # ------------------------------------------------------------------------ internals

    def _new_ref(self, desc: dict[str, Any] | None, cls: type[PageRef] | None = None) -> PageRef:
        self._next += 1
        ref = (cls or PageRef)(self, self._next, desc)
        self._refs[ref.h] = ref
        return ref

    def _register_callback(self, cb: PageCallback) -> int:
        self._next += 1
        self._callbacks[self._next] = cb
        return self._next

    def _send(self, msg: dict[str, Any]) -> None:
        if self.closed:
            return
        self._post(json.dumps(msg, separators=(",", ":"), default=encode_default))

    def _request(self, msg: dict[str, Any], target: PageRef | None,
                 on_reply: Callable[[bool, Any], None] | None = None) -> asyncio.Future[Any]:
        loop = self._loop or asyncio.get_event_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self.closed:
            fut.set_exception(PageError("InvalidStateError", "the page bridge closed"))
            return fut
        self._next += 1
        msg["id"] = self._next
        self._pending[self._next] = (fut, target)
        if on_reply is not None:
            self._on_reply_now[self._next] = on_reply
        self._send(msg)
        return fut

    def _on_reply(self, msg: dict[str, Any]) -> None:
        entry = self._pending.pop(int(msg["id"]), None)
        hook = self._on_reply_now.pop(int(msg["id"]), None)
        value, desc = self.decode(msg.get("v")), self.decode(msg.get("d"))
        if entry is None:
            return
        fut, target = entry
        if target is not None and desc is not None:
            target.desc = desc
        if hook is not None:
            try:
                hook(bool(msg.get("ok")), value)
            except Exception:
                log.exception("reply hook raised")
        if fut.done():
            return
        if msg.get("ok"):
            fut.set_result(value)
        else:
            err = msg.get("e") or ["Error", "unknown error"]
            name, message = (str(err[0]) if err else "Error"), (str(err[1]) if len(err) > 1 else "")
            fut.set_exception(PageError(str(name or "Error"), str(message)))

    def _listen(self, target: PageRef, event: str, callback: Callable[[dict[str, Any]], None],
                pick: tuple[str, ...]) -> Callable[[], None]:
        self._next += 1
        lid = self._next
        self._listeners[lid] = (target, callback)
        self._send({"t": "on", "h": target.h, "type": event, "pick": list(pick), "id": lid})
        done = False

        def off() -> None:
            nonlocal done
            if done:
                return
            done = True
            if self._listeners.pop(lid, None) is not None:
                self._send({"t": "off", "id": lid})

        return off

    def _dropped(self, h: int) -> None:
        """The last :class:`PageRef` for ``h`` is being collected. The page forgets the handle only
        if it has sent it ``n`` times: a reference still in flight keeps it (and its new
        :class:`PageRef` drops it again later, with the higher count)."""
        self._refs.pop(h, None)
        with contextlib.suppress(Exception):  # the interpreter may be shutting down
            self._send({"t": "drop", "h": h, "n": self._seen.get(h, 0)})


def encode_default(value: Any) -> Any:
    """JSON for what ``json`` cannot encode itself: references and callbacks."""
    if isinstance(value, PageRef):
        return {"$ref": value.h}
    if isinstance(value, PageCallback):
        return {"$cb": value.id}
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("bytes cannot cross the page bridge as JSON")
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot cross the page bridge")


__all__ = ["Bridge", "PageCallback", "PageError", "PageRef", "PageTrack", "Post", "encode_default"]
