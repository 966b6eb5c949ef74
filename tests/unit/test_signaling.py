"""The PeerJS client wire protocol (sans-I/O): golden frames out, tolerant parsing in."""

from __future__ import annotations

import json
import random
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kibitz.backends import signaling
from kibitz.backends.rtc_api import IceCandidateInit, SessionDescription
from kibitz.backends.signaling import (
    AnswerPayload,
    BrokerFrame,
    CandidatePayload,
    OfferPayload,
    parse_frame,
)
from kibitz.ids import PEER_ID_PATTERN
from kibitz.protocol.base import DropCounter

OFFER_SDP = SessionDescription("offer", "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n")
ANSWER_SDP = SessionDescription("answer", "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\n")
CAND = IceCandidateInit(
    candidate="candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
    sdpMid="0",
    sdpMLineIndex=0,
    usernameFragment="abcd",
)


def test_url_has_peerjs_query() -> None:
    url = signaling.signaling_url("ws://127.0.0.1:9000/", key="peerjs", peer_id="kbz-v1-room", token="t0k")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("ws", "127.0.0.1:9000", "/peerjs")
    assert parse_qs(parts.query) == {
        "key": ["peerjs"],
        "id": ["kbz-v1-room"],
        "token": ["t0k"],
        "version": [signaling.PEERJS_VERSION],
    }


def test_url_adds_slash_and_escapes_and_keeps_path() -> None:
    url = signaling.signaling_url("wss://h.example/broker", key="k y", peer_id="a b", token="t")
    assert url == "wss://h.example/broker/peerjs?key=k+y&id=a+b&token=t&version=1.5.5"


def test_url_rejects_http() -> None:
    with pytest.raises(ValueError, match="ws://"):
        signaling.signaling_url("http://127.0.0.1:9000/", key="peerjs", peer_id="a", token="t")


def test_tokens_and_connection_ids_are_seeded_and_shaped() -> None:
    assert signaling.new_token(random.Random(1)) == signaling.new_token(random.Random(1))
    cid = signaling.new_connection_id(random.Random(2))
    assert cid.startswith("dc_") and len(cid) == 15
    assert PEER_ID_PATTERN.match(signaling.new_token(random.Random(3)))


def test_golden_offer_frame() -> None:
    frame = signaling.offer_frame("bob", connection_id="dc_abc", sdp=OFFER_SDP, label="mesh")
    assert frame == (
        '{"type":"OFFER","dst":"bob","payload":{"sdp":{"type":"offer","sdp":"v=0\\r\\no=- 1 2 IN IP4 '
        '127.0.0.1\\r\\n"},"type":"data","connectionId":"dc_abc","label":"mesh","reliable":true,'
        '"serialization":"raw","metadata":null}}'
    )


def test_golden_answer_and_candidate_and_heartbeat_frames() -> None:
    assert signaling.answer_frame("alice", connection_id="dc_abc", sdp=ANSWER_SDP) == (
        '{"type":"ANSWER","dst":"alice","payload":{"sdp":{"type":"answer","sdp":"v=0\\r\\no=- 3 4 IN IP4 '
        '127.0.0.1\\r\\n"},"type":"data","connectionId":"dc_abc"}}'
    )
    assert signaling.candidate_frame("alice", connection_id="dc_abc", candidate=CAND) == (
        '{"type":"CANDIDATE","dst":"alice","payload":{"candidate":{"candidate":"candidate:1 1 udp '
        '2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"},'
        '"type":"data","connectionId":"dc_abc"}}'
    )
    assert json.loads(signaling.heartbeat_frame()) == {"type": "HEARTBEAT"}


def _as_relayed(frame: str, src: str) -> str:
    """What the broker forwards: our frame with ``src`` set by the broker."""
    obj = json.loads(frame)
    return json.dumps({"type": obj["type"], "src": src, "dst": obj["dst"], "payload": obj["payload"]})


def test_our_frames_parse_back() -> None:
    drops = DropCounter()
    offer = parse_frame(
        _as_relayed(signaling.offer_frame("bob", connection_id="dc_1", sdp=OFFER_SDP, label="mesh"), "alice"),
        drops,
    )
    assert offer == BrokerFrame(
        "OFFER", "alice", "bob", OfferPayload("dc_1", OFFER_SDP, "data", "mesh", True, "raw", None)
    )
    answer = parse_frame(
        _as_relayed(signaling.answer_frame("alice", connection_id="dc_1", sdp=ANSWER_SDP), "bob"), drops
    )
    assert answer == BrokerFrame("ANSWER", "bob", "alice", AnswerPayload("dc_1", ANSWER_SDP))
    cand = parse_frame(
        _as_relayed(signaling.candidate_frame("alice", connection_id="dc_1", candidate=CAND), "bob"), drops
    )
    assert cand == BrokerFrame("CANDIDATE", "bob", "alice", CandidatePayload("dc_1", CAND))
    assert drops.total == 0


