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
import dataclasses
import json
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Final, Protocol
from urllib.parse import quote

from kibitz.backends.hub_signaling import HUB_BROKER_URL, HubConnector
from kibitz.backends.page_relay import PageRelay, page_fetch, relay_settings
from kibitz.backends.page_rooms import MountRoom, host_key_of, mount_room, prepared_credential
from kibitz.backends.rtc import RtcTransport
from kibitz.backends.rtc_api import (
    ConnectSignaling,
    EventCallback,
    EventListeners,
    IceCandidateInit,
    MediaKind,
    OnSignalingClose,
    OnSignalingMessage,
    RtcConfig,
    SessionDescription,
    TrackEvent,
    TransceiverDirection,
    W3CDataChannelState,
    W3CPeerConnectionState,
)
from kibitz.clock import AsyncioScheduler, Scheduler
from kibitz.galaxy import Galaxy, parse_galaxy
from kibitz.ids import room_peer_id
from kibitz.relay import invite_link, strip_grant
from kibitz.session import Session, Source
from kibitz.transport import Transport

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


def text_from_page(value: Any) -> str:
    """Text the shim handed over: a ``str``, or a long one's UTF-8 bytes (``shim.pyText``).

    Pyodide copies a JS string into Python one character at a time; bytes cross in one copy, and
    decoding them here is C speed (16 kB: ~25 µs in all instead of ~90 µs).
    """
    if type(value) is str:
        return value
    if hasattr(value, "to_bytes"):
        return bytes(value.to_bytes()).decode()
    raise TypeError(f"expected text from the page, got {type(value).__name__}")


def _bytes_of(value: Any) -> bytes:
    """An ArrayBuffer / typed array (JsProxy) or Python bytes-like as ``bytes``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if hasattr(value, "to_bytes"):
        return bytes(value.to_bytes())
    return bytes(value.to_py())


class _Listeners:
    """JS listeners registered through the shim; ``close()`` removes them and frees the proxies."""

    def __init__(self) -> None:
        self._offs: list[Any] = []

    def listen(self, target: Any, event: str, fn: Callable[[Any], None]) -> None:
        self._offs.append(_shim().listen(target, event, fn))

    def listen_data(self, target: Any, event: str, fn: Callable[[Any], None]) -> None:
        """Like :meth:`listen`, but ``fn`` gets the event's ``data`` instead of the event."""
        self._offs.append(_shim().listenData(target, event, fn))

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


class BrowserDataChannel(W3CDataChannelState):
    """:class:`~kibitz.backends.rtc_api.DataChannel` over an ``RTCDataChannel``.

    Messages are the hot path, so they skip the generic machinery: the shim hands over ``ev.data``
    alone (a string arrives as a ``str`` in one FFI crossing), the ``message`` listeners are
    called directly, and ``send`` is the JS method looked up once.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        raw.binaryType = "arraybuffer"
        self._send = raw.send
        self._events = EventListeners()
        self._on_data: list[EventCallback] = []
        self._listeners = _Listeners()
        self._listeners.listen(raw, "open", lambda _ev: self._events.fire("open"))
        self._listeners.listen_data(raw, "message", self._on_message)
        self._listeners.listen(raw, "close", self._on_close)
        self._listeners.listen(raw, "error", self._on_error)
        self._drain_heard = False

    @property
    def raw(self) -> Any:
        """The underlying JS ``RTCDataChannel`` (tests and diagnostics)."""
        return self._raw

    @property
    def _w3c(self) -> Any:
        return self._raw

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self._send(data)
        else:
            from pyodide.ffi import to_js

            self._send(to_js(bytes(data)))  # a Uint8Array copy, never a view into wasm memory

    def on(self, name: str, callback: EventCallback) -> None:
        if name == "message":
            self._on_data.append(callback)
            return
        if name == "bufferedamountlow" and not self._drain_heard:
            # Only once someone listens: with the default threshold of 0 the event follows every
            # send that empties the buffer, and each one would be a crossing into Python for
            # nothing (~0.05 ms of a 1.5 ms page-to-page round trip, measured).
            self._drain_heard = True
            self._listeners.listen(self._raw, "bufferedamountlow", lambda _ev: self._events.fire(name))
        self._events.on(name, callback)

    def release(self) -> None:
        """Drop every JS listener now (the owning peer connection is gone)."""
        self._listeners.close()

    def _on_message(self, data: Any, utf8: bool = False) -> None:
        if type(data) is not str:
            data = text_from_page(data) if utf8 else _bytes_of(data)
        for callback in self._on_data:
            try:
                callback(data)
            except Exception:
                log.exception("message listener raised")

    def _on_close(self, _ev: Any) -> None:
        self._events.fire("close")
        self._listeners.close_soon()

    def _on_error(self, ev: Any) -> None:
        err = getattr(ev, "error", None)
        message = None if _nullish(err) else _opt_str(getattr(err, "message", None))
        self._events.fire("error", str(message or "data channel error"))



# ---------------------------------------------------------------------------------- media lanes


class BrowserRtpSender:
    """``RTCRtpSender``: swaps what is sent; the JS track is passed through and never stopped here."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._track: object | None = None

    @property
    def track(self) -> object | None:
        return self._track

    async def replace_track(self, track: object | None) -> None:
        from pyodide.ffi import jsnull

        await self._raw.replaceTrack(jsnull if _nullish(track) else track)
        self._track = None if _nullish(track) else track


