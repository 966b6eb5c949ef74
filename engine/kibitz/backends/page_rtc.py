""":mod:`kibitz.backends.rtc_api` adapters for the engine's Worker: peer connections on the page's
thread, data channels in the Worker.

``RTCPeerConnection`` exists only on the page's thread, so :class:`BrowserPeerConnection` drives one
there through the page bridge (:mod:`kibitz.backends.page_bridge`): offers, answers, candidates,
transceivers and stats are messages, and what the transport reads synchronously (connection
state, a transceiver's ``mid``) is the page's last description of it. Data channels are
*transferred* to the Worker in the task that creates them, so app messages never run on the
page's thread: :class:`BrowserDataChannel` wraps the transferred channel directly. Where a channel
cannot be transferred (a browser without the feature, the engine running on the page itself, or
the ``relay`` test flag) the page keeps it and relays its events and sends:
:class:`RelayedDataChannel`.

Like :mod:`kibitz.backends.browser`, ``js`` and ``pyodide`` are imported lazily, inside the
functions that need them, so CPython can import this module and drive it with a fake page.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from kibitz.backends.page_bridge import Bridge, PageRef, PageTrack
from kibitz.backends.rtc_api import (
    EventCallback,
    EventListeners,
    IceCandidateInit,
    MediaKind,
    RtcConfig,
    SessionDescription,
    TrackEvent,
    TransceiverDirection,
)

log = logging.getLogger(__name__)

FINGERPRINT = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){31}$")
"""A certificate's SHA-256 as peers compare it: lower-case colon-hex."""

CATCH_UP_S = (1.0, 3.0, 8.0)
"""After a connection reports ``connected``: when to check that its open channels said so
(:meth:`kibitz.backends.browser.BrowserDataChannel.catch_up`)."""

PC_PICKS: dict[str, tuple[str, ...]] = {
    "icecandidate": ("candidate",),
    "datachannel": ("channel",),
    "connectionstatechange": (),
    "iceconnectionstatechange": (),
    "track": ("track", "transceiver"),
    "kbzremotecert": (),
}
"""The peer connection events the engine hears, and which fields of each cross."""


# ---------------------------------------------------------------------------------- data channels


class RelayedDataChannel:
    """:class:`~kibitz.backends.rtc_api.DataChannel` kept on the page, its events and sends relayed.

    The fallback where a channel cannot be transferred to the Worker. The page relays every event
    from the moment the channel exists (nothing is lost before the engine listens); sends go out
    as structured-clone messages (binary intact). ``buffered_amount`` is what the page last
    reported plus what the engine sent since.
    """

    def __init__(self, ref: PageRef, relay: ChannelRelay) -> None:
        self._ref = ref
        self._relay = relay
        self._events = EventListeners()
        self._on_data: list[EventCallback] = []
        self._sent = 0
        self._reported_sent = 0
        relay.channels[ref.h] = self

    @property
    def raw(self) -> PageRef:
        return self._ref

    @property
    def label(self) -> str:
        return str(self._ref.desc.get("label", ""))

    @property
    def ready_state(self) -> str:
        return str(self._ref.desc.get("readyState", "connecting"))

    @property
    def buffered_amount(self) -> int:
        return int(self._ref.desc.get("bufferedAmount", 0)) + self._sent - self._reported_sent

    @property
    def buffered_amount_low_threshold(self) -> int:
        return int(self._ref.desc.get("bufferedAmountLowThreshold", 0))

    @buffered_amount_low_threshold.setter
    def buffered_amount_low_threshold(self, value: int) -> None:
        self._ref.desc["bufferedAmountLowThreshold"] = int(value)
        self._ref.set("bufferedAmountLowThreshold", int(value))

    def send(self, data: str | bytes) -> None:
        if self.ready_state != "open":
            raise RuntimeError(f"data channel is {self.ready_state}")
        self._sent += len(data)  # the page counts alike: characters of text, bytes of binary
        self._relay.send(self._ref.h, data)

    def close(self) -> None:
        self._ref.fire("close")

    def on(self, name: str, callback: EventCallback) -> None:
        if name == "message":
            self._on_data.append(callback)
        else:
            self._events.on(name, callback)

    def release(self) -> None:
        self._relay.channels.pop(self._ref.h, None)

    # the relay feeds these
    def _state(self, desc: dict[str, Any]) -> None:
        self._ref.desc.update(desc)
        sent = desc.get("sent")
        if isinstance(sent, int):
            self._reported_sent = sent

    def _event(self, kind: str, desc: dict[str, Any], detail: Any) -> None:
        self._state(desc)
        if kind == "open":
            self._events.fire("open")
        elif kind == "close":
            self._events.fire("close")
            self.release()
        elif kind == "error":
            self._events.fire("error", str(detail or "data channel error"))
        elif kind == "bufferedamountlow":
            self._events.fire("bufferedamountlow")

    def _message(self, data: str | bytes) -> None:
        for callback in self._on_data:
            try:
                callback(data)
            except Exception:
                log.exception("message listener raised")


