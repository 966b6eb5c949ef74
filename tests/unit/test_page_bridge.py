"""The engine's end of the page bridge (kibitz.backends.page_bridge, page_rtc, page_media) under
CPython: the messages it sends, and what it makes of the page's answers. The page's end
(widget/bridge.js) runs in the e2e tests; here a test plays the page by hand."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import pytest

from kibitz.backends import page_rtc
from kibitz.backends.page_bridge import Bridge, PageError, PageRef, PageTrack
from kibitz.backends.page_media import BrowserMedia, PageMeter, PageStreams, placeholder_tracks
from kibitz.backends.page_rtc import (
    BrowserPeerConnection,
    ChannelRelay,
    ChannelSlot,
    RelayedDataChannel,
)
from kibitz.backends.rtc_api import RtcConfig, SessionDescription, TrackEvent


class Page:
    """Collects what the engine posts; answers by hand."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.bridge = Bridge(lambda text: self.sent.append(json.loads(text)))

    def last(self, t: str | None = None) -> dict[str, Any]:
        return [m for m in self.sent if t is None or m["t"] == t][-1]

    def reply(self, msg: dict[str, Any], value: Any = None, *, ok: bool = True, d: Any = None,
              extras: Any = None) -> None:
        body: dict[str, Any] = {"t": "reply", "id": msg["id"], "ok": ok}
        body["v" if ok else "e"] = value
        if d is not None:
            body["d"] = d
        self.bridge.receive(json.dumps(body), extras)

    def event(self, listener: dict[str, Any], v: Any, d: Any = None) -> None:
        body = {"t": "event", "id": listener["id"], "v": v}
        if d is not None:
            body["d"] = d
        self.bridge.receive(json.dumps(body))


async def test_calls_resolve_reject_and_keep_order() -> None:
    page = Page()
    obj = page.bridge.new("MediaStream")
    assert page.last() == {"t": "new", "h": obj.h, "ctor": "MediaStream", "args": []}
    got = obj.call("getTracks")
    failed = obj.call("nope", 1, None)
    obj.fire("stop")
    sub = obj.call_ref("clone")
    msgs = page.sent[1:]
    assert [m["t"] for m in msgs] == ["call"] * 4
    assert msgs[1]["args"] == [1, None] and "id" not in msgs[2] and msgs[3]["ret"] == sub.h
    page.reply(msgs[0], [1, 2])
    page.reply(msgs[1], ["NotAllowedError", "Permission denied"], ok=False)
    assert await got == [1, 2]
    with pytest.raises(PageError) as err:
        await failed
    assert err.value.name == "NotAllowedError" and err.value.message == "Permission denied"
    assert str(err.value) == "NotAllowedError: Permission denied"


async def test_references_are_one_object_per_handle_and_are_dropped_with_their_count() -> None:
    page = Page()
    probe = page.bridge.root.call("captureTrack", "mic")
    page.reply(page.last(), {"$ref": -3, "$t": "track",
                             "$d": {"kind": "audio", "id": "t1", "readyState": "live"}})
    track = await probe
    assert isinstance(track, PageTrack) and track.kind == "audio" and track.id == "t1"
    again = page.bridge.decode({"$ref": -3, "$t": "track", "$d": {"kind": "audio", "readyState": "ended"}})
    assert again is track and track.ready_state == "ended"
    # Encoded back as a handle, never as data.
    page.bridge.root.fire("setStreamTrack", None, "audio", track)
    assert page.last()["args"] == [None, "audio", {"$ref": -3}]
    del track, again, probe  # (the future held the result too)
    gc.collect()
    assert page.last() == {"t": "drop", "h": -3, "n": 2}  # sent twice by the page: both seen
    assert page.bridge.live == 0


async def test_events_carry_values_and_refresh_the_target() -> None:
    page = Page()
    pc = page.bridge.new("RTCPeerConnection", {}, desc={"connectionState": "new"})
    heard: list[dict[str, Any]] = []
    off = pc.on("connectionstatechange", heard.append)
    on = page.last("on")
    assert on == {"t": "on", "h": pc.h, "type": "connectionstatechange", "pick": [], "id": on["id"]}
    page.event(on, {}, {"connectionState": "connected"})
    assert heard == [{}] and pc.desc == {"connectionState": "connected"}
    off()
    off()
    assert [m for m in page.sent if m["t"] == "off"] == [{"t": "off", "id": on["id"]}]
    page.event(on, {}, {"connectionState": "closed"})  # late: nobody listens any more
    assert heard == [{}]