class BrowserRtpReceiver:
    def __init__(self, raw: Any) -> None:
        self._raw = raw

    @property
    def track(self) -> Any:
        track = self._raw.track
        return None if _nullish(track) else track


class BrowserTransceiver:
    """``RTCRtpTransceiver``; one wrapper per JS transceiver (the transport compares senders)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.sender = BrowserRtpSender(raw.sender)
        self.receiver = BrowserRtpReceiver(raw.receiver)

    @property
    def raw(self) -> Any:
        return self._raw

    @property
    def mid(self) -> str | None:
        return _opt_str(self._raw.mid)

    @property
    def kind(self) -> str:
        return str(self._raw.receiver.track.kind)

    @property
    def direction(self) -> str:
        return str(self._raw.direction)

    @direction.setter
    def direction(self, value: str) -> None:
        self._raw.direction = value

    @property
    def current_direction(self) -> str | None:
        return _opt_str(self._raw.currentDirection)


# ------------------------------------------------------------------------------- peer connection


class BrowserPeerConnection(W3CPeerConnectionState):
    """:class:`~kibitz.backends.rtc_api.PeerConnection` over an ``RTCPeerConnection``."""

    def __init__(self, config: RtcConfig) -> None:
        js = _js()
        conf = {
            "iceServers": [dict(server) for server in config.ice_servers],
            "iceTransportPolicy": config.ice_transport_policy,
        }
        self._raw = js.RTCPeerConnection.new(to_js_object(conf))
        self._events = EventListeners()
        self._listeners = _Listeners()
        self._channels: list[BrowserDataChannel] = []
        self._transceivers: list[BrowserTransceiver] = []
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
        self._listeners.listen(self._raw, "track", self._on_track)

    @property
    def raw(self) -> Any:
        """The underlying JS ``RTCPeerConnection`` (media steps and tests use it)."""
        return self._raw

    @property
    def _w3c(self) -> Any:
        return self._raw

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

    def add_transceiver(
        self, kind: MediaKind, *, direction: TransceiverDirection = "sendrecv"
    ) -> BrowserTransceiver:
        return self._wrap(self._raw.addTransceiver(kind, to_js_object({"direction": direction})))

    def get_transceivers(self) -> list[BrowserTransceiver]:
        """In m-line order, the same wrapper for the same JS transceiver every time."""
        return [self._wrap(raw) for raw in self._raw.getTransceivers()]

    async def get_stats(self) -> list[dict[str, Any]]:
        """``getStats()`` entries as plain dicts with the W3C camelCase keys."""
        js = _js()
        report = await self._raw.getStats()
        entries: list[dict[str, Any]] = json.loads(str(js.JSON.stringify(js.Array.from_(report.values()))))
        return entries

    def _wrap(self, raw: Any) -> BrowserTransceiver:
        # An expando on the JS object names its wrapper: JsProxy identity is not JS identity.
        index: Any = getattr(raw, "_kbzIndex", None)
        if not _nullish(index) and 0 <= int(index) < len(self._transceivers):
            return self._transceivers[int(index)]
        wrapper = BrowserTransceiver(raw)
        raw._kbzIndex = len(self._transceivers)
        self._transceivers.append(wrapper)
        return wrapper

    def _on_track(self, ev: Any) -> None:
        raw_tr = ev.transceiver
        transceiver = None if _nullish(raw_tr) else self._wrap(raw_tr)
        mid = transceiver.mid if transceiver is not None else None
        self._events.fire("track", TrackEvent(kind=str(ev.track.kind), track=ev.track, mid=mid,
                                              transceiver=transceiver))

    def on(self, name: str, callback: EventCallback) -> None:
        self._events.on(name, callback)

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._raw.close()
        self._listeners.close_soon()
        for channel in self._channels:
            channel._listeners.close_soon()
        self._channels.clear()
        self._transceivers.clear()

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
    """:class:`~kibitz.backends.rtc_api.PeerConnectionFactory` for the page (data and media)."""

    supports_media = True

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


def make_browser_transport(broker_url: str, *, galaxy: Galaxy | None = None, **options: Any) -> RtcTransport:
    """An :class:`~kibitz.backends.rtc.RtcTransport` on the page's WebLoop with browser adapters.

    ``broker_url`` is the broker's ws(s):// URL (from ``/api/signal``); with ``galaxy`` the page
    signals through that LAN hub instead, over a peer connection to it (no WebSocket, no broker
    URL). ``options`` go to ``RtcTransport`` (``key``, ``rtc_config``, ``heartbeat_s``...). Media
    links send flowing placeholders (silence, 2x2 black at 5 fps) until a lane is given a real track.
    """
    options.setdefault("rtc_config", RtcConfig())
    options.setdefault("placeholder_tracks", placeholder_tracks)
    factory = BrowserPeerConnectionFactory()
    connect: ConnectSignaling = connect_signaling
    if galaxy is not None:
        connect, broker_url = HubConnector(factory, galaxy), HUB_BROKER_URL
    return RtcTransport(
        factory,
        connect,
        broker_url=broker_url,
        scheduler=AsyncioScheduler(asyncio.get_event_loop()),
        **options,
    )


_placeholder_sources: dict[str, Any] = {}


def placeholder_tracks() -> dict[str, Any]:
    """Fresh placeholder tracks for one link: clones of one shared silent / black source each.

    The link stops its tracks when it closes; stopping a clone never stops the shared source, so
    N links cost one canvas and one oscillator.
    """
    src = _placeholder_sources
    if "audio" not in src or str(src["audio"].readyState) == "ended":
        src["audio"] = silent_audio_track()
    if "video" not in src or str(src["video"].readyState) == "ended":
        src["video"] = black_video_track(5)
    return {"audio": src["audio"].clone(), "video": src["video"].clone()}


def stop_placeholder_sources() -> None:
    """Stop the shared placeholder sources (the next link makes new ones): live media streams keep
    a page out of the back/forward cache."""
    for track in _placeholder_sources.values():
        track.stop()
    _placeholder_sources.clear()


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


class StreamBook(Protocol):
    """Builds the page's ``MediaStream`` objects (participants' ``stream``); JS in the page."""

    def new(self) -> Any: ...

    def set_track(self, stream: Any, kind: str, track: Any) -> None:
        """Make ``track`` the stream's only track of ``kind`` (``None``: none of that kind)."""