class ChannelRelay:
    """The relayed channels of one bridge, by handle, and how their sends reach the page."""

    def __init__(self, send: Callable[[int, str | bytes], None]) -> None:
        self.send = send
        self.channels: dict[int, RelayedDataChannel] = {}

    def event(self, h: int, kind: str, desc: dict[str, Any], detail: Any = None) -> None:
        channel = self.channels.get(h)
        if channel is not None:
            channel._event(kind, desc, detail)

    def message(self, h: int, data: str | bytes) -> None:
        channel = self.channels.get(h)
        if channel is not None:
            channel._message(data)


class ChannelSlot:
    """What :meth:`BrowserPeerConnection.create_data_channel` returns at once: the channel itself
    arrives from the page a moment later (transferred, or as a relay). Listeners registered
    before then are moved onto it; until then it is ``connecting`` and cannot send."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._impl: Any = None
        self._early: list[tuple[str, EventCallback]] = []
        self._closed = False

    def bind(self, impl: Any) -> None:
        self._impl = impl
        early, self._early = self._early, []
        for name, callback in early:
            impl.on(name, callback)
        if self._closed:
            impl.close()

    @property
    def bound(self) -> Any:
        return self._impl

    @property
    def raw(self) -> Any:
        return None if self._impl is None else self._impl.raw

    @property
    def label(self) -> str:
        return self._label if self._impl is None else str(self._impl.label)

    @property
    def ready_state(self) -> str:
        if self._impl is None:
            return "closed" if self._closed else "connecting"
        return str(self._impl.ready_state)

    @property
    def buffered_amount(self) -> int:
        return 0 if self._impl is None else int(self._impl.buffered_amount)

    @property
    def buffered_amount_low_threshold(self) -> int:
        return 0 if self._impl is None else int(self._impl.buffered_amount_low_threshold)

    @buffered_amount_low_threshold.setter
    def buffered_amount_low_threshold(self, value: int) -> None:
        if self._impl is not None:
            self._impl.buffered_amount_low_threshold = value

    def send(self, data: str | bytes) -> None:
        if self._impl is None:
            raise RuntimeError("data channel is not open yet")
        self._impl.send(data)

    def close(self) -> None:
        self._closed = True
        if self._impl is not None:
            self._impl.close()

    def on(self, name: str, callback: EventCallback) -> None:
        if self._impl is None:
            self._early.append((name, callback))
        else:
            self._impl.on(name, callback)

    def release(self) -> None:
        if self._impl is not None:
            self._impl.release()

    def catch_up(self) -> None:
        catch_up = getattr(self._impl, "catch_up", None)
        if catch_up is not None:
            catch_up()


# ---------------------------------------------------------------------------------- media lanes


class BrowserRtpSender:
    """``RTCRtpSender`` on the page: swaps what is sent; tracks are handles, never stopped here."""

    def __init__(self, ref: PageRef) -> None:
        self._ref = ref
        self._track: object | None = None

    @property
    def track(self) -> object | None:
        return self._track

    async def replace_track(self, track: object | None) -> None:
        await self._ref.call("replaceTrack", track)
        self._track = track


class BrowserRtpReceiver:
    def __init__(self, transceiver: PageRef) -> None:
        self._transceiver = transceiver

    @property
    def track(self) -> Any:
        return self._transceiver.desc.get("track")


class BrowserTransceiver:
    """``RTCRtpTransceiver`` on the page; one wrapper per page transceiver (the transport compares
    senders). ``mid`` and the directions are the page's last description of it."""

    def __init__(self, ref: PageRef) -> None:
        self._ref = ref
        self.sender = BrowserRtpSender(ref.get_ref("sender"))
        self.receiver = BrowserRtpReceiver(ref)

    @property
    def raw(self) -> PageRef:
        return self._ref

    @property
    def mid(self) -> str | None:
        mid = self._ref.desc.get("mid")
        return None if mid is None else str(mid)

    @property
    def kind(self) -> str:
        return str(self._ref.desc.get("kind", ""))

    @property
    def direction(self) -> str:
        return str(self._ref.desc.get("direction", "sendrecv"))

    @direction.setter
    def direction(self, value: str) -> None:
        self._ref.desc["direction"] = value
        self._ref.set("direction", value)

    @property
    def current_direction(self) -> str | None:
        value = self._ref.desc.get("currentDirection")
        return None if value is None else str(value)


