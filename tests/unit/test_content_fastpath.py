"""The hand-written checks for hot content kinds agree with the pydantic models (the schema of record).

The router validates ``app`` and ``chat`` with :func:`check_app` / :func:`check_chat` and sends app
data as pre-encoded JSON text; these tests hold both to the models' verdicts under hypothesis, and
check that the router still drops, counts and audits exactly what the model path would.
"""

from __future__ import annotations

import json
import math
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mesh_helpers import make_net, mid
from pydantic import ValidationError

import kibitz.protocol.content as pc
from kibitz.capabilities import CapabilityBook, Grant
from kibitz.content import ChatLine, ContentRouter
from kibitz.protocol.base import DropCounter, dumps_compact, loads
from kibitz.protocol.content import (
    UNSURE,
    App,
    Chat,
    app_wire,
    chat_wire,
    check_app,
    check_chat,
    decode_content,
    json_text,
    parse_app_text,
    to_wire,
)

SURROGATES = st.sampled_from(["\ud800", "\udfff", "\ud83d"])
# st.text never yields lone surrogates, and they are exactly what UTF-8 cannot carry: mix them in.
texts = st.lists(st.characters() | SURROGATES, max_size=12).map("".join)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e15, -0.0, 1e300, 5e-324])
scalars = st.none() | st.booleans() | st.integers() | floats | texts
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4)
    | st.tuples(inner, inner) | st.frozensets(st.integers(), max_size=2),
    max_leaves=16,
)


def _model_accepts(model: type[App] | type[Chat], obj: dict[str, Any]) -> Any:
    try:
        return model.model_validate(obj)
    except (ValidationError, ValueError, RecursionError):
        return None


@settings(max_examples=250, deadline=None)
@given(data=values, present=st.booleans(),
       extra=st.dictionaries(st.sampled_from(["x", "text", "dm"]), scalars),
       limit=st.sampled_from([40, 200, pc.MAX_APP_BYTES]))
def test_check_app_agrees_with_the_app_model(data: Any, present: bool, extra: dict[str, Any],
                                             limit: int) -> None:
    obj: dict[str, Any] = {**extra, "k": "app"}
    if present:
        obj["data"] = data
    with patch.object(pc, "MAX_APP_BYTES", limit):
        fast = check_app(obj)
        model = _model_accepts(App, obj)
    assert (fast is not None) == (model is not None), (obj, fast)
    if fast is not None:
        assert isinstance(model, App)
        assert fast == json.dumps(model.data, separators=(",", ":"), ensure_ascii=False)
        assert loads(app_wire(fast)) == loads(json.dumps(to_wire(model), ensure_ascii=False))


near_limit = st.builds(lambda n, c: c * n, st.integers(495, 505), st.sampled_from(["x", "é", "😀", "\ud800"]))
chat_texts = texts | near_limit | scalars | st.lists(st.integers(), max_size=2) | st.binary(max_size=4)
dms = st.none() | st.booleans() | st.integers(-1, 2) | st.sampled_from(
    ["yes", "no", "true", "maybe", "", 1.0, 0.5])


@settings(max_examples=250, deadline=None)
@example(text="x" * 500, dm=None, has_dm=False, has_text=True)
@example(text="x" * 501, dm=None, has_dm=False, has_text=True)
@example(text="", dm=True, has_dm=True, has_text=True)
@example(text=" ", dm=1, has_dm=True, has_text=True)
@given(text=chat_texts, dm=dms, has_dm=st.booleans(), has_text=st.booleans())
def test_check_chat_agrees_with_the_chat_model(text: Any, dm: Any, has_dm: bool, has_text: bool) -> None:
    obj: dict[str, Any] = {"k": "chat"}
    if has_text:
        obj["text"] = text
    if has_dm:
        obj["dm"] = dm
    fast = check_chat(obj)
    model = _model_accepts(Chat, obj)
    if fast is None:
        assert model is None, obj
    elif fast == UNSURE:
        # Only what needs the model's lax coercions is left to it.
        assert type(obj.get("text")) is not str or obj.get("dm") not in (None, True, False) or (
            type(obj.get("dm")) not in (bool, type(None)))
    else:
        assert isinstance(model, Chat), obj
        assert fast == (model.text, model.dm)


@settings(max_examples=300, deadline=None)
@given(value=values, spaced=st.booleans(), limit=st.sampled_from([60, 400, pc.MAX_APP_BYTES]))
def test_app_text_from_the_page_is_refused_exactly_when_the_model_refuses(value: Any, spaced: bool,
                                                                           limit: int) -> None:
    try:
        text = json.dumps(value, ensure_ascii=bool(spaced), indent=1 if spaced else None)
    except (TypeError, ValueError):
        return  # not something JS's JSON.stringify could have produced
    parsed = json.loads(text)
    with patch.object(pc, "MAX_APP_BYTES", limit):
        model = _model_accepts(App, {"k": "app", "data": parsed})
        try:
            data, carried = parse_app_text(text)
        except ValueError:
            assert model is None, text
            return
    assert model is not None, text
    assert json.loads(carried) == data == parsed or _has_nan(parsed)
    assert app_wire(carried).startswith('{"k":"app","data":')
    assert loads(app_wire(carried))["data"] == model.data or _has_nan(parsed)