class LevelMeter(Protocol):
    """Audio levels of tracks, reported to the callback given at creation (the page's analysers)."""

    def add(self, key: str, track: Any) -> None: ...

    def remove(self, key: str) -> None: ...

    def stop(self) -> None: ...


class SpeakingDetector:
    """Who is speaking, from audio levels: on at ``threshold``, off after ``hold_s`` below it.

    The hold keeps a tile from flickering between words; the levels come in ~10 times a second
    from the page's analysers (RMS of a 512-sample window, 0..1).
    """

    def __init__(self, threshold: float = 0.02, hold_s: float = 0.6) -> None:
        self.threshold = threshold
        self.hold_s = hold_s
        self._last_loud: dict[str, float] = {}
        self.speaking: set[str] = set()

    def feed(self, levels: Mapping[str, float], now: float) -> list[tuple[str, bool]]:
        """Return the ``(id, speaking)`` changes caused by one round of levels."""
        changes: list[tuple[str, bool]] = []
        for key, level in levels.items():
            if level >= self.threshold:
                self._last_loud[key] = now
                if key not in self.speaking:
                    self.speaking.add(key)
                    changes.append((key, True))
        for key in sorted(self.speaking):
            quiet_since = self._last_loud.get(key, now)
            if key not in levels or now - quiet_since >= self.hold_s:
                self.speaking.discard(key)
                self._last_loud.pop(key, None)
                changes.append((key, False))
        return changes

    def forget(self, key: str) -> bool:
        self._last_loud.pop(key, None)
        if key in self.speaking:
            self.speaking.discard(key)
            return True
        return False


class BrowserMedia:
    """:class:`~kibitz.session.LocalMedia` for the page: getUserMedia / getDisplayMedia.

    Mic and camera are separate captures, so turning one off stops only its device (the camera
    light goes out). ``on_change`` tells the page session to rebuild the self-view stream.
    """

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self.tracks: dict[str, Any] = {}
        self.on_change = on_change
        self.on_screen_ended: Callable[[], None] | None = None
        self._ended_off: Callable[[], None] | None = None

    async def acquire(self, source: Source) -> object:
        if source == "screen":
            stream = await get_display_media()
            track = stream.getVideoTracks()[0]
            if self._ended_off is not None:
                self._ended_off()
            self._ended_off = _shim().listen(track, "ended", lambda _ev: self._screen_ended())
        elif source == "mic":
            track = (await get_user_media(audio=True, video=False)).getAudioTracks()[0]
        else:
            track = (await get_user_media(audio=False, video=True)).getVideoTracks()[0]
        old = self.tracks.pop(source, None)
        if old is not None:
            old.stop()
        self.tracks[source] = track
        self._changed()
        return track

    def release(self, source: Source) -> None:
        track = self.tracks.pop(source, None)
        if source == "screen" and self._ended_off is not None:
            self._ended_off()
            self._ended_off = None
        if track is not None:
            track.stop()
            self._changed()

    def _screen_ended(self) -> None:
        """The user stopped sharing from the browser's own bar."""
        if self.on_screen_ended is not None:
            self.on_screen_ended()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


class _JsStreams:
    def new(self) -> Any:
        return _js().MediaStream.new()

    def set_track(self, stream: Any, kind: str, track: Any) -> None:
        _shim().setStreamTrack(stream, kind, track)