# ------------------------------------------------------------------------------- peer connection


class BrowserPeerConnection:
    """:class:`~kibitz.backends.rtc_api.MediaPeerConnection` over an ``RTCPeerConnection`` that
    lives on the page's thread."""

    def __init__(self, config: RtcConfig, bridge: Bridge, relay: ChannelRelay,
                 channel: Callable[[Any], Any], *, certified: bool = False) -> None:
        conf = {
            "iceServers": [dict(server) for server in config.ice_servers],
            "iceTransportPolicy": config.ice_transport_policy,
        }
        self._certified = certified
        self._bridge = bridge
        self._relay = relay
        self._channel = channel
        self._ref = bridge.new("RTCPeerConnection", conf,
                               desc={"connectionState": "new", "iceConnectionState": "new"})
        self._events = EventListeners()
        self._channels: list[Any] = []
        self._transceivers: dict[int, BrowserTransceiver] = {}
        self._closed = False
        self._offs = [
            self._ref.on("icecandidate", self._on_candidate, PC_PICKS["icecandidate"]),
            self._ref.on("datachannel", self._on_datachannel, PC_PICKS["datachannel"]),
            self._ref.on("connectionstatechange", self._on_connection_state),
            self._ref.on("iceconnectionstatechange",
                         lambda _v: self._events.fire("iceconnectionstatechange", self.ice_connection_state)),
            self._ref.on("track", self._on_track, PC_PICKS["track"]),
            # The page read the far end's certificate off the live DTLS transport (widget/bridge.js).
            self._ref.on("kbzremotecert", lambda _v: self._events.fire("remotefingerprint")),
        ]

    @property
    def raw(self) -> PageRef:
        """The page's ``RTCPeerConnection`` (tests and diagnostics)."""
        return self._ref

    @property
    def connection_state(self) -> str:
        return str(self._ref.desc.get("connectionState", "new"))

    @property
    def ice_connection_state(self) -> str:
        return str(self._ref.desc.get("iceConnectionState", "new"))

    def remote_fingerprint(self) -> str | None:
        """The SHA-256 (colon-hex) of the certificate the far end presented in the DTLS handshake,
        as the page read it with ``getRemoteCertificates()`` (never from SDP); None before."""
        fp = self._ref.desc.get("remoteFingerprint")
        return fp if isinstance(fp, str) and FINGERPRINT.match(fp) else None

    def remote_fingerprint_pending(self) -> bool:
        """The page keeps a certificate and reads the far end's (not yet): worth waiting for."""
        return self._certified and not self._closed and self.remote_fingerprint() is None

    async def create_offer(self) -> SessionDescription:
        desc = await self._ref.call("createOffer")
        return SessionDescription(str(desc["type"]), str(desc["sdp"]))

    async def create_answer(self) -> SessionDescription:
        desc = await self._ref.call("createAnswer")
        return SessionDescription(str(desc["type"]), str(desc["sdp"]))

    async def set_local_description(self, desc: SessionDescription) -> None:
        await self._ref.call("setLocalDescription", desc.to_json())

    async def set_remote_description(self, desc: SessionDescription) -> None:
        await self._ref.call("setRemoteDescription", desc.to_json())

    async def add_ice_candidate(self, candidate: IceCandidateInit | None) -> None:
        if candidate is None or not candidate.get("candidate"):
            await self._ref.call("addIceCandidate")  # end of candidates
            return
        await self._ref.call("addIceCandidate", {k: v for k, v in candidate.items() if v is not None})

    def create_data_channel(self, label: str, *, ordered: bool = True) -> ChannelSlot:
        slot = ChannelSlot(label)
        self._channels.append(slot)

        def arrived(ok: bool, value: Any) -> None:
            # In the task that delivered the channel (a transferred one dispatches its events here
            # from the next task on: a channel made on a live connection may open, and its peer
            # speak, before an asyncio callback would run).
            if ok:
                slot.bind(self._channel(value))

        made = self._ref.call("createDataChannel", label, {"ordered": ordered}, on_reply=arrived)

        def failed(fut: Any) -> None:
            if fut.cancelled() or fut.exception() is not None:
                log.warning("createDataChannel failed: %r", None if fut.cancelled() else fut.exception())
                slot.close()

        made.add_done_callback(failed)
        return slot

    def restart_ice(self) -> None:
        self._ref.fire("restartIce")

    def add_transceiver(
        self, kind: MediaKind, *, direction: TransceiverDirection = "sendrecv"
    ) -> BrowserTransceiver:
        ref = self._ref.call_ref("addTransceiver", kind, {"direction": direction},
                                 desc={"mid": None, "kind": kind, "direction": direction,
                                       "currentDirection": None})
        return self._wrap(ref)

    def get_transceivers(self) -> list[BrowserTransceiver]:
        """In m-line order (the page's last description), the same wrapper every time."""
        return [self._wrap(ref) for ref in self._ref.desc.get("transceivers") or ()
                if isinstance(ref, PageRef)]

    async def get_stats(self) -> list[dict[str, Any]]:
        """``getStats()`` entries as plain dicts with the W3C camelCase keys."""
        entries = await self._ref.call("getStats")
        return [dict(e) for e in entries or () if isinstance(e, dict)]

    def _wrap(self, ref: PageRef) -> BrowserTransceiver:
        wrapper = self._transceivers.get(ref.h)
        if wrapper is None:
            wrapper = self._transceivers[ref.h] = BrowserTransceiver(ref)
        return wrapper

    def _on_track(self, v: dict[str, Any]) -> None:
        track, raw_tr = v.get("track"), v.get("transceiver")
        if not isinstance(track, PageTrack):
            return
        transceiver = self._wrap(raw_tr) if isinstance(raw_tr, PageRef) else None
        mid = transceiver.mid if transceiver is not None else None
        self._events.fire("track", TrackEvent(kind=str(track.desc.get("kind", "")), track=track, mid=mid,
                                              transceiver=transceiver))

    def on(self, name: str, callback: EventCallback) -> None:
        self._events.on(name, callback)

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ref.fire("close")
        for off in self._offs:
            off()
        for channel in self._channels:
            channel.release()
        self._channels.clear()
        self._transceivers.clear()
        self._ref.desc.update(connectionState="closed", iceConnectionState="closed")

    def _on_candidate(self, v: dict[str, Any]) -> None:
        cand = v.get("candidate")
        if not isinstance(cand, dict) or not cand.get("candidate"):
            self._events.fire("icecandidate", None)
            return
        index, mid, ufrag = cand.get("sdpMLineIndex"), cand.get("sdpMid"), cand.get("usernameFragment")
        init: IceCandidateInit = {
            "candidate": str(cand["candidate"]),
            "sdpMid": None if mid is None else str(mid),
            "sdpMLineIndex": None if index is None else int(index),
            "usernameFragment": None if ufrag is None else str(ufrag),
        }
        self._events.fire("icecandidate", init)

    def _on_connection_state(self, _v: Any) -> None:
        state = self.connection_state
        if state == "connected":
            # Channels normally open within a round trip of this; look once they should have.
            loop = asyncio.get_event_loop()
            for delay in CATCH_UP_S:
                loop.call_later(delay, self._catch_up_channels)
        self._events.fire("connectionstatechange", state)

    def _catch_up_channels(self) -> None:
        if self._closed:
            return
        for channel in self._channels:
            catch_up = getattr(channel, "catch_up", None)
            if catch_up is not None:
                catch_up()

    def _on_datachannel(self, v: dict[str, Any]) -> None:
        channel = self._channel(v.get("channel"))
        if channel is None:
            return
        self._channels.append(channel)
        self._events.fire("datachannel", channel)


