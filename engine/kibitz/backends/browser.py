"""The page backend: :mod:`kibitz.backends.rtc_api` adapters over the browser's WebRTC and WebSocket.

Runs only under Pyodide, inside the page that loaded widget.js. ``js`` and ``pyodide`` are
imported lazily, inside functions, so CPython can import this module (for types and tests) without
them. Callback lifetime is the JS shim's job (``kibitz_shim.listen`` copies the borrowed proxy and
frees it on ``off()``): a bare Python callable handed to ``addEventListener`` would be destroyed
right after the call and the event would raise instead of reaching us.

Conversions at this boundary: dicts go to JS as plain objects (``dict_converter=Object.fromEntries``;
a ``Map`` would be ignored by WebIDL dictionaries), binary frames come back as ``bytes``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from kibitz.backends.rtc_api import (
    EventCallback,
    IceCandidateInit,
    OnSignalingClose,
    OnSignalingMessage,
    RtcConfig,
    SessionDescription,
)
from kibitz.ids import room_peer_id

log = logging.getLogger(__name__)

_WS_OPEN = 1


def _js() -> Any:
    import js

    return js


def _nullish(value: Any) -> bool:
    """JS ``null`` arrives as ``pyodide.ffi.jsnull`` (not ``None``); ``undefined`` as ``None``."""
    if value is None:
        return True
    from pyodide.ffi import jsnull

    return value is jsnull


def _opt_str(value: Any) -> str | None:
    return None if _nullish(value) else str(value)


def _shim() -> Any:
    try:
        import kibitz_shim  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - only outside the widget
        raise RuntimeError("kibitz_shim is not registered: load the engine through widget.js") from exc
    return kibitz_shim


def to_js_object(value: Any) -> Any:
    """A Python dict/list (nested) as plain JS objects/arrays."""
    from pyodide.ffi import to_js

    return to_js(value, dict_converter=_js().Object.fromEntries)


def _bytes_of(value: Any) -> bytes:
    """An ArrayBuffer / typed array (JsProxy) or Python bytes-like as ``bytes``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if hasattr(value, "to_bytes"):
        return bytes(value.to_bytes())
    return bytes(value.to_py())


class _Events:
    """Several callbacks per event name, run in registration order; one failing never stops the rest."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[EventCallback]] = {}

    def add(self, name: str, callback: EventCallback) -> None:
        self._callbacks.setdefault(name, []).append(callback)

    def fire(self, name: str, *args: Any) -> None:
        for callback in list(self._callbacks.get(name, ())):
            try:
                callback(*args)
            except Exception:
                log.exception("%s listener raised", name)


class _Listeners:
    """JS listeners registered through the shim; ``close()`` removes them and frees the proxies."""

    def __init__(self) -> None:
        self._offs: list[Any] = []

    def listen(self, target: Any, event: str, fn: Callable[[Any], None]) -> None:
        self._offs.append(_shim().listen(target, event, fn))

    def close(self) -> None:
        offs, self._offs = self._offs, []
        for off in offs:
            off()

    def close_soon(self) -> None:
        """Close after the current JS event handler returns (never free a proxy mid-call)."""
        try:
            asyncio.get_event_loop().call_soon(self.close)
        except RuntimeError:  # pragma: no cover - no loop: nothing is running either
            self.close()

    def __len__(self) -> int:
        return len(self._offs)


# ---------------------------------------------------------------------------------- data channel


class BrowserDataChannel:
    """:class:`~kibitz.backends.rtc_api.DataChannel` over an ``RTCDataChannel``."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        raw.binaryType = "arraybuffer"
        self._events = _Events()
        self._listeners = _Listeners()
        self._listeners.listen(raw, "open", lambda _ev: self._events.fire("open"))
        self._listeners.listen(raw, "message", self._on_message)
        self._listeners.listen(raw, "close", self._on_close)
        self._listeners.listen(raw, "error", self._on_error)
        self._listeners.listen(raw, "bufferedamountlow", lambda _ev: self._events.fire("bufferedamountlow"))

    @property
    def raw(self) -> Any:
        """The underlying JS ``RTCDataChannel`` (tests and diagnostics)."""
        return self._raw

    @property
    def label(self) -> str:
        return str(self._raw.label)

    @property
    def ready_state(self) -> str:
        return str(self._raw.readyState)

    @property
    def buffered_amount(self) -> int:
        return int(self._raw.bufferedAmount)

    @property
    def buffered_amount_low_threshold(self) -> int:
        return int(self._raw.bufferedAmountLowThreshold)

    @buffered_amount_low_threshold.setter
    def buffered_amount_low_threshold(self, value: int) -> None:
        self._raw.bufferedAmountLowThreshold = int(value)

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self._raw.send(data)
        else:
            from pyodide.ffi import to_js

            self._raw.send(to_js(bytes(data)))  # a Uint8Array copy, never a view into wasm memory

    def close(self) -> None:
        self._raw.close()

    def on(self, name: str, callback: EventCallback) -> None:
        self._events.add(name, callback)

    def release(self) -> None:
        """Drop every JS listener now (the owning peer connection is gone)."""
        self._listeners.close()

    def _on_message(self, ev: Any) -> None:
        data = ev.data
        self._events.fire("message", data if isinstance(data, str) else _bytes_of(data))

    def _on_close(self, _ev: Any) -> None:
        self._events.fire("close")
        self._listeners.close_soon()

    def _on_error(self, ev: Any) -> None:
        err = getattr(ev, "error", None)
        message = None if _nullish(err) else _opt_str(getattr(err, "message", None))
        self._events.fire("error", str(message or "data channel error"))