def _to_page(value: Any) -> Any:
    """Python → page: dicts/lists as plain JS objects/arrays, ``None`` as JS ``null``."""
    if isinstance(value, dict | list | tuple):
        from pyodide.ffi import jsnull, to_js

        return to_js(_nullify(value, jsnull), dict_converter=_js().Object.fromEntries)
    return value


def _nullify(value: Any, null: Any) -> Any:
    if value is None:
        return null
    if isinstance(value, dict):
        return {k: _nullify(v, null) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nullify(v, null) for v in value]
    return value


def from_page(value: Any) -> Any:
    """Page → Python: JS arrays/objects as lists/dicts, ``null`` (``jsnull``) as ``None``.

    Objects that have no Python equivalent (a ``MediaStreamTrack``) stay ``JsProxy``.
    """
    if hasattr(value, "to_py") and not _is_platform_object(value):
        value = value.to_py()
    return _denull(value)


def _is_platform_object(value: Any) -> bool:
    try:
        return bool(_js().Object.prototype.toString.call(value) != "[object Object]"
                    and not _js().Array.isArray(value))
    except Exception:
        return False


def _denull(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _denull(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_denull(v) for v in value]
    if value is not None and sys.platform == "emscripten" and _nullish(value):
        return None
    return value


STATE_DEFAULTS: dict[str, Any] = {
    "inCall": False, "micOn": False, "camOn": False, "sharing": False, "self": None,
    "isHost": False, "lobbyOn": False, "locked": False, "lobbyStatus": "none",
}

SESSIONS: list[PageSession] = []
"""Live page sessions (diagnostics and the e2e tests' hooks reach them through here)."""


class PageSession:
    """One ``Kibitz.mount()`` as Python sees it: a :class:`~kibitz.session.Session` and the way back.

    widget.js only marshals: controller methods arrive through :meth:`call` (or the synchronous
    :meth:`broadcast_json` / :meth:`send_json` for app data, which must be cheap), and everything
    the session reports goes to the page through ``emit(event, *args)``: ``state``,
    ``participants``, ``join``, ``leave``, ``speaking``, ``chat``, ``knocks``, ``lobby``, ``caps``
    and ``message`` (JSON text + sender id, so a large payload crosses the FFI as one string).

    This class adds only what is the page's: a ``MediaStream`` per participant built from the
    remote tracks the session reports (mutated in place when a link is re-dialled, so a <video>
    bound to it keeps playing), the self-view stream, speaking detection from audio levels, and
    the pagehide goodbye. ``preview`` mounts show a local self-view and never touch the network.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        emit: Callable[..., Any],
        *,
        transport: Transport | None = None,
        scheduler: Scheduler | None = None,
        media: BrowserMedia | None = None,
        streams: StreamBook | None = None,
        meter: Callable[[Callable[[Any], None]], LevelMeter] | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        convert: Callable[[Any], Any] | None = None,
    ) -> None:
        self.config = dict(config)
        self.room_id = room_peer_id(str(config.get("room", "")))
        self.preview = bool(config.get("preview"))
        self._emit_raw = emit
        self._convert = convert or (lambda v: v)
        self._streams = streams
        self._media = media or BrowserMedia()
        self._media.on_change = self._local_media_changed
        self._media.on_screen_ended = self._screen_ended
        self._scheduler = scheduler
        self._transport = transport
        self._wall = wall_clock
        self.closed = False
        self.dropped = 0
        self.errors = 0
        self.state: dict[str, Any] = dict(STATE_DEFAULTS)
        self.speaking = SpeakingDetector()
        self._stream_of: dict[str, Any] = {}
        self._self_stream: Any = None
        self._shared: Any = None
        self._metered: dict[str, Any] = {}
        self._meter: LevelMeter | None = meter(self._on_levels) if meter is not None else None
        self._close_hooks: list[Callable[[], None]] = []
        self._preview_on = False
        self.session: Session | None = None
        self.room_settings: MountRoom | None = None
        if not self.preview:
            if transport is None or scheduler is None:
                raise ValueError("a page session needs a transport and a scheduler (preview does not)")
            identity = config.get("identity") or config.get("tabToken")
            # The room's gate (joinGate, or the page link's): a GateError here rejects the mount's
            # `ready` with its reason; a gated room never falls back to open.
            self.room_settings = rooms = mount_room(config)
            self.session = Session(
                str(config["room"]),
                transport=transport,
                scheduler=scheduler,
                rng=rng,
                name=str(config.get("name") or ""),
                meta=dict(config.get("meta") or {}),
                identity=str(identity) if identity else None,
                media=self._media,
                wall_clock=wall_clock,
                gate=rooms.gate,
                host_key=rooms.host_key,
            )
            for event in ("participants", "join", "leave", "state", "chat", "knocks", "lobby", "caps",
                          "message", "tracks"):
                self.session.on(event, getattr(self, f"_on_{event}"))
        self.handlers: dict[str, Callable[..., Any]] = {
            "join": self.join, "leave": self.leave, "toggleMic": self.toggle_mic,
            "toggleCam": self.toggle_cam, "shareScreen": self.share_screen,
            "shareTrack": self.share_track, "stopShare": self.stop_share,
            "setName": self._s("set_name"), "setAvatar": self._s("set_avatar"),
            "setMeta": self._s("set_meta"), "sendChat": self._s("send_chat"),
            "getChat": self._s("get_chat"), "getKnocks": self._s("get_knocks"),
            "setLobby": self._s("set_lobby"), "admit": self._s("admit"), "deny": self._s("deny"),
            "remove": self._s("remove"), "setLocked": self._s("set_locked"),
            "resetRoom": self._s("reset_room"), "getCapabilityGrant": self._s("get_capability_grant"),
            "setCapabilityGrant": self._s("set_capability_grant"),
            "getAgentAudit": self.get_agent_audit, "getState": self.get_state,
            "getParticipants": self.get_participants, "knock": self._s("knock"),
            "createInviteLink": self.create_invite_link, "unban": self._s("unban"),
            "setJoinCredential": self.set_join_credential, "claimHost": self._s("claim_host"),
        }
        self.relay: PageRelay | None = None
        self.signaling = "broker"
        """``"hub"`` when this page signals through a LAN hub (``?galaxy=``), else ``"broker"``."""
        """The relay this mount asks for (None for a preview): see :mod:`.page_relay`."""
        SESSIONS.append(self)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Join the room's presence now (the launcher shows who is there); enter the call if
        ``startOpen``. Preview mounts only report their (local) state."""
        if self.session is not None:
            self.session.start()
            if self.config.get("startOpen"):
                self.session.join()
        self._emit_state()

    def on_close(self, hook: Callable[[], None]) -> None:
        self._close_hooks.append(hook)

    def close(self) -> None:
        """Unmount / pagehide: a clean goodbye (peers drop us at once), then free what we hold."""
        if self.closed:
            return
        if self.session is not None:
            try:
                self.session.close()
            except Exception:
                log.exception("session close failed")
        self.closed = True
        for source in list(self._media.tracks):
            self._media.release(source)  # type: ignore[arg-type]
        if self._meter is not None:
            self._meter.stop()
        hooks, self._close_hooks = self._close_hooks, []
        for hook in reversed(hooks):
            try:
                hook()
            except Exception:
                log.exception("close hook raised")
        if self in SESSIONS:
            SESSIONS.remove(self)

    # ------------------------------------------------------------------ page → engine

    async def call(self, method: str, args: Any) -> Any:
        """One controller method from widget.js; the result settles the page's promise."""
        if self.closed:
            raise RuntimeError(f"{method}() after unmount")
        handler = self.handlers.get(str(method))
        if handler is None:
            raise NotImplementedError(f"Kibitz: {method}() is not available in this build")
        if self.relay is not None and not self.relay.settled.is_set():
            await self.relay.settled.wait()  # the session starts once /api/turn has answered
        py_args = from_page(args)
        result = handler(*(py_args or []))
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        return self._convert(result)

    def broadcast_json(self, text: Any) -> int:
        """``broadcast(data)``: JSON text from the page (long text as UTF-8 bytes, see
        :func:`text_from_page`); a no-op (0) until we are in the call."""
        if self.session is None or self.closed or not self.session.in_call:
            self.dropped += 1
            return 0
        if type(text) is not str:
            text = text_from_page(text)
        # The text is parsed once for the checks and carried as is, never re-encoded.
        return len(self.session.broadcast_json(text))

    def send_json(self, peer: str, text: Any) -> str | None:
        """``sendTo(id, data)``: directly over our own link to ``peer``.

        Returns ``None`` when sent (or dropped before we are in the call, like ``broadcast``) and
        the refusal's reason otherwise, which the page throws as its own Error: the reason crosses
        the FFI as data, not as a Python traceback to pick apart.
        """
        if self.session is None or self.closed or not self.session.in_call:
            self.dropped += 1
            return None
        try:
            if type(text) is not str:
                text = text_from_page(text)
            # Session.send_json minus its in_call check, made just above (one frame less per send).
            self.session.content.send_json(str(peer), text)
        except (KeyError, ValueError, PermissionError, RuntimeError) as exc:
            return str(exc.args[0]) if exc.args else type(exc).__name__
        return None

    def set_ice_servers(self, servers_json: str) -> bool:
        """ICE servers fetched again from ``/api/turn`` (the page does so before its TURN credentials
        expire): peer connections made from now on use them. False for a mount without a network."""
        servers = json.loads(servers_json)
        if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
            raise TypeError("ICE servers must be a JSON list of objects with urls")
        transport = self._transport
        if not isinstance(transport, RtcTransport) or self.closed:
            return False
        transport.set_rtc_config(dataclasses.replace(transport.rtc_config, ice_servers=tuple(servers)))
        return True

    def _s(self, name: str) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            if self.session is None:
                raise RuntimeError(f"a preview never joins a room: {name} is not available")
            return getattr(self.session, name)(*args)

        return run

    async def create_invite_link(self, page_url: str) -> str:
        """``createInviteLink()``: this page's address as an invite (the page passes it in), with the
        room and its settings in the fragment when the room has any (gate, host; never a secret);
        a licensed opener's carries a fresh room grant (``?grant=``), so its joiners ride its relay."""
        url = str(page_url)
        if self.session is not None and self.session.gate.to_params() != {"g": "open"}:
            url = self.session.invite_link(strip_grant(url)[0])
        if self.relay is None:
            return invite_link(url, None)
        return await self.relay.invite_link(url)

    async def set_join_credential(self, credential: str | None) -> None:
        """``setJoinCredential(code | invite)``: what the door asked for; a code is turned into its
        slow-hash key here (it never leaves this page)."""
        session = self._need()
        settings = replace(self.room_settings, credential=credential) if self.room_settings else None
        session.set_credential(await prepared_credential(settings) if settings else credential)

    async def prepare(self) -> None:
        """Before the session starts: the code's key, and the host key unsealed with the host
        password. A wrong host password is said in the state (``hostError``), never fatal: the
        mount goes on as a guest."""
        if self.session is None or self.room_settings is None:
            return
        credential = await prepared_credential(self.room_settings)
        if credential:
            self.session.set_credential(credential)
        if self.room_settings.host_password and not self.room_settings.host_key:
            try:
                self.session.set_host_key(await host_key_of(self.room_settings) or "")
            except ValueError as exc:
                self.state["hostError"] = str(exc)
                log.warning("hostPassword: %s", exc)

    async def join(self, opts: Mapping[str, Any] | None = None) -> None:
        opts = opts or {}
        if self.relay is not None and self.relay.error:
            raise PermissionError(self.relay.error)  # relay only, and no relay: stay out, say why
        if self.session is None:
            self._preview_on = True
            if opts.get("cam", True) and "cam" not in self._media.tracks:
                await self._media.acquire("cam")
            if opts.get("mic") and "mic" not in self._media.tracks:
                await self._media.acquire("mic")
            self._emit_state()
            self._emit_participants()
            return
        self.session.join()
        if opts.get("mic"):
            await self.session.set_mic(True)
        if opts.get("cam"):
            await self.session.set_cam(True)

    async def leave(self) -> None:
        if self.session is None:
            self._preview_on = False
            for source in list(self._media.tracks):
                self._media.release(source)  # type: ignore[arg-type]
            self._emit_state()
            self._emit_participants()
            return
        self.session.leave()
        state = self.session.get_state()
        if state["micOn"]:
            await self.session.set_mic(False)
        if state["camOn"]:
            await self.session.set_cam(False)
        if state["sharing"]:
            self.session.stop_share()

    async def toggle_mic(self) -> bool:
        if self.session is None:
            return await self._preview_toggle("mic")
        return await self.session.toggle_mic()

    async def toggle_cam(self) -> bool:
        if self.session is None:
            return await self._preview_toggle("cam")
        return await self.session.toggle_cam()

    async def _preview_toggle(self, source: Source) -> bool:
        if source in self._media.tracks:
            self._media.release(source)
        else:
            await self._media.acquire(source)
        self._emit_state()
        return source in self._media.tracks

    async def share_screen(self) -> None:
        await self._need().share_screen()

    async def share_track(self, track: Any) -> None:
        if _nullish(track):
            raise TypeError("shareTrack(track) needs a MediaStreamTrack")
        self._shared = track
        await self._need().share_screen(track)
        self._local_media_changed()

    def stop_share(self) -> None:
        self._shared = None
        self._need().stop_share()
        self._local_media_changed()

    def get_agent_audit(self, peer: str | None = None, n: int = 6) -> list[dict[str, Any]]:
        return self._need().get_agent_audit(peer, n)

    def _need(self) -> Session:
        if self.session is None:
            raise RuntimeError("a preview never joins a room")
        return self.session

    # ------------------------------------------------------------------ engine → page

    def get_state(self) -> dict[str, Any]:
        if self.session is None:
            tracks = self._media.tracks
            return {**STATE_DEFAULTS, "inCall": self._preview_on, "micOn": "mic" in tracks,
                    "camOn": "cam" in tracks, "preview": True}
        state = self.session.get_state()
        if state.get("lobbyStatus") is None:
            state["lobbyStatus"] = "none"
        if self.relay is not None:
            state.update(self.relay.state())
        state["signaling"] = self.signaling
        return state

    def get_participants(self) -> list[dict[str, Any]]:
        if self.session is None:
            if not self._preview_on:
                return []
            return [{"id": "preview", "name": str(self.config.get("name") or ""), "isSelf": True,
                     "camOn": "cam" in self._media.tracks, "micOn": "mic" in self._media.tracks,
                     "speaking": False, "stream": self._self_view(), "meta": {}, "role": "guest"}]
        return [self._decorate(p) for p in self.session.get_participants()]

    def _decorate(self, person: dict[str, Any]) -> dict[str, Any]:
        pid = person["id"]
        person["speaking"] = pid in self.speaking.speaking
        person["stream"] = self._self_view() if person.get("isSelf") else self._stream_of.get(pid)
        return person

    def emit(self, event: str, *args: Any) -> None:
        if self.closed:
            return
        try:
            self._emit_raw(event, *[self._convert(a) for a in args])
        except Exception:
            self.errors += 1
            log.exception("page listener for %s failed", event)

    def _emit_state(self) -> None:
        self.state = self.get_state()
        self.emit("state", self.state)

    def _emit_participants(self) -> None:
        self.emit("participants", self.get_participants())

    def _on_participants(self, _people: list[dict[str, Any]]) -> None:
        self._emit_participants()
        self._sync_meters()

    def _on_join(self, person: dict[str, Any]) -> None:
        self.emit("join", self._decorate(dict(person)))

    def _on_leave(self, person: dict[str, Any]) -> None:
        pid = str(person.get("id"))
        self._stream_of.pop(pid, None)
        if self.speaking.forget(pid):
            self.emit("speaking", pid, False)
        self.emit("leave", person)

    def _on_state(self, _state: dict[str, Any]) -> None:
        self._emit_state()
        self._sync_meters()

    def _on_chat(self, line: dict[str, Any] | None) -> None:
        self.emit("chat", line)

    def _on_knocks(self, knocks: list[dict[str, Any]]) -> None:
        self.emit("knocks", knocks)

    def _on_lobby(self, status: str) -> None:
        self.emit("lobby", status)

    def _on_caps(self, grant: dict[str, Any]) -> None:
        self.emit("caps", grant)

    def _on_message(self, data: Any, sender: str) -> None:
        # One string over the FFI: the page's JSON.parse is far cheaper than a deep to_js. The
        # receive check already encoded the value being delivered; json_of reuses that text.
        # Strings need no conversion, so this skips emit()'s per-argument pass (the hot path).
        if self.closed:
            return
        text = self.session.content.json_of(data) if self.session is not None else json.dumps(data)
        try:
            self._emit_raw("message", text, sender)
        except Exception:
            self.errors += 1
            log.exception("page listener for message failed")

    def _on_tracks(self, peer: str, lane: str, track: Any) -> None:
        if self._streams is None:
            return
        stream = self._stream_of.get(peer)
        if stream is None:
            stream = self._stream_of[peer] = self._streams.new()
        self._streams.set_track(stream, lane, track)
        self._sync_meters()
        self._emit_participants()

    # ------------------------------------------------------------------ local media, speaking

    def _self_view(self) -> Any:
        if self._streams is None:
            return None
        tracks = self._media.tracks
        if self._self_stream is None:
            self._self_stream = self._streams.new()
        state = self.session.get_state() if self.session is not None else {"micOn": True, "camOn": True,
                                                                             "sharing": False}
        video = (self._shared or tracks.get("screen")) if state["sharing"] else None
        if video is None and state["camOn"]:
            video = tracks.get("cam")
        self._streams.set_track(self._self_stream, "audio", tracks.get("mic") if state["micOn"] else None)
        self._streams.set_track(self._self_stream, "video", video)
        return self._self_stream

    def _local_media_changed(self) -> None:
        if self.closed:
            return
        self._self_view()
        self._sync_meters()

    def _screen_ended(self) -> None:
        if self.session is not None and self.session.get_state()["sharing"]:
            self.stop_share()

    def _sync_meters(self) -> None:
        """Analyse exactly the audio we can hear: our mic while on, and each remote mic that is on."""
        if self._meter is None or self.session is None:
            return
        want: dict[str, Any] = {}
        mic = self._media.tracks.get("mic")
        if mic is not None and self.session.get_state()["micOn"]:
            want[self.session.self_id] = mic
        for person in self.session.get_participants():
            if person["isSelf"] or not person.get("micOn"):
                continue
            track = self.session.remote_tracks(person["id"]).get("audio")
            if track is not None:
                want[person["id"]] = track
        for key in [k for k in self._metered if k not in want or self._metered[k] is not want[k]]:
            self._meter.remove(key)
            del self._metered[key]
        for key, track in want.items():
            if key not in self._metered:
                self._meter.add(key, track)
                self._metered[key] = track
        for key in list(self.speaking.speaking):
            if key not in want and self.speaking.forget(key):
                self.emit("speaking", key, False)
                self._emit_participants()

    def _on_levels(self, levels: Any) -> None:
        if self.closed:
            return
        raw = from_page(levels) or {}
        now = self._scheduler.now() if self._scheduler is not None else self._wall()
        changes = self.speaking.feed({str(k): float(v) for k, v in raw.items()}, now)
        for key, on in changes:
            self.emit("speaking", key, on)
        if changes:
            self._emit_participants()

    # ------------------------------------------------------------------ diagnostics / test hooks

    def cut_link(self, peer: str) -> bool:
        """Close the ``RTCPeerConnection`` under our data link to ``peer`` (a simulated network cut)."""
        session = self._need()
        link = session.mesh.link_of(peer)
        links = getattr(session._transport, "_links", {})
        lk = links.get(link) if link is not None else None
        if lk is None or lk.pc is None:
            return False
        lk.pc.raw.close()
        return True


_background: set[asyncio.Future[Any]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _signal_resolver(signal: str) -> Callable[[str], Awaitable[str | None]]:
    """``GET <signal>&failed=<broker>``: the room's broker now (another node's if ours died)."""

    async def resolve(failed: str) -> str | None:
        import js
        from pyodide.ffi import to_js

        opts = to_js({"cache": "no-store"}, dict_converter=js.Object.fromEntries)
        r = await js.fetch(f"{signal}&failed={quote(failed, safe='')}" if failed else signal, opts)
        if not r.ok:
            return None
        info = (await r.json()).to_py()
        url = info.get("url") if isinstance(info, dict) else None
        return url if isinstance(url, str) and url else None

    return resolve


async def _no_relay_on_a_hub(
    method: str, url: str, headers: Mapping[str, str], body: str | None
) -> tuple[int, str]:
    """The relay fetch of a page on a LAN hub: nothing is asked (no internet, no ``/api/turn``);
    the relay keeper sees an error, so a relay-only member stays out and the rest use host
    candidates only."""
    raise ConnectionError("a LAN hub has no relay")


def open_session(config_json: str, emit: Callable[..., Any]) -> PageSession:
    """Called by widget.js for each mount, once the engine has booted; starts presence at once.

    ``config`` carries the mount options plus what the loader discovered in parallel with the boot:
    ``broker`` (``{"url", "key"}`` from ``/api/signal``). The relay (``turnBase``, ``licenseKey``,
    ``grant``, ``relayOnly``) is asked here, in Python (:mod:`.page_relay`), before the session starts.
    """
    config = json.loads(config_json)
    if not isinstance(config, dict):
        raise TypeError("mount config must be a JSON object")
    room_peer_id(str(config.get("room", "")))  # a clear error for a room without letters/digits
    transport: RtcTransport | None = None
    if config.get("preview"):
        page = PageSession(config, emit, streams=_JsStreams(), convert=_to_page)
    else:
        broker = config.get("broker") or {}
        settings = relay_settings(config)
        policy: Final = "relay" if settings.relay_only else "all"
        galaxy_value = broker.get("galaxy")
        fetch = page_fetch
        if isinstance(galaxy_value, str) and galaxy_value:
            # A LAN hub: no broker, no /api/*. Fail closed on a bad link (GalaxyError says why).
            galaxy = parse_galaxy(galaxy_value)
            transport = make_browser_transport(HUB_BROKER_URL, galaxy=galaxy,
                                               rtc_config=RtcConfig(ice_transport_policy=policy))
            fetch = _no_relay_on_a_hub
        else:
            url = broker.get("url")
            if not isinstance(url, str) or not url:
                raise ValueError("no signaling broker: /api/signal named none and no signalHost given")
            transport = make_browser_transport(url, key=str(broker.get("key") or "peerjs"),
                                               rtc_config=RtcConfig(ice_transport_policy=policy))
            signal = broker.get("signal")
            if isinstance(signal, str) and signal:
                transport.set_broker_resolver(_signal_resolver(signal))
        page = PageSession(
            config, emit, transport=transport, scheduler=AsyncioScheduler(asyncio.get_event_loop()),
            streams=_JsStreams(), meter=lambda cb: _shim().levelMeter(cb), convert=_to_page,
        )
        page.signaling = "hub" if fetch is _no_relay_on_a_hub else "broker"
        page.relay = PageRelay(settings, transport, fetch=fetch, on_change=page._emit_state)
        page.on_close(page.relay.close)

        async def shutdown() -> None:
            await asyncio.sleep(0.2)  # let the goodbye frames leave first
            await transport.shutdown()

        page.on_close(lambda: _spawn(shutdown()))

    def hidden() -> None:
        """pagehide: the goodbye, then every connection closed and the placeholders stopped at once
        rather than after the goodbye delay, because the browser decides on the back/forward cache
        as soon as this returns and a live peer connection or media stream keeps the page out. The
        broker still tells everyone this tab left (widget.js opens a new session if it comes back)."""
        page.close()
        if transport is not None:
            transport.close_now()
        stop_placeholder_sources()

    page.on_close(on_pagehide(hidden))

    async def begin() -> None:
        # The door's credential and the host key are ready before anything is announced; the
        # session then starts once /api/turn has answered (and not at all if it must stay out).
        await page.prepare()
        if page.closed:
            return
        if page.relay is None:
            page.start()
        else:
            relay = page.relay
            await relay.start(lambda: None if page.closed else page.start())

    if page.preview:
        page.start()
    else:
        _spawn(begin())
        page._emit_state()
    return page


__all__ = [
    "BrowserDataChannel", "BrowserMedia", "BrowserPeerConnection", "BrowserPeerConnectionFactory",
    "BrowserSignalingSocket", "PageSession", "SpeakingDetector", "connect_signaling", "from_page",
    "make_browser_transport", "open_session", "placeholder_tracks", "ws_base_of",
]
