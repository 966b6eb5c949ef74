"""The browser backend, as the engine's Worker runs it: WebSocket signaling and data channels here,
peer connections and media on the page's thread through the page bridge.

The engine (Pyodide, this package) runs in a dedicated Worker that widget.js starts (see
docs/architecture.md, "Which thread runs what"). What a Worker has, the engine uses directly: the
broker ``WebSocket``, timers, and the ``RTCDataChannel`` objects the page transfers here as soon as
they exist, so app messages never run on the page's thread. What only the page's thread has
(``RTCPeerConnection``, capture, ``MediaStream``, audio analysers) the engine drives through
:mod:`kibitz.backends.page_bridge` (adapters in :mod:`kibitz.backends.page_rtc` and
:mod:`kibitz.backends.page_media`). Where a channel cannot be transferred, the page relays it
(:class:`~kibitz.backends.page_rtc.RelayedDataChannel`).

``js`` and ``pyodide`` are imported lazily, inside functions, so CPython can import this module
(for types and tests) without them. Callback lifetime is the JS shim's job (``kibitz_shim.listen``
copies the borrowed proxy and frees it on ``off()``): a bare Python callable handed to
``addEventListener`` would be destroyed right after the call and the event would raise instead of
reaching us.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final
from urllib.parse import quote

from kibitz.backends.hub_signaling import HUB_BROKER_URL, HubConnector
from kibitz.backends.page_bridge import Bridge, PageRef
from kibitz.backends.page_identity import page_key_fetch
from kibitz.backends.page_media import (
    BrowserMedia,
    PageMeter,
    PageStreams,
    placeholder_tracks,
    stop_placeholder_sources,
)
from kibitz.backends.page_relay import PageRelay, page_fetch, relay_settings
from kibitz.backends.page_rtc import (
    BrowserPeerConnection,
    BrowserPeerConnectionFactory,
    ChannelRelay,
    RelayedDataChannel,
)
from kibitz.backends.page_session import (
    SESSIONS,
    STATE_DEFAULTS,
    PageSession,
    SpeakingDetector,
    text_from_page,
)
from kibitz.backends.rtc import RtcTransport
from kibitz.backends.rtc_api import (
    CloseReason,
    ConnectSignaling,
    EventCallback,
    EventListeners,
    OnSignalingClose,
    OnSignalingMessage,
    RtcConfig,
    W3CDataChannelState,
)
from kibitz.clock import AsyncioScheduler
from kibitz.galaxy import Galaxy, parse_galaxy
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
        # Born open (the answerer's channel, often): whoever attaches reads ``ready_state``, and
        # no ``open`` event is to come, so there is nothing to catch up.
        self._open_told = str(raw.readyState) == "open"
        self._listeners.listen(raw, "open", lambda _ev: self._tell_open())
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

    def catch_up(self) -> None:
        """Say ``open`` if the channel is open but its event never reached this Worker (a
        transferred channel's state crosses threads; a CI run saw a link stay silent once)."""
        if not self._open_told and str(self._raw.readyState) == "open":
            log.warning("data channel %r is open but said nothing: catching up", self.label)
            self._tell_open()

    def _tell_open(self) -> None:
        if not self._open_told:
            self._open_told = True
            self._events.fire("open")

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



# ---------------------------------------------------------------------------------- page bridge


class _Page:
    """The engine's one bridge to the page that started it (made on first use)."""

    bridge: Bridge | None = None
    relay: ChannelRelay | None = None
    pagehide: ClassVar[list[Callable[[], None]]] = []


def page_bridge() -> Bridge:
    """The bridge to the page (the shim's ``post`` carries its messages)."""
    if _Page.bridge is None:
        shim = _shim()
        _Page.bridge = Bridge(lambda text: shim.post(text))
        _Page.relay = ChannelRelay(_relay_send)
    return _Page.bridge


def channel_relay() -> ChannelRelay:
    page_bridge()
    assert _Page.relay is not None
    return _Page.relay


def _relay_send(h: int, data: str | bytes) -> None:
    if isinstance(data, str):
        _shim().relaySend(h, data)
    else:
        from pyodide.ffi import to_js

        _shim().relaySend(h, to_js(bytes(data)))


def data_channel(value: Any) -> Any:
    """What the page sent for a data channel as an adapter: a channel transferred to this Worker
    (:class:`BrowserDataChannel`), or a handle to relay (:class:`RelayedDataChannel`)."""
    if value is None or _nullish(value):
        return None
    if isinstance(value, PageRef):
        return RelayedDataChannel(value, channel_relay())
    return BrowserDataChannel(value)


def peer_connection_factory(
    certificate_fp: str | None = None, reads_remote: bool = False
) -> BrowserPeerConnectionFactory:
    """``certificate_fp``: the fingerprint of the page's persistent certificate (widget.js keeps it
    in IndexedDB and gives it to every peer connection it makes); ``reads_remote``: the page reads
    the far end's certificate off each live connection (links wait for it before they open)."""
    return BrowserPeerConnectionFactory(page_bridge(), channel_relay(), data_channel, certificate_fp,
                                        reads_remote=reads_remote)


def on_pagehide(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` when the page goes away (the page tells the Worker); returns the remover."""
    _Page.pagehide.append(callback)

    def off() -> None:
        if callback in _Page.pagehide:
            _Page.pagehide.remove(callback)

    return off


def page_hidden() -> None:
    """The page's ``pagehide``: every hook, each isolated from the others."""
    for hook in list(_Page.pagehide):
        try:
            hook()
        except Exception:
            log.exception("pagehide hook raised")


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
            code = None if _nullish(ev.code) else int(ev.code)
            failed = ConnectionError(f"WebSocket to the broker closed (code {code})")
            failed.code = code  # type: ignore[attr-defined]  # rtc.py: 1008 while claiming = taken
            self.opened.set_exception(failed)
            return
        if self._closed_by_us:
            reason: str = "closed"
        else:
            code = None if _nullish(ev.code) else int(ev.code)
            reason = CloseReason.by_broker(code, _opt_str(ev.reason))
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

def make_browser_transport(
    broker_url: str, *, galaxy: Galaxy | None = None, certificate_fp: str | None = None,
    reads_remote: bool = False, **options: Any
) -> RtcTransport:
    """An :class:`~kibitz.backends.rtc.RtcTransport` on the Worker's WebLoop with browser adapters.

    ``broker_url`` is the broker's ws(s):// URL (from ``/api/signal``); with ``galaxy`` the page
    signals through that LAN hub instead, over a peer connection to it (made on the page through
    the bridge like every other, its data channels transferred to the Worker; no WebSocket, no
    broker URL). ``options`` go to ``RtcTransport`` (``key``, ``rtc_config``, ``heartbeat_s``...).
    Media links send flowing placeholders (silence, 2x2 black at 5 fps) until a lane is given a
    real track.
    """
    options.setdefault("rtc_config", RtcConfig())
    options.setdefault("placeholder_tracks", lambda: placeholder_tracks(page_bridge()))
    factory = peer_connection_factory(certificate_fp, reads_remote)
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


def ws_base_of(http_base: str) -> str:
    """``http://host:port/path/`` → ``ws://host:port/path/`` (``https`` → ``wss``)."""
    if http_base.startswith("https://"):
        return "wss://" + http_base[len("https://") :]
    if http_base.startswith("http://"):
        return "ws://" + http_base[len("http://") :]
    if http_base.startswith(("ws://", "wss://")):
        return http_base
    raise ValueError(f"not an http(s) or ws(s) URL: {http_base!r}")


_background: set[asyncio.Future[Any]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _signal_resolver(signal: str) -> Callable[[str], Awaitable[str | None]]:
    """``GET <signal>&failed=<broker>``: the room's broker now (another node's if ours died)."""

    async def resolve(failed: str) -> str | None:
        js = _js()
        opts = to_js_object({"cache": "no-store"})
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
    """Called for each mount once the engine has booted; starts presence as soon as it may.

    ``config`` carries the mount options plus what the engine host discovered in parallel with the
    boot: ``broker`` (``{"url", "key", "signal"}`` from ``/api/signal``). The relay (``turnBase``,
    ``licenseKey``, ``grant``, ``relayOnly``) is asked here, in Python (:mod:`.page_relay`), before
    the session starts. ``emit(event, *args)`` reaches the mount's controller on the page.
    """
    config = json.loads(config_json)
    if not isinstance(config, dict):
        raise TypeError("mount config must be a JSON object")
    room_peer_id(str(config.get("room", "")))  # a clear error for a room without letters/digits
    bridge = page_bridge()
    transport: RtcTransport | None = None
    media = BrowserMedia(bridge)
    if config.get("preview"):
        page = PageSession(config, emit, media=media, streams=PageStreams(bridge))
    else:
        broker = config.get("broker") or {}
        settings = relay_settings(config)
        policy: Final = "relay" if settings.relay_only else "all"
        fp = config.get("certFingerprint")
        cert_fp, reads = (fp if isinstance(fp, str) else None), config.get("readsRemoteCertificates") is True
        galaxy_value = broker.get("galaxy")
        fetch = page_fetch
        if isinstance(galaxy_value, str) and galaxy_value:
            # A LAN hub: no broker, no /api/*. Fail closed on a bad link (GalaxyError says why).
            galaxy = parse_galaxy(galaxy_value)
            transport = make_browser_transport(HUB_BROKER_URL, galaxy=galaxy, certificate_fp=cert_fp,
                                               reads_remote=reads,
                                               rtc_config=RtcConfig(ice_transport_policy=policy))
            fetch = _no_relay_on_a_hub
        else:
            url = broker.get("url")
            if not isinstance(url, str) or not url:
                raise ValueError("no signaling broker: /api/signal named none and no signalHost given")
            transport = make_browser_transport(url, key=str(broker.get("key") or "peerjs"),
                                               certificate_fp=cert_fp, reads_remote=reads,
                                               rtc_config=RtcConfig(ice_transport_policy=policy))
            signal = broker.get("signal")
            if isinstance(signal, str) and signal:
                transport.set_broker_resolver(_signal_resolver(signal))
        page = PageSession(
            config, emit, transport=transport, scheduler=AsyncioScheduler(asyncio.get_event_loop()),
            media=media, streams=PageStreams(bridge), meter=lambda cb: PageMeter(bridge, cb),
            fetch=page_key_fetch,
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
        (the page also closes its peer connections and stops its tracks itself, without waiting
        for this Worker: the browser decides on the back/forward cache as soon as its pagehide
        returns). The broker still tells everyone this tab left (the loader opens a new session
        if the page comes back)."""
        page.close()
        if transport is not None:
            transport.close_now()
        stop_placeholder_sources(bridge)

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
    "SESSIONS", "STATE_DEFAULTS", "BrowserDataChannel", "BrowserMedia", "BrowserPeerConnection",
    "BrowserPeerConnectionFactory", "BrowserSignalingSocket", "PageSession", "SpeakingDetector",
    "connect_signaling", "data_channel", "make_browser_transport", "open_session", "page_bridge",
    "page_hidden", "peer_connection_factory", "placeholder_tracks", "text_from_page", "ws_base_of",
]