# ------------------------------------------------------------------------------- peer connection


class BrowserPeerConnection:
    """:class:`~kibitz.backends.rtc_api.PeerConnection` over an ``RTCPeerConnection``."""

    def __init__(self, config: RtcConfig) -> None:
        js = _js()
        conf = {
            "iceServers": [dict(server) for server in config.ice_servers],
            "iceTransportPolicy": config.ice_transport_policy,
        }
        self._raw = js.RTCPeerConnection.new(to_js_object(conf))
        self._events = _Events()
        self._listeners = _Listeners()
        self._channels: list[BrowserDataChannel] = []
        self._closed = False
        self._listeners.listen(self._raw, "icecandidate", self._on_candidate)
        self._listeners.listen(self._raw, "datachannel", self._on_datachannel)
        self._listeners.listen(
            self._raw,
            "connectionstatechange",
            lambda _ev: self._events.fire("connectionstatechange", self.connection_state),
        )
        self._listeners.listen(
            self._raw,
            "iceconnectionstatechange",
            lambda _ev: self._events.fire("iceconnectionstatechange", self.ice_connection_state),
        )
        self._listeners.listen(self._raw, "track", lambda ev: self._events.fire("track", ev))

    @property
    def raw(self) -> Any:
        """The underlying JS ``RTCPeerConnection`` (media steps and tests use it)."""
        return self._raw

    @property
    def connection_state(self) -> str:
        return str(self._raw.connectionState)

    @property
    def ice_connection_state(self) -> str:
        return str(self._raw.iceConnectionState)

    async def create_offer(self) -> SessionDescription:
        desc = await self._raw.createOffer()
        return SessionDescription(str(desc.type), str(desc.sdp))

    async def create_answer(self) -> SessionDescription:
        desc = await self._raw.createAnswer()
        return SessionDescription(str(desc.type), str(desc.sdp))

    async def set_local_description(self, desc: SessionDescription) -> None:
        await self._raw.setLocalDescription(to_js_object(desc.to_json()))

    async def set_remote_description(self, desc: SessionDescription) -> None:
        await self._raw.setRemoteDescription(to_js_object(desc.to_json()))

    async def add_ice_candidate(self, candidate: IceCandidateInit | None) -> None:
        if candidate is None or not candidate.get("candidate"):
            await self._raw.addIceCandidate()  # end of candidates
            return
        init = {k: v for k, v in candidate.items() if v is not None}
        await self._raw.addIceCandidate(to_js_object(init))

    def create_data_channel(self, label: str, *, ordered: bool = True) -> BrowserDataChannel:
        channel = BrowserDataChannel(self._raw.createDataChannel(label, to_js_object({"ordered": ordered})))
        self._channels.append(channel)
        return channel

    def restart_ice(self) -> None:
        self._raw.restartIce()

    def on(self, name: str, callback: EventCallback) -> None:
        self._events.add(name, callback)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._raw.close()
        self._listeners.close_soon()
        for channel in self._channels:
            channel._listeners.close_soon()
        self._channels.clear()

    def _on_candidate(self, ev: Any) -> None:
        cand = ev.candidate
        if _nullish(cand) or not cand.candidate:
            self._events.fire("icecandidate", None)
            return
        init: IceCandidateInit = {
            "candidate": str(cand.candidate),
            "sdpMid": _opt_str(cand.sdpMid),
            "sdpMLineIndex": None if _nullish(cand.sdpMLineIndex) else int(cand.sdpMLineIndex),
            "usernameFragment": _opt_str(cand.usernameFragment),
        }
        self._events.fire("icecandidate", init)

    def _on_datachannel(self, ev: Any) -> None:
        channel = BrowserDataChannel(ev.channel)
        self._channels.append(channel)
        self._events.fire("datachannel", channel)