def test_peerjs_browser_offer_parses() -> None:
    """A PeerJS 1.5.x DataConnection offer (default BinaryPack serialization, label = connectionId)."""
    raw = json.dumps(
        {
            "type": "OFFER",
            "src": "browser1",
            "dst": "agent1",
            "payload": {
                "sdp": {"type": "offer", "sdp": "v=0\r\n"},
                "type": "data",
                "connectionId": "dc_x7",
                "metadata": {"who": "me"},
                "label": "dc_x7",
                "reliable": True,
                "serialization": "binary",
            },
        }
    )
    frame = parse_frame(raw, DropCounter())
    assert frame is not None and isinstance(frame.payload, OfferPayload)
    assert frame.payload.serialization == "binary"
    assert frame.payload.metadata == {"who": "me"}
    assert frame.payload.label == "dc_x7"


def test_server_frames_parse() -> None:
    drops = DropCounter()
    assert parse_frame('{"type":"OPEN"}', drops) == BrokerFrame("OPEN")
    taken = parse_frame('{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}', drops)
    assert taken is not None and taken.message == "ID is taken"
    err = parse_frame('{"type":"ERROR","payload":{"msg":"Invalid key provided"}}', drops)
    assert err is not None and err.message == "Invalid key provided"
    assert parse_frame('{"type":"EXPIRE","src":"gone","dst":"me"}', drops) == BrokerFrame(
        "EXPIRE", "gone", "me"
    )
    assert parse_frame('{"type":"LEAVE","src":"gone","dst":"me"}', drops) == BrokerFrame(
        "LEAVE", "gone", "me"
    )
    assert parse_frame('{"type":"HEARTBEAT"}', drops) == BrokerFrame("HEARTBEAT")
    assert drops.total == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "broker:not-json"),
        (b"\xff\xfe", "broker:not-json"),
        ("[1,2]", "broker:not-object"),
        ('{"src":"a"}', "broker:no-type"),
        ('{"type":"DANCE"}', "broker:unknown-type"),
        ('{"type":"LEAVE"}', "broker:invalid:LEAVE"),
        ('{"type":"EXPIRE","src":5}', "broker:invalid:EXPIRE"),
        ('{"type":"OFFER","src":"a","payload":{"connectionId":"dc_1"}}', "broker:invalid:OFFER"),
        (
            '{"type":"OFFER","src":"a","payload":{"sdp":{"type":"answer","sdp":"v=0"},"connectionId":"c"}}',
            "broker:invalid:OFFER",
        ),
        (
            '{"type":"OFFER","payload":{"sdp":{"type":"offer","sdp":"v=0"},"connectionId":"c"}}',
            "broker:invalid:OFFER",
        ),
        (
            '{"type":"ANSWER","src":"a","payload":{"sdp":{"type":"answer","sdp":"v=0"}}}',
            "broker:invalid:ANSWER",
        ),
        (
            '{"type":"CANDIDATE","src":"a","payload":{"connectionId":"c","candidate":{"candidate":"x"}}}',
            "broker:invalid:CANDIDATE",
        ),
        (
            '{"type":"CANDIDATE","src":"a","payload":{"connectionId":"c","candidate":'
            '{"candidate":"x","sdpMLineIndex":true}}}',
            "broker:invalid:CANDIDATE",
        ),
        ("{" + " " * signaling.MAX_BROKER_FRAME + "}", "broker:oversize"),
    ],
)
def test_malformed_frames_are_dropped_and_counted(raw: str | bytes, reason: str) -> None:
    drops = DropCounter()
    assert parse_frame(raw, drops) is None
    assert drops.by_reason == {reason: 1}


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(json.dumps),
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(sorted(signaling.FRAME_TYPES)),
                "src": st.none() | st.text(max_size=5) | st.integers(),
                "payload": st.none()
                | st.dictionaries(
                    st.sampled_from(["sdp", "connectionId", "candidate", "label", "type", "msg"]),
                    st.none()
                    | st.text(max_size=5)
                    | st.integers()
                    | st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
                ),
            }
        ).map(json.dumps),
    )
)
def test_parse_never_raises_and_counts_every_drop(raw: str | bytes) -> None:
    drops = DropCounter()
    frame = parse_frame(raw, drops)
    assert (frame is None) == (drops.total == 1)
