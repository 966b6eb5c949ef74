"""Content messages: golden wire vectors, limits, unknown kinds, and a fuzz that never raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kibitz.capabilities import AGENT_DEFAULT, Grant
from kibitz.protocol.base import DropCounter
from kibitz.protocol.content import (
    CONTENT_FAMILY,
    MAX_APP_BYTES,
    App,
    Caps,
    Chat,
    IdToken,
    Schema,
    decode_content,
    encode_content,
    to_wire,
)

GOLDEN = [
    (Chat(text="hi"), '{"k":"chat","text":"hi"}'),
    (Chat(text="psst", dm=True), '{"k":"chat","text":"psst","dm":true}'),
    (App(data={"kind": "route", "route": "#/b"}), '{"k":"app","data":{"kind":"route","route":"#/b"}}'),
    (App(data=None), '{"k":"app","data":null}'),
    (App(data=[1, "é"]), '{"k":"app","data":[1,"é"]}'),
    (IdToken(jwt="a.b.c"), '{"k":"idtoken","jwt":"a.b.c"}'),
    (
        Caps(grants={"kbz-m-x": AGENT_DEFAULT}, v=3, by="kbz-m-h"),
        '{"k":"caps","grants":{"kbz-m-x":{"perceive":["read-chat","read-roster","receive-directed"],'
        '"act":[],"egress":false}},"v":3,"by":"kbz-m-h"}',
    ),
    (
        Caps(grants={"a": Grant(act={"speak"}, backend="m1", egress=True, expires_at=5)}, v=1, by="a"),
        '{"k":"caps","grants":{"a":{"perceive":[],"act":["speak"],"backend":"m1","egress":true,'
        '"expiresAt":5.0}},"v":1,"by":"a"}',
    ),
    (Schema(name="board", version="2", schema={"type": "object"}),
     '{"k":"schema","name":"board","version":"2","schema":{"type":"object"}}'),
]


@pytest.mark.parametrize(("msg", "wire"), GOLDEN)
def test_golden_vectors_round_trip(msg: object, wire: str) -> None:
    assert encode_content(msg) == wire  # type: ignore[arg-type]
    drops = DropCounter()
    assert decode_content(wire, drops) == msg
    assert decode_content(json.loads(wire), drops) == msg
    assert decode_content(wire.encode(), drops) == msg
    assert drops.total == 0


def test_family_is_complete() -> None:
    assert set(CONTENT_FAMILY) == {"chat", "app", "idtoken", "caps", "schema"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"k": "pay", "url": "x"}, "unknown-kind"),
        ({"k": "ink", "e": {}}, "unknown-kind"),
        ({"text": "no kind"}, "no-kind"),
        ([1, 2], "not-object"),
        ("[]", "not-object"),
        ("{nope", "not-json"),
        ({"k": "chat", "text": "x" * 501}, "invalid:chat"),
        ({"k": "chat", "text": ""}, "invalid:chat"),
        ({"k": "chat", "text": 5}, "invalid:chat"),
        ({"k": "idtoken", "jwt": "j" * 8193}, "invalid:idtoken"),
        ({"k": "schema", "name": "n" * 121, "version": "1"}, "invalid:schema"),
        ({"k": "schema", "name": "n", "version": "v" * 65}, "invalid:schema"),
        ({"k": "caps", "grants": {"a": "everything"}}, "invalid:caps"),
        ({"k": "caps", "grants": {}, "v": -1}, "invalid:caps"),
    ],
)
def test_bad_content_is_dropped_and_counted(raw: object, reason: str) -> None:
    drops = DropCounter()
    assert decode_content(raw, drops) is None
    assert drops.by_reason == {reason: 1}


def test_unknown_grant_strings_from_a_newer_peer_are_ignored() -> None:
    drops = DropCounter()
    grants = {"a": {"perceive": ["read-chat", "smell"], "act": ["teleport"]}}
    msg = decode_content({"k": "caps", "grants": grants, "v": 1, "by": "h", "extra": True}, drops)
    assert isinstance(msg, Caps)
    assert msg.grants["a"].perceive == {"read-chat"} and msg.grants["a"].act == frozenset()
    assert msg.snapshot().stamp == (1, "h")


def test_app_size_limit() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        App(data="x" * MAX_APP_BYTES)
    with pytest.raises(ValueError, match="JSON"):
        App(data={"f": float("nan")})
    assert to_wire(App(data="x" * 1000))["data"] == "x" * 1000


def test_chat_sender_gets_a_clear_error() -> None:
    with pytest.raises(ValueError, match="500"):
        Chat(text="x" * 501)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(["k", "text", "dm", "data", "jwt", "grants", "v", "by", "name", "version",
                                     "schema"]),
                    st.one_of(st.sampled_from(list(CONTENT_FAMILY)), json_values), max_size=6),
    st.text(max_size=200),
    st.binary(max_size=200),
))
def test_decode_never_raises(raw: object) -> None:
    drops = DropCounter()
    msg = decode_content(raw, drops)
    assert (msg is None) == (drops.total == 1)