class BrowserPeerConnectionFactory:
    """:class:`~kibitz.backends.rtc_api.PeerConnectionFactory` for the engine's Worker (data and
    media). ``channel`` turns what the page sent for a data channel (a transferred channel, or a
    :class:`PageRef` to relay) into an adapter."""

    supports_media = True

    def __init__(self, bridge: Bridge, relay: ChannelRelay, channel: Callable[[Any], Any],
                 certificate_fp: str | None = None, *, reads_remote: bool = False) -> None:
        self.bridge = bridge
        self.relay = relay
        self._channel = channel
        self._fp = certificate_fp if certificate_fp and FINGERPRINT.match(certificate_fp) else None
        self._reads_remote = reads_remote

    def local_fingerprint(self) -> str | None:
        """The page's persistent certificate (IndexedDB) that every peer connection presents."""
        return self._fp

    def create(self, config: RtcConfig) -> BrowserPeerConnection:
        return BrowserPeerConnection(config, self.bridge, self.relay, self._channel,
                                     certified=self._fp is not None and self._reads_remote)


__all__ = [
    "PC_PICKS", "BrowserPeerConnection", "BrowserPeerConnectionFactory", "BrowserRtpReceiver",
    "BrowserRtpSender", "BrowserTransceiver", "ChannelRelay", "ChannelSlot", "RelayedDataChannel",
]
