"""Media lanes on RtcTransport links: real aiortc on loopback, real brokers (npm ``peer`` and ours).

What is pinned here: a media link always negotiates audio+video once (one OFFER, one ANSWER);
placeholders flow from the start; ``set_lane`` swaps tracks on the live link (tone, bigger video,
nothing, placeholder again) with no further signaling; one track can feed several links; presence
links carry no media.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame
from rtc_helpers import Events, uid

from kibitz.backends.aio import AioPeerConnectionFactory, connect_signaling
from kibitz.backends.aio_media import (
    BlackVideoTrack,
    FanoutRegistry,
    SenderLane,
    SilenceTrack,
    ToneTrack,
    TrackProbe,
    copy_frame,
    pcm_peak,
    placeholder_tracks,
)
from kibitz.backends.rtc import RtcTransport
from kibitz.backends.rtc_api import OnSignalingClose, OnSignalingMessage, RtcConfig, SignalingSocket
from kibitz.clock import AsyncioScheduler
from kibitz.transport import (
    PLACEHOLDER,
    ClaimResult,
    IncomingLink,
    LinkMessage,
    LinkOpened,
    MediaTransport,
    TrackArrived,
    TransportEvent,
)

TONE_PEAK = int(0.3 * 32767)


# ------------------------------------------------------------------------------------ rig


class SpySocket:
    """Passes frames through and records every frame we send to the broker."""

    def __init__(self, inner: SignalingSocket, sent: list[dict[str, Any]]) -> None:
        self._inner = inner
        self._sent = sent

    def send(self, text: str) -> None:
        self._sent.append(json.loads(text))
        self._inner.send(text)

    def close(self) -> None:
        self._inner.close()


@dataclass
class MPeer:
    transport: RtcTransport
    events: Events
    sent: list[dict[str, Any]] = field(default_factory=list)

    def sent_types(self, *kinds: str) -> list[str]:
        return [f["type"] for f in self.sent if f.get("type") in kinds]


@pytest.fixture
async def mpeers(broker_url: str) -> AsyncIterator[Callable[..., MPeer]]:
    made: list[MPeer] = []

    def make(media_labels: frozenset[str] = frozenset({"kbz-data"})) -> MPeer:
        sent: list[dict[str, Any]] = []

        async def spy_connect(
            url: str, on_message: OnSignalingMessage, on_close: OnSignalingClose
        ) -> SpySocket:
            return SpySocket(await connect_signaling(url, on_message, on_close), sent)

        t = RtcTransport(
            AioPeerConnectionFactory(loopback_only=True),
            spy_connect,
            broker_url=broker_url,
            rtc_config=RtcConfig(),
            scheduler=AsyncioScheduler(asyncio.get_running_loop()),
            open_timeout_s=8.0,
            placeholder_tracks=placeholder_tracks,
            media_labels=media_labels,
        )
        ev = Events()
        t.bind(ev)
        peer = MPeer(t, ev, sent)
        made.append(peer)
        return peer

    yield make
    for p in made:
        await p.transport.shutdown()


async def until(events: Events, done: Callable[[list[TransportEvent]], bool], timeout: float = 8.0) -> None:
    """Consume events until ``done(all events so far)``; they stay in ``events.seen``."""

    async def loop() -> None:
        while not done(events.seen):
            await events.queue.get()

    await asyncio.wait_for(loop(), timeout)


def tracks(events: Events, link: str) -> dict[str, Any]:
    return {e.lane: e.track for e in events.seen if isinstance(e, TrackArrived) and e.link == link}


async def claim(*pairs: tuple[MPeer, str]) -> None:
    for p, pid in pairs:
        p.transport.claim(pid)
    for p, pid in pairs:
        await until(p.events, lambda seen, pid=pid: ClaimResult(pid, "claimed") in seen)


async def media_link(a: MPeer, ida: str, b: MPeer, idb: str, label: str = "kbz-data") -> tuple[str, str]:
    """Dial a→b and wait until both sides are open and (for media) have both remote tracks."""
    link_a = a.transport.dial(ida, idb, label)
    await until(b.events, lambda seen: any(isinstance(e, IncomingLink) and e.remote_id == ida for e in seen))
    link_b = next(e.link for e in b.events.seen if isinstance(e, IncomingLink) and e.remote_id == ida)
    want = 2 if label == "kbz-data" else 0
    for p, link in ((a, link_a), (b, link_b)):
        await until(p.events, lambda seen, link=link: LinkOpened(link) in seen)
        await until(p.events, lambda _seen, p=p, link=link: len(tracks(p.events, link)) == want)
    return link_a, link_b


async def inbound(t: RtcTransport, link: str, kind: str) -> int:
    stats = await t.link_stats(link)
    return sum(
        s.get("packetsReceived", 0) for s in stats if s.get("type") == "inbound-rtp" and s.get("kind") == kind
    )


# ------------------------------------------------------------------------------ network tests


async def test_lanes_placeholders_and_swaps_never_renegotiate(mpeers: Callable[..., MPeer]) -> None:
    a, b = mpeers(), mpeers()
    assert isinstance(a.transport, MediaTransport)
    ida, idb = uid("a"), uid("b")
    await claim((a, ida), (b, idb))
    link_a, link_b = await media_link(a, ida, b, idb)

    # TrackArrived comes after LinkOpened, one per lane, on both sides.
    for p, link in ((a, link_a), (b, link_b)):
        kinds = [
            (type(e).__name__, getattr(e, "lane", ""))
            for e in p.events.seen
            if getattr(e, "link", None) == link and not isinstance(e, IncomingLink)
        ]
        assert kinds[0] == ("LinkOpened", "") and sorted(kinds[1:]) == [
            ("TrackArrived", "audio"),
            ("TrackArrived", "video"),
        ]
    offer = next(f for f in a.sent if f["type"] == "OFFER")["payload"]["sdp"]["sdp"]
    assert [ln.split()[0] for ln in offer.splitlines() if ln.startswith("m=")] == [
        "m=audio",
        "m=video",
        "m=application",
    ]
    assert offer.count("a=sendrecv") == 2

    at_b, at_a = tracks(b.events, link_b), tracks(a.events, link_a)
    b_audio, b_video, a_video = (
        TrackProbe(at_b["audio"]),
        TrackProbe(at_b["video"]),
        TrackProbe(at_a["video"]),
    )
    try:
        # Placeholders flow before any set_lane: 2x2 black video, silent audio, both ways.
        await b_video.wait_for(lambda p: p.frames >= 3)
        await a_video.wait_for(lambda p: p.frames >= 3)
        assert b_video.size == (2, 2) and a_video.size == (2, 2)
        await b_audio.wait_for(lambda p: p.frames >= 3)  # silence is paced like DTX: 2.5 frames/s
        assert b_audio.loud_frames == 0 and b_audio.last_peak == 0

        # A's mic on: B hears the tone. B's camera on: A sees the bigger frames.
        tone = ToneTrack()
        a.transport.set_lane(link_a, "audio", tone)
        b.transport.set_lane(link_b, "video", BlackVideoTrack(32, 24, fps=10))
        await b_audio.wait_for(lambda p: p.loud_frames >= 10)
        assert TONE_PEAK * 0.6 < b_audio.last_peak < TONE_PEAK * 1.4
        await a_video.wait_for(lambda p: p.size == (32, 24))

        # A withholds audio entirely: B's inbound audio packets stop; video keeps flowing.
        a.transport.set_lane(link_a, "audio", None)
        await asyncio.sleep(0.3)  # in-flight packets land
        audio0, video0 = (
            await inbound(b.transport, link_b, "audio"),
            await inbound(b.transport, link_b, "video"),
        )
        await asyncio.sleep(0.6)
        assert audio0 > 0 and await inbound(b.transport, link_b, "audio") == audio0
        assert await inbound(b.transport, link_b, "video") > video0

        # Back to the placeholder: packets again, silent.
        a.transport.set_lane(link_a, "audio", PLACEHOLDER)
        # (aiortc's jitter buffer still holds the last few tone packets; they come out first.)
        await b_audio.wait_for(lambda p: p.last_peak == 0)
        loud = b_audio.loud_frames
        await asyncio.sleep(0.3)
        assert await inbound(b.transport, link_b, "audio") > audio0 and b_audio.loud_frames == loud
        assert tone.readyState == "live"  # the transport never stops a track it was handed
    finally:
        for probe in (b_audio, b_video, a_video):
            await probe.close()

    # Exactly one offer and one answer for the whole life of the link.
    assert a.sent_types("OFFER", "ANSWER") == ["OFFER"]
    assert b.sent_types("OFFER", "ANSWER") == ["ANSWER"]


async def test_set_lane_before_open_is_applied_when_lanes_exist(mpeers: Callable[..., MPeer]) -> None:
    a, b = mpeers(), mpeers()
    ida, idb = uid("a"), uid("b")
    await claim((a, ida), (b, idb))
    link_a = a.transport.dial(ida, idb, "kbz-data")
    a.transport.set_lane(link_a, "audio", ToneTrack(660))  # before the offer even exists
    a.transport.set_lane(link_a, "video", BlackVideoTrack(4, 4))
    a.transport.set_lane(link_a, "video", BlackVideoTrack(16, 16))  # last call wins
    await until(b.events, lambda seen: any(isinstance(e, IncomingLink) for e in seen))
    link_b = next(e.link for e in b.events.seen if isinstance(e, IncomingLink))
    b.transport.set_lane(link_b, "video", BlackVideoTrack(8, 8))  # answerer, before open
    assert LinkOpened(link_b) not in b.events.seen
    await until(b.events, lambda _s: len(tracks(b.events, link_b)) == 2)
    await until(a.events, lambda _s: len(tracks(a.events, link_a)) == 2)
    probes = [
        TrackProbe(tracks(b.events, link_b)["audio"]),
        TrackProbe(tracks(b.events, link_b)["video"]),
        TrackProbe(tracks(a.events, link_a)["video"]),
    ]
    try:
        await probes[0].wait_for(lambda p: p.loud_frames >= 5)
        await probes[1].wait_for(lambda p: p.size == (16, 16))
        await probes[2].wait_for(lambda p: p.size == (8, 8))
        # A track the lane cannot carry is counted and logged; the link and the lane survive it.
        a.transport.set_lane(link_a, "audio", BlackVideoTrack())
        await asyncio.sleep(0.05)  # (back to back, only the last call would be applied)
        a.transport.set_lane(link_a, "audio", "not a track")
        await asyncio.sleep(0.05)
        assert a.transport.drops.by_reason["media:replace-track-failed"] == 2
        a.transport.send(link_a, "still here")
        await until(b.events, lambda seen: LinkMessage(link_b, "still here") in seen)
        a.transport.set_lane(link_a, "audio", SilenceTrack())
        await probes[0].wait_for(lambda p: p.last_peak == 0)
    finally:
        for probe in probes:
            await probe.close()
    assert a.sent_types("OFFER", "ANSWER") == ["OFFER"] and b.sent_types("OFFER", "ANSWER") == ["ANSWER"]


async def test_one_track_feeds_several_links_at_full_rate(mpeers: Callable[..., MPeer]) -> None:
    a, b, c = mpeers(), mpeers(), mpeers()
    ida, idb, idc = uid("a"), uid("b"), uid("c")
    await claim((a, ida), (b, idb), (c, idc))
    ab, ba = await media_link(a, ida, b, idb)
    ac, ca = await media_link(a, ida, c, idc)
    voice = ToneTrack()
    a.transport.set_lane(ab, "audio", voice)
    a.transport.set_lane(ac, "audio", voice)
    at_b, at_c = TrackProbe(tracks(b.events, ba)["audio"]), TrackProbe(tracks(c.events, ca)["audio"])
    try:
        await at_b.wait_for(lambda p: p.loud_frames >= 3)
        await at_c.wait_for(lambda p: p.loud_frames >= 3)
        b0, c0 = at_b.loud_frames, at_c.loud_frames
        await asyncio.sleep(1.0)
        # 20 ms frames: about 50 per second on EACH link (a naive shared track would split them).
        assert at_b.loud_frames - b0 >= 40 and at_c.loud_frames - c0 >= 40
        a.transport.close(ac)
        # The voice keeps flowing to B (the fan-out dropped C's lane, not the source).
        b1 = at_b.loud_frames
        await at_b.wait_for(lambda p: p.loud_frames >= b1 + 25, timeout=2.0)
        assert voice.readyState == "live"
    finally:
        await at_b.close()
        await at_c.close()


async def test_presence_links_carry_no_media(mpeers: Callable[..., MPeer]) -> None:
    a, b = mpeers(), mpeers()
    ida, idb = uid("a"), uid("b")
    await claim((a, ida), (b, idb))
    link_a, link_b = await media_link(a, ida, b, idb, label="kbz-presence")
    a.transport.set_lane(link_a, "audio", ToneTrack())  # ignored, no error
    offer = next(f for f in a.sent if f["type"] == "OFFER")["payload"]["sdp"]["sdp"]
    assert [ln.split()[0] for ln in offer.splitlines() if ln.startswith("m=")] == ["m=application"]
    await asyncio.sleep(0.3)
    assert not [e for e in a.events.seen + b.events.seen if isinstance(e, TrackArrived)]
    for t, link in ((a.transport, link_a), (b.transport, link_b)):
        assert not [s for s in await t.link_stats(link) if s.get("type") in ("inbound-rtp", "outbound-rtp")]
    with pytest.raises(ValueError):
        a.transport.set_lane(link_a, cast(Any, "screen"), None)


async def test_answerer_refuses_media_offered_on_a_non_media_label(mpeers: Callable[..., MPeer]) -> None:
    """A dialer that offers media on ``kbz-presence`` gets both m-sections answered inactive."""
    a, b = mpeers(frozenset({"kbz-data", "kbz-presence"})), mpeers()
    ida, idb = uid("a"), uid("b")
    await claim((a, ida), (b, idb))
    link_a = a.transport.dial(ida, idb, "kbz-presence")
    a.transport.set_lane(link_a, "audio", ToneTrack())
    await until(b.events, lambda seen: any(isinstance(e, LinkOpened) for e in seen))
    await until(a.events, lambda seen: LinkOpened(link_a) in seen)
    link_b = next(e.link for e in b.events.seen if isinstance(e, IncomingLink))
    answer = next(f for f in b.sent if f["type"] == "ANSWER")["payload"]["sdp"]["sdp"]
    assert answer.count("a=inactive") == 2 and "a=sendrecv" not in answer
    await asyncio.sleep(0.4)
    assert not [e for e in a.events.seen + b.events.seen if isinstance(e, TrackArrived)]
    assert await inbound(b.transport, link_b, "audio") == 0


# -------------------------------------------------------------------------- aio media, no network


async def test_sender_lane_restamps_continuously_across_swaps() -> None:
    lane = SenderLane("audio", FanoutRegistry())
    tone, silence = ToneTrack(), SilenceTrack()
    lane.set_source(tone)
    stamps = [(await lane.recv()).pts for _ in range(3)]
    lane.set_source(silence)  # a fresh source: its own pts start again at 0
    frame = await lane.recv()
    stamps.append(frame.pts)
    assert pcm_peak(frame) == 0
    assert all(later > earlier for earlier, later in itertools.pairwise(stamps))
    assert stamps[1] - stamps[0] == 960  # 20 ms at 48 kHz within one source
    with pytest.raises(ValueError):
        lane.set_source(BlackVideoTrack())
    lane.stop()
    assert tone.readyState == "live" and silence.readyState == "live"


async def test_tone_copy_and_fanout_share_one_read() -> None:
    registry = FanoutRegistry()
    tone: MediaStreamTrack = ToneTrack(amplitude=0.5)
    one, two = SenderLane("audio", registry), SenderLane("audio", registry)
    one.set_source(tone)
    two.set_source(tone)
    assert len(registry) == 1
    f1, f2 = await one.recv(), await two.recv()
    assert isinstance(f1, AudioFrame) and f1 is not f2  # shared frames are copied before restamping
    assert bytes(f1.planes[0])[: 2 * f1.samples] == bytes(f2.planes[0])[: 2 * f2.samples]
    assert abs(pcm_peak(f1) - int(0.5 * 32767)) <= 1
    copied = copy_frame(f1)
    assert copied is not f1 and pcm_peak(copied) == pcm_peak(f1)
    one.stop()
    two.stop()
    assert len(registry) == 0 and tone.readyState == "live"


async def test_silent_placeholder_is_paced_like_dtx() -> None:
    from kibitz.backends.aio_media import DTX_INTERVAL_S, SilenceTrack

    track = SilenceTrack()
    t0 = time.monotonic()
    frames = [await track.recv() for _ in range(3)]
    took = time.monotonic() - t0
    assert 1.5 * DTX_INTERVAL_S <= took < 4 * DTX_INTERVAL_S  # two waits, not 50 frames a second
    stride = int(48_000 * DTX_INTERVAL_S)
    assert [f.pts for f in frames] == [0, stride, 2 * stride]  # timestamps skip the gaps
    assert all(f.samples == 960 and not any(bytes(f.planes[0])) for f in frames)  # 20 ms of silence
    track.stop()