class BrowserPeerConnectionFactory:
    """:class:`~kibitz.backends.rtc_api.PeerConnectionFactory` for the page."""

    def create(self, config: RtcConfig) -> BrowserPeerConnection:
        return BrowserPeerConnection(config)


# ------------------------------------------------------------------------------ signaling socket


class BrowserSignalingSocket:
    """:class:`~kibitz.backends.rtc_api.SignalingSocket` over the browser's ``WebSocket``.

    The broker speaks first (OPEN right after the handshake), often before the coroutine that
    awaited the connection has resumed: frames and a close that arrive before :meth:`attach`
    are kept and delivered, in order, right after it.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._listeners = _Listeners()
        self._on_message: OnSignalingMessage | None = None
        self._on_close: OnSignalingClose | None = None
        self._backlog: list[str] | None = []
        self._pending_close: str | None = None
        self._closed_by_us = False
        self._close_reported = False
        self.opened: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self._listeners.listen(raw, "open", self._handle_open)
        self._listeners.listen(raw, "message", self._handle_message)
        self._listeners.listen(raw, "close", self._handle_close)
        self._listeners.listen(raw, "error", self._handle_error)

    def attach(self, on_message: OnSignalingMessage, on_close: OnSignalingClose) -> None:
        self._on_message = on_message
        self._on_close = on_close
        asyncio.get_event_loop().call_soon(self._drain)

    def send(self, text: str) -> None:
        if self._raw.readyState == _WS_OPEN:
            self._raw.send(text)

    def close(self) -> None:
        if not self._closed_by_us:
            self._closed_by_us = True
            self._raw.close(1000, "bye")

    def _drain(self) -> None:
        backlog, self._backlog = self._backlog or [], None
        for text in backlog:
            self._deliver(text)
        if self._pending_close is not None:
            self._report_close(self._pending_close)

    def _deliver(self, text: str) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(text)
        except Exception:
            log.exception("broker frame handler raised")

    def _handle_open(self, _ev: Any) -> None:
        if not self.opened.done():
            self.opened.set_result(None)

    def _handle_message(self, ev: Any) -> None:
        data = ev.data
        if not isinstance(data, str):
            return  # binary frames are not part of the broker protocol
        if self._backlog is not None:
            self._backlog.append(data)
        else:
            self._deliver(data)

    def _handle_error(self, _ev: Any) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("WebSocket to the broker failed"))

    def _handle_close(self, ev: Any) -> None:
        self._listeners.close_soon()
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"WebSocket to the broker closed (code {ev.code})"))
            return
        if self._closed_by_us:
            reason = "closed"
        else:
            detail = f" {ev.reason}" if _opt_str(ev.reason) else ""
            reason = f"closed by broker (code {ev.code}{detail})"
        if self._backlog is not None:
            self._pending_close = reason
        else:
            self._report_close(reason)

    def _report_close(self, reason: str) -> None:
        if self._close_reported or self._on_close is None:
            return
        self._close_reported = True
        try:
            self._on_close(reason)
        except Exception:
            log.exception("broker close handler raised")


async def connect_signaling(
    url: str, on_message: OnSignalingMessage, on_close: OnSignalingClose
) -> BrowserSignalingSocket:
    """Open a broker WebSocket (raises ``ConnectionError``); see ``rtc_api.ConnectSignaling``."""
    sock = BrowserSignalingSocket(_js().WebSocket.new(url))
    try:
        await asyncio.wait_for(sock.opened, timeout=10.0)
    except BaseException:
        sock.close()
        raise
    sock.attach(on_message, on_close)
    return sock


def make_browser_transport(broker_url: str, **options: Any) -> Any:
    """An :class:`~kibitz.backends.rtc.RtcTransport` on the page's WebLoop with browser adapters.

    ``broker_url`` is the ws(s):// base (``ws_base_of(server)`` turns the widget's server URL into
    one); ``options`` go to ``RtcTransport`` (``key``, ``rtc_config``, ``heartbeat_s``...).
    """
    from kibitz.backends.rtc import RtcTransport
    from kibitz.clock import AsyncioScheduler

    options.setdefault("rtc_config", RtcConfig())
    return RtcTransport(
        BrowserPeerConnectionFactory(),
        connect_signaling,
        broker_url=broker_url,
        scheduler=AsyncioScheduler(asyncio.get_event_loop()),
        **options,
    )


def ws_base_of(http_base: str) -> str:
    """``http://host:port/path/`` → ``ws://host:port/path/`` (``https`` → ``wss``)."""
    if http_base.startswith("https://"):
        return "wss://" + http_base[len("https://") :]
    if http_base.startswith("http://"):
        return "ws://" + http_base[len("http://") :]
    if http_base.startswith(("ws://", "wss://")):
        return http_base
    raise ValueError(f"not an http(s) or ws(s) URL: {http_base!r}")