def _has_nan(v: Any) -> bool:
    if isinstance(v, float):
        return math.isnan(v)
    if isinstance(v, list):
        return any(_has_nan(x) for x in v)
    if isinstance(v, dict):
        return any(_has_nan(x) for x in v.values())
    return False


def test_app_text_edges() -> None:
    for bad in ("NaN", "[1, Infinity]", "1e400", "-1e999", '"\\ud800"', "{", "1 2", "", "\ufeff1"):
        with pytest.raises(ValueError):
            parse_app_text(bad)
    assert parse_app_text(' {"a": [1, 2.5]} ') == ({"a": [1, 2.5]}, ' {"a": [1, 2.5]} ')
    assert parse_app_text('"\\u00e9"') == ("é", '"é"')  # an escape is re-encoded, never trusted
    # Near the limit the compact re-encoding is what counts: 1e15 grows to 1000000000000000.0.
    with patch.object(pc, "MAX_APP_BYTES", 90):
        with pytest.raises(ValueError, match="exceeds"):
            parse_app_text("[1e15,1e15,1e15,1e15,1e15]")
        with pytest.raises(ValidationError):
            App(data=[1e15] * 5)


@settings(max_examples=200, deadline=None)
@given(value=values)
def test_pre_encoded_wire_is_byte_identical_to_the_model_encoding(value: Any) -> None:
    try:
        model = App(data=value)
    except ValidationError:
        with pytest.raises(ValueError):
            json_text(value)
        return
    expected = json.dumps(to_wire(model), separators=(",", ":"), ensure_ascii=False)
    assert app_wire(json_text(value)) == expected


@given(text=st.text(min_size=1, max_size=30), dm=st.booleans())
@settings(max_examples=100, deadline=None)
def test_chat_wire_matches_the_model(text: str, dm: bool) -> None:
    model = Chat(text=text, dm=True if dm else None)
    expected = json.dumps(to_wire(model), separators=(",", ":"), ensure_ascii=False)
    assert chat_wire(text, dm=dm) == expected


# ---------------------------------------------------------------------------------------- router


class Harness:
    def __init__(self) -> None:
        self.clock, self.bus, self.nodes = make_net(["h", "p", "bot"])
        self.apps: dict[str, list[tuple[str, Any]]] = {n: [] for n in self.nodes}
        self.chats: dict[str, list[ChatLine]] = {n: [] for n in self.nodes}
        self.texts: list[str] = []
        self.routers: dict[str, ContentRouter] = {}
        for n, node in self.nodes.items():
            book = CapabilityBook(self_id=node.id, now=lambda: 1_700_000_000.0)
            router = ContentRouter(mesh=node.mesh, book=book, now=self.clock.now,
                                   on_chat=self.chats[n].append,
                                   on_app=lambda f, d, n=n: self._app(n, f, d))
            self.routers[n] = router
        metas: dict[str, Any] = {mid("h"): None, mid("p"): None, mid("bot"): {"role": "agent"}}
        for r in self.routers.values():
            r.update_room(metas, host=None, coordinator=mid("h"))
        self.clock.advance(1)

    def _app(self, n: str, sender: str, data: Any) -> None:
        self.apps[n].append((sender, data))
        if n == "p":
            self.texts.append(self.routers["p"].json_of(data))


@settings(max_examples=150, deadline=None)
@given(obj=st.fixed_dictionaries({"k": st.sampled_from(["app", "chat"])},
                                 optional={"data": values, "text": chat_texts, "dm": dms, "x": scalars}))
def test_router_drops_and_delivers_exactly_what_the_models_decide(obj: dict[str, Any]) -> None:
    h = Harness()
    p = h.routers["p"]
    expected = DropCounter()
    msg = decode_content(obj, expected)
    p.receive(mid("h"), obj)
    assert p.drops.by_reason == expected.by_reason, obj
    if isinstance(msg, App):
        assert h.apps["p"] == [(mid("h"), msg.data)]
        assert h.texts == [json.dumps(msg.data, separators=(",", ":"), ensure_ascii=False)]
    elif isinstance(msg, Chat):
        assert [(c.sender, c.text, c.direct) for c in h.chats["p"]] == [(mid("h"), msg.text, bool(msg.dm))]
    else:
        assert h.apps["p"] == [] and h.chats["p"] == []
    # The same message from a peer without send-chat is blocked and audited, never delivered.
    before = len(h.apps["p"]) + len(h.chats["p"])
    p.receive(mid("bot"), obj)
    assert len(h.apps["p"]) + len(h.chats["p"]) == before
    if msg is not None:
        assert p.drops.by_reason[f"blocked:{obj['k']}"] == 1
        assert p.book.audit.recent(mid("bot"))[-1].kind == "blocked"


