"""Members who come and go leave nothing behind (issue 19: a long-lived member's memory stays flat
through churn). Real ``kibitz serve``, real aiortc, loopback only: a long-lived member stays in the
room while others join, link, send, and leave (cleanly or by dropping off), and after each one has
gone, nothing of it is alive in this process: no peer connection, DTLS/SCTP/ICE transport, link,
broker identity, mesh peer or stream more than after the first one left.

The soak (tests/e2e/test_churn.py, bench/soak_bench.py) measures RSS, which also moves with the
allocator and with what its harness records; this counts the objects a leak would be made of.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from server_fixture import KibitzServer

from kibitz.backends.aio import make_aio_transport
from kibitz.backends.rtc import RtcTransport
from kibitz.clock import AsyncioScheduler
from kibitz.session import Session

WATCHED = {
    "aiortc.rtcpeerconnection.RTCPeerConnection", "aiortc.rtcdtlstransport.RTCDtlsTransport",
    "aiortc.rtcsctptransport.RTCSctpTransport", "aiortc.rtcicetransport.RTCIceTransport",
    "aiortc.rtcdatachannel.RTCDataChannel", "aioice.ice.Connection",
    "kibitz.backends.rtc_links._Link", "kibitz.backends.rtc_broker._Identity",
    "kibitz.mesh._Peer", "kibitz.mesh_stream.PeerStream", "kibitz.session.Session",
}


def census() -> Counter[str]:
    gc.collect()
    return Counter(
        name for o in gc.get_objects()
        if (name := f"{getattr(type(o), '__module__', '')}.{type(o).__name__}") in WATCHED
    )


async def until(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


class Member:
    def __init__(self, srv: KibitzServer, room: str, name: str) -> None:
        self.transport: RtcTransport = make_aio_transport(srv.broker, key=srv.key, loopback_only=True)
        self.session = Session(room, transport=self.transport,
                               scheduler=AsyncioScheduler(asyncio.get_running_loop()), name=name)
        self.got: list[Any] = []
        self.session.on_message(lambda data, _frm: self.got.append(data))
        self.session.start()
        self.session.join()

    def sees(self, member: str) -> bool:
        return any(p["id"] == member and p["linkUp"] for p in self.session.get_participants())


async def churn_once(srv: KibitzServer, room: str, stay: Member, i: int) -> None:
    """One member joins, links to ``stay``, sends, and leaves: cleanly (even ``i``) or by dropping
    off (odd: its sockets closed, no goodbye frames)."""
    churner = Member(srv, room, f"C{i}")
    me, sent = churner.session.self_id, len(stay.got)
    await until(lambda: stay.sees(me) and churner.sees(stay.session.self_id), what=f"C{i} linked")
    churner.session.broadcast({"i": i, "pad": "x" * 2000})
    await until(lambda: len(stay.got) == sent + 1, what=f"C{i}'s message")
    if i == 0:  # the census sees what it watches (both ends live in this process)
        linked = census()
        missing = [k for k in WATCHED if linked[k] < (1 if k.endswith("Identity") else 2)]
        assert not missing, f"not counted while linked: {missing} in {linked}"
    churner.session.close()
    if i % 2 == 0:
        await churner.transport.shutdown()
    else:
        churner.transport.close_now()
    await until(lambda: not any(p["id"] == me for p in stay.session.get_participants()),
                what=f"C{i} gone from the roster")
    await until(lambda: stay.session.mesh.link_of(me) is None, what=f"C{i}'s link closed")


async def test_churners_leave_nothing_alive_behind(kibitz_server: KibitzServer) -> None:
    room = f"room-churn-mem-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    stay = Member(kibitz_server, room, "Stay")
    await until(lambda: stay.session.get_state()["isCoordinator"], what="the long-lived member")
    after: list[Counter[str]] = []
    for i in range(5):
        await churn_once(kibitz_server, room, stay, i)
        await asyncio.sleep(0.5)  # aiortc's own tasks wind down
        after.append(census())
    stay.session.close()
    await stay.transport.shutdown()
    first, last = after[0], after[-1]
    grown = {k: (first[k], last[k]) for k in WATCHED if last[k] > first[k]}
    # Relative, not absolute: earlier tests in this process may have left objects of their own.
    assert not grown, f"alive after the 1st and the 5th churner left (first, last): {grown}; all: {after}"