async def test_callbacks_and_bad_messages() -> None:
    page = Page()
    levels: list[Any] = []
    meter = PageMeter(page.bridge, levels.append)
    made = page.last()
    assert made["m"] == "levelMeter" and list(made["args"][0]) == ["$cb"] and made["args"][1] == 100
    cb_id = made["args"][0]["$cb"]
    page.bridge.receive(json.dumps({"t": "cb", "id": cb_id, "args": [{"k": 0.5}]}))
    assert levels == [{"k": 0.5}]
    meter.stop()
    page.bridge.receive(json.dumps({"t": "cb", "id": cb_id, "args": [{"k": 0.9}]}))
    assert levels == [{"k": 0.5}]  # released with the meter
    for bad in ("not json", "[]", '{"t":"who"}', '{"t":"reply"}', '{"t":"event","id":"x"}'):
        page.bridge.receive(bad)
    assert page.bridge.errors == 5
    with pytest.raises(TypeError):
        page.bridge.root.fire("send", b"bytes do not cross as JSON")


async def test_a_closed_bridge_fails_what_waits() -> None:
    page = Page()
    waiting = page.bridge.root.call("captureTrack", "cam")
    page.bridge.close()
    with pytest.raises(PageError, match="closed"):
        await waiting
    with pytest.raises(PageError):
        await page.bridge.root.call("captureTrack", "cam")


# ------------------------------------------------------------------ peer connection adapter


def make_pc(page: Page, channels: list[Any]) -> BrowserPeerConnection:
    relay = ChannelRelay(lambda h, data: channels.append(("sent", h, data)))

    def channel(value: Any) -> Any:
        if isinstance(value, PageRef):
            return RelayedDataChannel(value, relay)
        channels.append(("native", value))
        return value

    pc = BrowserPeerConnection(RtcConfig(ice_servers=({"urls": "stun:x"},)), page.bridge, relay, channel)
    pc.relay = relay  # type: ignore[attr-defined]
    return pc


def listener(page: Page, pc: BrowserPeerConnection, event: str) -> dict[str, Any]:
    return next(m for m in page.sent if m["t"] == "on" and m["type"] == event and m["h"] == pc.raw.h)


async def test_offer_answer_and_candidates_cross_as_json() -> None:
    page, channels = Page(), []
    pc = make_pc(page, channels)
    made = page.sent[0]
    assert made["ctor"] == "RTCPeerConnection"
    assert made["args"] == [{"iceServers": [{"urls": "stun:x"}], "iceTransportPolicy": "all"}]
    assert {m["type"]: m["pick"] for m in page.sent if m["t"] == "on"} == {
        "icecandidate": ["candidate"], "datachannel": ["channel"], "connectionstatechange": [],
        "iceconnectionstatechange": [], "track": ["track", "transceiver"], "kbzremotecert": []}
    offer = asyncio.ensure_future(pc.create_offer())
    await asyncio.sleep(0)
    page.reply(page.last("call"), {"type": "offer", "sdp": "v=0"})
    assert await offer == SessionDescription("offer", "v=0")
    setting = asyncio.ensure_future(pc.set_remote_description(SessionDescription("answer", "v=1")))
    await asyncio.sleep(0)
    call = page.last("call")
    assert call["m"] == "setRemoteDescription" and call["args"] == [{"type": "answer", "sdp": "v=1"}]
    page.reply(call, None, d={"connectionState": "connecting", "iceConnectionState": "checking",
                              "transceivers": []})
    await setting
    assert pc.connection_state == "connecting" and pc.ice_connection_state == "checking"
    cands: list[Any] = []
    pc.on("icecandidate", cands.append)
    ice = listener(page, pc, "icecandidate")
    page.event(ice, {"candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host",
                                   "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": None}})
    page.event(ice, {"candidate": None})
    assert cands == [{"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0",
                      "sdpMLineIndex": 0, "usernameFragment": None}, None]
    adding = asyncio.ensure_future(pc.add_ice_candidate({"candidate": "c", "sdpMid": "0",
                                                         "usernameFragment": None}))
    await asyncio.sleep(0)
    assert page.last("call")["args"] == [{"candidate": "c", "sdpMid": "0"}]
    page.reply(page.last("call"), None)
    await adding
    pc.close_now()
    pc.close_now()
    assert [m["m"] for m in page.sent if m["t"] == "call"].count("close") == 1
    assert pc.connection_state == "closed"