def test_malformed_app_is_counted_and_the_stream_keeps_its_order() -> None:
    h = Harness()
    tampered = h.nodes["h"].mesh
    tampered.broadcast_encoded('{"k":"app","data":NaN}')
    tampered.broadcast_encoded('{"k":"app","data":"\\ud800"}')
    tampered.broadcast_encoded('{"k":"chat","text":""}')
    tampered.broadcast_encoded('{"k":"poll","q":"?"}')
    h.routers["h"].broadcast({"n": 1})
    h.routers["h"].send_chat("after")
    h.clock.advance(1)
    p = h.routers["p"]
    assert h.apps["p"] == [(mid("h"), {"n": 1})]
    assert [c.text for c in h.chats["p"]] == ["after"]
    assert p.drops.by_reason == {"invalid:app": 2, "invalid:chat": 1, "unknown-kind": 1}


def test_page_json_sends_match_value_sends() -> None:
    h = Harness()
    hr = h.routers["h"]
    assert hr.broadcast_json('{"route": "#/b", "n": [1, 2.5, "é"]}') == [mid("bot"), mid("p")]
    hr.send_json(mid("p"), '"\\u00e9"')
    hr.send_to(mid("p"), {"same": True})
    h.clock.advance(1)
    assert h.apps["p"] == [(mid("h"), {"route": "#/b", "n": [1, 2.5, "é"]}), (mid("h"), "é"),
                           (mid("h"), {"same": True})]
    assert h.texts == ['{"route":"#/b","n":[1,2.5,"é"]}', '"é"', '{"same":true}']
    with pytest.raises(ValueError, match="JSON"):
        hr.send_json(mid("p"), "NaN")
    with pytest.raises(ValueError):
        hr.broadcast_json('["\\udc00"]')
    with pytest.raises(KeyError):
        hr.send_json("kbz-m-ghost", "1")
    with pytest.raises(PermissionError, match="send-chat"):
        h.routers["bot"].broadcast_json("1")
    h.routers["h"].set_grant(mid("bot"), Grant(perceive={"read-chat"}, act={"send-chat"}))
    h.clock.advance(1)
    with pytest.raises(PermissionError, match="act"):
        h.routers["bot"].broadcast_json('{"__kib_agent": "act", "action": "fold"}')
    with pytest.raises(ValueError, match="directed"):
        hr.send_json(mid("bot"), "1")
    assert hr.json_of({"b": 1}) == '{"b":1}'  # outside a delivery it simply encodes


def test_sender_refuses_what_the_model_refuses() -> None:
    h = Harness()
    hr = h.routers["h"]
    for bad in (float("nan"), {"x": float("inf")}, "\ud800", {1, 2}, b"raw"):
        with pytest.raises(ValueError):
            hr.send_to(mid("p"), bad)
        with pytest.raises(ValueError):
            hr.broadcast(bad)
    with pytest.raises(ValueError):
        hr.send_chat("lone \udc00")
    with (patch.object(pc, "MAX_APP_BYTES", 10), patch("kibitz.content.MAX_APP_BYTES", 10),
          pytest.raises(ValueError, match="exceeds")):
        hr.broadcast("x" * 20)
    assert h.nodes["h"].mesh.pending(mid("p")) == 0


def test_large_pre_encoded_message_is_chunked_and_arrives() -> None:
    h = Harness()
    big = {"pad": "é" * 100_000}
    h.routers["h"].send_json(mid("p"), json.dumps(big, ensure_ascii=False))
    h.routers["h"].send_to(mid("p"), "next")
    h.clock.advance(2)
    assert h.apps["p"] == [(mid("h"), big), (mid("h"), "next")]
    with pytest.raises(ValueError, match="surrogate"):
        h.nodes["h"].mesh.send_encoded(mid("p"), '"\ud800"')


def test_expiring_grant_still_expires_on_the_hot_path() -> None:
    now = [100.0]
    book = CapabilityBook(self_id="a", now=lambda: now[0])
    book.set_members({"a": None, "bot": {"role": "agent"}})
    book.set_authority(host=None, coordinator="a")
    book.set_grant("bot", Grant(act={"send-chat"}, expires_at=150))
    assert book.may_act("bot", "send-chat")
    now[0] = 150.0
    assert not book.may_act("bot", "send-chat")
    book.set_grant("bot", Grant(act={"send-chat"}))
    assert book.may_act("bot", "send-chat")


@settings(max_examples=300, deadline=None)
@given(value=values)
def test_dumps_compact_is_json_dumps(value: Any) -> None:
    try:
        expected: Any = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        expected = type(exc)
    try:
        got: Any = dumps_compact(value)
    except (TypeError, ValueError) as exc:
        got = type(exc)
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(
    st.builds(lambda v, pad: pad + json.dumps(v, default=list) + pad, values,
              st.sampled_from(["", " ", "\n"])),
    st.text(alphabet='{}[]",:0123456789.eE-+ tfnaulrsNI\\\ufeff', max_size=20),
))
def test_loads_is_json_loads(text: str) -> None:
    try:
        expected: Any = ("ok", json.loads(text))
    except (ValueError, RecursionError) as exc:
        expected = ("err", str(exc))
    try:
        got: Any = ("ok", loads(text))
    except (ValueError, RecursionError) as exc:
        got = ("err", str(exc))
    assert repr(got) == repr(expected)
