"""Presence wire format: golden JSON both ways, limits, forward compatibility, counted drops."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kibitz.protocol.base import DropCounter, WireModel, decode, encode
from kibitz.protocol.presence import (
    CLIENT_FAMILY,
    COORDINATOR_FAMILY,
    MAX_MEMBERS,
    Kick,
    Knock,
    Leave,
    LobbyMsg,
    Mod,
    Ping,
    Reset,
    RosterMember,
    RosterMsg,
    Voice,
)

CLIENT_GOLDEN: list[tuple[WireModel, str]] = [
    (Voice(), '{"t":"voice","on":true,"cam":false,"name":""}'),
    (
        Voice(on=True, cam=True, mic=True, name="Dana", avatar="🦊", token="tab-1", meta={"seat": 2}, v=1,
              f=["presence.v1", "chat.v1"]),
        '{"t":"voice","on":true,"cam":true,"mic":true,"name":"Dana","avatar":"\\ud83e\\udd8a","token":"tab-1",'
        '"meta":{"seat":2},"v":1,"f":["presence.v1","chat.v1"]}',
    ),
    (
        Voice(on=False, name="x", voiceId="kbz-m-abc"),
        '{"t":"voice","on":false,"cam":false,"name":"x","voiceId":"kbz-m-abc"}',
    ),
    (Ping(), '{"t":"ping"}'),
    (Leave(), '{"t":"leave"}'),
    (Knock(name="Eve", token="k"), '{"t":"knock","name":"Eve","token":"k"}'),
    (Mod(token="eyJhbGciOi.x.y"), '{"t":"mod","token":"eyJhbGciOi.x.y"}'),
]

COORDINATOR_GOLDEN: list[tuple[WireModel, str]] = [
    (
        RosterMsg(
            members=[
                RosterMember(id="kbz-m-a", name="A", cam=True, f=["presence.v1"]),
                RosterMember(id="kbz-m-b", name="B", mic=True, avatar="b.png", meta={"role": "agent"}),
            ],
            lobby=False,
            host="",
            locked=True,
            c="kbz-m-a",
            v=1,
        ),
        '{"t":"roster","members":[{"id":"kbz-m-a","name":"A","cam":true,"f":["presence.v1"]},'
        '{"id":"kbz-m-b","name":"B","cam":false,"mic":true,"avatar":"b.png","meta":{"role":"agent"}}],'
        '"lobby":false,"host":"","locked":true,"c":"kbz-m-a","v":1}',
    ),
    (RosterMsg(members=[]), '{"t":"roster","members":[]}'),
    (Ping(), '{"t":"ping"}'),
    (LobbyMsg(status="waiting"), '{"t":"lobby","status":"waiting"}'),
    (LobbyMsg(status="unverified"), '{"t":"lobby","status":"unverified"}'),
    (Kick(), '{"t":"kick"}'),
    (Reset(), '{"t":"reset"}'),
]


@pytest.mark.parametrize(("message", "text"), CLIENT_GOLDEN)
def test_client_golden_vectors(message: WireModel, text: str) -> None:
    assert encode(message) == text
    drops = DropCounter()
    assert decode(text, CLIENT_FAMILY, drops) == message
    assert drops.total == 0


@pytest.mark.parametrize(("message", "text"), COORDINATOR_GOLDEN)
def test_coordinator_golden_vectors(message: WireModel, text: str) -> None:
    assert encode(message) == text
    drops = DropCounter()
    assert decode(text, COORDINATOR_FAMILY, drops) == message
    assert drops.total == 0


def test_original_engine_frames_decode() -> None:
    """Frames as the original engine writes them (no v/f, extra fields) are accepted."""
    drops = DropCounter()
    voice = decode(
        '{"t":"voice","on":true,"cam":false,"name":"Ann","voiceId":"abc","token":"t","jwt":"x.y.z","extra":1}',
        CLIENT_FAMILY,
        drops,
    )
    assert isinstance(voice, Voice) and voice.name == "Ann" and voice.jwt == "x.y.z" and voice.v is None
    roster = decode('{"t":"roster","members":[{"id":"abc","name":"Ann","cam":false}],"host":""}',
                    COORDINATOR_FAMILY, drops)
    assert isinstance(roster, RosterMsg) and roster.members[0].id == "abc" and roster.lobby is None
    assert drops.total == 0


def test_newer_peer_kinds_and_fields_are_ignored_and_counted() -> None:
    drops = DropCounter()
    assert decode('{"t":"hologram","x":1}', CLIENT_FAMILY, drops) is None
    assert drops.by_reason == {"unknown-kind": 1}
    ping = decode('{"t":"ping","v":9,"f":["warp.v1"],"new":{"a":1}}', COORDINATOR_FAMILY, drops)
    assert ping == Ping()
    assert drops.total == 1


def test_families_are_disjoint_where_they_must_be() -> None:
    drops = DropCounter()
    assert decode('{"t":"roster","members":[]}', CLIENT_FAMILY, drops) is None
    assert decode('{"t":"voice","on":true}', COORDINATOR_FAMILY, drops) is None
    assert drops.by_reason == {"unknown-kind": 2}


def _bad(field: str, value: Any, kind: str = "voice") -> str:
    return json.dumps({"t": kind, field: value})


@pytest.mark.parametrize(
    ("raw", "family", "reason"),
    [
        (_bad("name", "x" * 81), CLIENT_FAMILY, "invalid:voice"),
        (_bad("on", "true"), CLIENT_FAMILY, "invalid:voice"),  # strict: no coercion
        (_bad("cam", 1), CLIENT_FAMILY, "invalid:voice"),
        (_bad("token", "t" * 8193), CLIENT_FAMILY, "invalid:voice"),
        (_bad("meta", {"blob": "x" * 4100}), CLIENT_FAMILY, "invalid:voice"),
        (_bad("meta", [1, 2]), CLIENT_FAMILY, "invalid:voice"),
        (_bad("f", ["x"] * 65), CLIENT_FAMILY, "invalid:voice"),
        (_bad("v", True), CLIENT_FAMILY, "invalid:voice"),
        (_bad("token", "", "mod"), CLIENT_FAMILY, "invalid:mod"),
        (_bad("status", "maybe", "lobby"), COORDINATOR_FAMILY, "invalid:lobby"),
        (json.dumps({"t": "roster"}), COORDINATOR_FAMILY, "invalid:roster"),
        (json.dumps({"t": "roster", "members": [{"id": ""}]}), COORDINATOR_FAMILY, "invalid:roster"),
        (json.dumps({"t": "roster", "members": [{"id": "x" * 65}]}), COORDINATOR_FAMILY, "invalid:roster"),
        (json.dumps({"t": "roster", "members": [{"id": f"m{i}"} for i in range(MAX_MEMBERS + 1)]}),
         COORDINATOR_FAMILY, "invalid:roster"),
        ("not json", CLIENT_FAMILY, "not-json"),
        (b"\xff\xfe", CLIENT_FAMILY, "not-json"),
        ("[1,2]", CLIENT_FAMILY, "not-object"),
        ('{"kind":"voice"}', CLIENT_FAMILY, "no-kind"),
        ('{"t":7}', CLIENT_FAMILY, "no-kind"),
        ("x" * (256 * 1024 + 1), CLIENT_FAMILY, "oversize"),
        ("[" * 100_000 + "]" * 100_000, CLIENT_FAMILY, "not-json"),
    ],
)
def test_bad_frames_are_dropped_with_a_reason(raw: str | bytes, family: Any, reason: str) -> None:
    drops = DropCounter()
    assert decode(raw, family, drops) is None
    assert drops.by_reason == {reason: 1}


def test_limits_at_the_edge_are_accepted() -> None:
    drops = DropCounter()
    ok = decode(json.dumps({"t": "voice", "name": "n" * 80, "meta": {"b": "x" * 4000}}), CLIENT_FAMILY, drops)
    assert isinstance(ok, Voice) and len(ok.name) == 80
    assert drops.total == 0


def test_senders_get_a_clear_error_before_anything_leaves() -> None:
    with pytest.raises(ValueError, match="meta"):
        Voice(meta={"blob": "x" * 5000})
    with pytest.raises(ValueError):
        Voice(name="x" * 81)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["t", "on", "cam", "mic", "name", "avatar", "voiceId", "token", "meta", "v", "f", "members", "lobby",
          "host", "locked", "c", "status", "id", "jwt"]


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from([*CLIENT_FAMILY, *COORDINATOR_FAMILY, "zzz"]),
    body=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
)
def test_fuzzed_objects_decode_or_drop_never_raise(kind: str, body: dict[str, Any]) -> None:
    frame = json.dumps({**body, "t": kind})
    for family in (CLIENT_FAMILY, COORDINATOR_FAMILY):
        drops = DropCounter()
        msg = decode(frame, family, drops)  # type: ignore[arg-type]
        assert (msg is None) == (drops.total == 1)
        if msg is not None:
            # Whatever was accepted re-encodes and re-decodes to the same message.
            assert decode(encode(msg), family, DropCounter()) == msg  # type: ignore[arg-type]