async def test_transceivers_are_stable_wrappers_described_by_the_page() -> None:
    page, channels = Page(), []
    pc = make_pc(page, channels)
    audio = pc.add_transceiver("audio")
    add, sender = page.sent[-2], page.sent[-1]
    assert add["m"] == "addTransceiver" and add["args"] == ["audio", {"direction": "sendrecv"}]
    assert sender == {"t": "get", "h": add["ret"], "p": "sender", "ret": sender["ret"]}
    assert audio.kind == "audio" and audio.mid is None and audio.direction == "sendrecv"
    audio.direction = "inactive"
    assert page.last() == {"t": "set", "h": add["ret"], "p": "direction", "v": "inactive"}
    # The page describes the connection: our transceiver by its handle, and one the offer made.
    desc = {"connectionState": "new", "transceivers": [
        {"$ref": add["ret"], "$t": "transceiver", "$d": {"mid": "0", "kind": "audio", "direction": "inactive",
                                                          "currentDirection": None}},
        {"$ref": -9, "$t": "transceiver", "$d": {
            "mid": "1", "kind": "video", "direction": "recvonly", "currentDirection": "recvonly",
            "track": {"$ref": -10, "$t": "track", "$d": {"kind": "video"}}}}]}
    getting = asyncio.ensure_future(pc.get_stats())
    await asyncio.sleep(0)
    stats = [{"type": "inbound-rtp", "kind": "video", "packetsReceived": 3}, "junk"]
    page.reply(page.last("call"), stats, d=desc)
    assert await getting == [{"type": "inbound-rtp", "kind": "video", "packetsReceived": 3}]
    first, second = pc.get_transceivers()
    assert first is audio and audio.mid == "0"
    assert second.kind == "video" and second.current_direction == "recvonly"
    assert pc.get_transceivers()[1] is second
    assert isinstance(second.receiver.track, PageTrack)
    replacing = asyncio.ensure_future(audio.sender.replace_track(None))
    await asyncio.sleep(0)
    assert page.last("call")["m"] == "replaceTrack" and page.last("call")["args"] == [None]
    page.reply(page.last("call"), None)
    await replacing
    tracks: list[TrackEvent] = []
    pc.on("track", tracks.append)
    page.event(listener(page, pc, "track"), {
        "track": {"$ref": -10, "$t": "track", "$d": {"kind": "video", "readyState": "live"}},
        "transceiver": {"$ref": -9, "$t": "transceiver", "$d": {"mid": "1", "kind": "video"}}})
    assert len(tracks) == 1 and tracks[0].kind == "video" and tracks[0].mid == "1"
    assert tracks[0].transceiver is second and isinstance(tracks[0].track, PageTrack)


async def test_a_new_channel_is_bound_when_it_arrives_transferred_or_relayed() -> None:
    page, channels = Page(), []
    pc = make_pc(page, channels)
    slot = pc.create_data_channel("dc_1")
    assert isinstance(slot, ChannelSlot) and slot.ready_state == "connecting" and slot.label == "dc_1"
    heard: list[str] = []
    slot.on("open", lambda: heard.append("open"))
    with pytest.raises(RuntimeError):
        slot.send("too early")
    made = page.last("call")
    assert made["m"] == "createDataChannel" and made["args"] == ["dc_1", {"ordered": True}]

    class Native:  # stands in for a transferred RTCDataChannel's adapter
        ready_state = "connecting"
        label = "dc_1"

        def __init__(self) -> None:
            self.on_calls: list[str] = []

        def on(self, name: str, cb: Any) -> None:
            self.on_calls.append(name)

    native = Native()
    page.reply(made, {"$dc": 0}, extras=[native])
    # Bound in the task that delivered it, with no loop turn in between: a transferred channel
    # dispatches its events from the next task on, and one made on a live connection (the LAN
    # hub's identity channels) may open and hear its peer before an asyncio callback runs.
    assert slot.bound is native and native.on_calls == ["open"] and channels == [("native", native)]

    # A page that could not make it: the slot closes.
    failing = pc.create_data_channel("dc_x")
    page.reply(page.last("call"), ["OperationError", "no"], ok=False)
    await asyncio.sleep(0)
    assert failing.ready_state == "closed" and failing.bound is None

    # The answerer's side: a relayed channel from a datachannel event.
    got: list[Any] = []
    pc.on("datachannel", got.append)
    page.event(listener(page, pc, "datachannel"),
               {"channel": {"$ref": -4, "$t": "dc", "$d": {"label": "dc_2", "readyState": "connecting"}}})
    [relayed] = got
    assert isinstance(relayed, RelayedDataChannel) and relayed.label == "dc_2"
    events: list[Any] = []
    relayed.on("open", lambda: events.append("open"))
    relayed.on("message", events.append)
    relayed.on("close", lambda: events.append("close"))
    relay: ChannelRelay = pc.relay  # type: ignore[attr-defined]
    relay.event(-4, "open", {"readyState": "open", "bufferedAmount": 0})
    relay.message(-4, "hi")
    relayed.send("hello")
    relayed.send(b"\x00\x01")
    assert channels[-2:] == [("sent", -4, "hello"), ("sent", -4, b"\x00\x01")]
    assert relayed.buffered_amount == 7  # nothing reported yet: all of it is still ours
    relay.event(-4, "state", {"bufferedAmount": 2, "sent": 5})
    assert relayed.buffered_amount == 4
    relay.event(-4, "close", {"readyState": "closed"})
    assert events == ["open", "hi", "close"] and relayed.ready_state == "closed"
    relay.message(-4, "after close")
    assert events[-1] == "close"
    with pytest.raises(RuntimeError):
        relayed.send("closed")