# --------------------------------------------------------------------------------------- media


async def get_user_media(*, audio: bool | dict[str, Any] = True, video: bool | dict[str, Any] = True) -> Any:
    """A JS ``MediaStream`` from the user's devices; raises ``JsException`` named like the DOM error."""
    return await _shim().getUserMedia(to_js_object({"audio": audio, "video": video}))


async def get_display_media(*, audio: bool = False) -> Any:
    return await _shim().getDisplayMedia(to_js_object({"video": True, "audio": audio}))


def black_video_track(fps: int = 5) -> Any:
    """A flowing 2×2 black ``MediaStreamTrack`` (sent while the camera is off)."""
    return _shim().blackVideoTrack(fps)


def silent_audio_track() -> Any:
    return _shim().silentAudioTrack()


def on_pagehide(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` when the page goes away; returns a function that removes the hook."""
    off = _shim().onPageHide(lambda _ev: callback())
    return lambda: off()


# ---------------------------------------------------------------------------------- page session


STATE_DEFAULTS: dict[str, Any] = {
    "inCall": False, "micOn": False, "camOn": False, "sharing": False, "self": None,
    "isHost": False, "lobbyOn": False, "locked": False, "lobbyStatus": "none",
}


_NO_OP_UNTIL_LINKED = frozenset({"broadcast", "sendTo"})


class PageSession:
    """One ``Kibitz.mount()`` as Python sees it: the options, and the way back to the page.

    widget.js calls :meth:`call` for every engine method of the controller (join, toggleMic...)
    and :meth:`close` on unmount; Python reports through :meth:`emit` (``state``,
    ``participants``, ``message``...), which widget.js turns into controller events. Methods
    are looked up in :attr:`handlers`, which the room wiring fills; an unknown or not yet
    wired method rejects the caller's promise with a clear message.
    """

    def __init__(self, config: dict[str, Any], emit: Callable[..., Any]) -> None:
        self.config = config
        self.room_id = room_peer_id(str(config.get("room", "")))
        self._emit = emit
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.state: dict[str, Any] = dict(STATE_DEFAULTS)
        self.closed = False
        self.dropped = 0
        self._close_hooks: list[Callable[[], None]] = []

    def emit(self, event: str, *args: Any) -> None:
        """Send an event to the page; dicts and lists arrive as plain JS values."""
        if self.closed:
            return
        converted = [to_js_object(a) if isinstance(a, dict | list | tuple) else a for a in args]
        self._emit(event, *converted)

    def set_state(self, **changes: Any) -> None:
        self.state.update(changes)
        self.emit("state", changes)

    def on_close(self, hook: Callable[[], None]) -> None:
        self._close_hooks.append(hook)

    async def call(self, method: str, args: Any) -> Any:
        if self.closed:
            raise RuntimeError(f"{method}() after unmount")
        handler = self.handlers.get(str(method))
        if handler is None and method in _NO_OP_UNTIL_LINKED:
            self.dropped += 1  # the contract: a no-op until the call's data link is up
            return None
        if handler is None:
            raise NotImplementedError(f"Kibitz: {method}() is not available in this build yet")
        py_args = args.to_py() if hasattr(args, "to_py") else list(args)
        result = handler(*py_args)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        return result

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        hooks, self._close_hooks = self._close_hooks, []
        for hook in reversed(hooks):
            try:
                hook()
            except Exception:
                log.exception("close hook raised")


def open_session(config_json: str, emit: Callable[..., Any]) -> PageSession:
    """Called by widget.js for each mount, once the engine has booted."""
    config = json.loads(config_json)
    if not isinstance(config, dict):
        raise TypeError("mount config must be a JSON object")
    return PageSession(config, emit)