async def test_open_channels_that_said_nothing_are_caught_up_after_connected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transferred channel's ``open`` can be lost crossing threads: once the connection says
    ``connected``, each channel is asked to catch up (on the timers of CATCH_UP_S), and not once
    the connection is closed."""
    monkeypatch.setattr(page_rtc, "CATCH_UP_S", (0.01, 0.02))
    page, channels = Page(), []
    pc = make_pc(page, channels)
    pc.create_data_channel("dc_1")

    class Native:
        ready_state = "connecting"
        label = "dc_1"
        caught = 0

        def on(self, name: str, cb: Any) -> None:
            pass

        def catch_up(self) -> None:
            self.caught += 1

        def release(self) -> None:
            pass

    native = Native()
    page.reply(page.last("call"), {"$dc": 0}, extras=[native])
    states: list[str] = []
    pc.on("connectionstatechange", states.append)
    change = listener(page, pc, "connectionstatechange")
    page.event(change, None, d={"connectionState": "connecting"})
    await asyncio.sleep(0.05)
    assert native.caught == 0  # not connected yet: nothing to catch up
    page.event(change, None, d={"connectionState": "connected"})
    assert states == ["connecting", "connected"]
    await asyncio.sleep(0.05)
    assert native.caught == 2
    page.event(change, None, d={"connectionState": "connected"})
    pc.close_now()
    await asyncio.sleep(0.05)
    assert native.caught == 2


async def test_media_goes_to_the_page_shim() -> None:
    page = Page()
    changes: list[int] = []
    media = BrowserMedia(page.bridge, on_change=lambda: changes.append(1))
    getting = asyncio.ensure_future(media.acquire("screen"))
    await asyncio.sleep(0)
    ask = page.last("call")
    assert ask["h"] == 0 and ask["m"] == "captureTrack" and ask["args"] == ["screen"]
    page.reply(ask, {"$ref": -2, "$t": "track", "$d": {"kind": "video", "readyState": "live"}})
    track = await getting
    ended: list[int] = []
    media.on_screen_ended = lambda: ended.append(1)
    page.event(page.last("on"), {})
    assert ended == [1] and changes == [1] and media.tracks == {"screen": track}
    media.release("screen")
    assert [m for m in page.sent if m["t"] == "off"] and page.sent[-1]["m"] == "stop"
    stream = PageStreams(page.bridge)
    s = stream.new()
    stream.set_track(s, "video", None)
    assert page.sent[-2]["ctor"] == "MediaStream" and page.sent[-1]["args"] == [{"$ref": s.h}, "video", None]
    made = placeholder_tracks(page.bridge)
    assert set(made) == {"audio", "video"} and all(isinstance(t, PageTrack) for t in made.values())
    assert [m["args"] for m in page.sent[-2:]] == [["audio"], ["video"]]
    made["audio"].stop()
    assert page.last() == {"t": "call", "h": made["audio"].h, "m": "stop", "args": []}
