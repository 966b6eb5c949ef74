"""Content over the mesh with capabilities enforced on both ends.

:class:`ContentRouter` glues the data mesh, the content protocol and the capability book:

* **Senders withhold.** A chat or app broadcast goes only to peers that may ``read-chat``; a
  directed send needs the addressee's ``receive-directed`` and is refused with a clear error
  otherwise. This peer refuses to emit what its own grant lacks (an honest read-only agent fails
  loudly instead of being silently dropped everywhere).
* **Receivers drop.** Chat, app data and schemas from a peer lacking ``send-chat`` (and agent
  ``act`` envelopes from a peer lacking ``act``) are dropped and written to the audit feed, so a
  tampered client that ignores its own grant still cannot post.
* **Held while the verified roster says so.** With ``verifyIdentity.require`` (or after a verified
  member's certificate changed), chat, app data and schemas wait, both ways, until everyone is
  verified (``hold``); identity tokens and grant maps still flow, since they are what ends the wait.
* **Grants travel as whole maps.** ``caps`` messages are applied by version stamp (see
  :class:`~kibitz.capabilities.CapabilityBook`); the host or coordinator re-sends the map to every
  joiner and broadcasts it when it takes over, so the map survives coordinator migration.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kibitz.capabilities import CapabilityBook, Grant
from kibitz.mesh import Mesh
from kibitz.protocol.base import DropCounter
from kibitz.protocol.content import (
    MAX_APP_BYTES,
    MAX_CHAT_CHARS,
    UNSURE,
    App,
    Caps,
    Chat,
    ContentModel,
    IdToken,
    Schema,
    app_wire,
    chat_wire,
    check_app,
    check_chat,
    decode_content,
    json_text,
    parse_app_text,
    to_wire,
    utf8_len,
)

log = logging.getLogger(__name__)

CHAT_KEEP = 50
SCHEMA_KEEP = 200
HELD_MAX = 256
"""Messages kept each way while content is held; older ones are dropped and counted."""
PASS_WHILE_HELD = frozenset({"idtoken", "caps"})
AGENT_ENVELOPE = "__kib_agent"


@dataclass(frozen=True, slots=True)
class ChatLine:
    id: str
    sender: str
    name: str
    text: str
    ts: float
    direct: bool

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "from": self.sender, "name": self.name, "text": self.text, "ts": self.ts,
                "direct": self.direct}


class ContentRouter:
    """Chat, app data, identity tokens, schemas and grant maps between this peer and the room."""

    def __init__(
        self,
        *,
        mesh: Mesh,
        book: CapabilityBook,
        now: Callable[[], float],
        name_of: Callable[[str], str] | None = None,
        on_chat: Callable[[ChatLine], None] | None = None,
        on_app: Callable[[str, Any], None] | None = None,
        on_caps: Callable[[], None] | None = None,
        on_idtoken: Callable[[str, str], None] | None = None,
        on_schema: Callable[[str, Schema], None] | None = None,
        hold: Callable[[], bool] | None = None,
    ) -> None:
        self.mesh = mesh
        self.book = book
        self.self_id = mesh.self_id
        self.drops = DropCounter()
        self.chat: deque[ChatLine] = deque(maxlen=CHAT_KEEP)
        self.schemas: dict[tuple[str, str], Schema] = {}
        self._now = now
        self._name_of = name_of or (lambda peer: peer)
        self.on_chat, self.on_app, self.on_caps = on_chat, on_app, on_caps
        self.on_idtoken, self.on_schema = on_idtoken, on_schema
        self._seq = 0
        self._known: set[str] = set()
        self._last_metas: dict[str, Mapping[str, Any] | None] = {}
        self._was_authority = False
        self._delivering: tuple[Any, str] | None = None
        self._hold = hold
        self._held_out: deque[Callable[[], object]] = deque()
        self._held_in: deque[tuple[str, Any]] = deque()
        mesh.on_message = self.receive

    # ------------------------------------------------------------------ room facts

    def update_room(
        self, metas: Mapping[str, Mapping[str, Any] | None], *, host: str | None, coordinator: str | None
    ) -> None:
        """The roster or its authorities changed: update the mesh and the book, re-send the map.

        ``metas`` maps every member id (ourselves included) to its roster ``meta``.
        """
        # The book first: adopting a held link replays frames, and a map among them must find
        # its sender already known as the authority. Members the mesh keeps through a presence
        # blip (parked) keep their last meta there, so an agent stays an agent while parked.
        last = self._last_metas
        self.book.set_members(metas, {p: last.get(p) for p in self.mesh.parked + self.mesh.members})
        if self.book.set_authority(host=host, coordinator=coordinator) and self.on_caps:
            self._safe(self.on_caps)
        self.mesh.set_members(metas)
        kept = {p: last.get(p) for p in self.mesh.parked}
        self._last_metas = {**kept, **metas}
        self.book.set_members(metas, kept)
        others = {m for m in metas if m != self.self_id}
        joined = others - self._known
        self._known = others
        authority = self.book.author == self.self_id
        took_over = authority and not self._was_authority
        self._was_authority = authority
        if not authority or self.book.version == 0:
            return
        caps = to_wire(Caps.of(self.book.snapshot()))
        for peer in sorted(others if took_over else joined):
            self.mesh.send(peer, caps)

    # ------------------------------------------------------------------ sending

    def send_chat(self, text: str, to: str | None = None) -> ChatLine:
        """Post a chat line to everyone who may read chat, or directly to ``to``."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("chat text must be a non-empty string")
        if len(text) > MAX_CHAT_CHARS:
            raise ValueError(f"chat text of {len(text)} characters exceeds {MAX_CHAT_CHARS}")
        self._require_own("send-chat", "send chat")
        wire = chat_wire(text, dm=to is not None)  # ValueError for a lone surrogate, as Chat would
        if to is None:
            self._out(lambda: self.mesh.broadcast_encoded(wire, only=self._reader))
        else:
            self._require_directed(to)
            self._out(lambda: self.mesh.send_encoded(to, wire))
        line = self._remember(self.self_id, text, direct=to is not None)
        return line

    def broadcast(self, data: Any) -> list[str]:
        """App data to every peer that may perceive it; returns the recipients."""
        self._require_own("send-chat", "broadcast")
        self._require_act(data)
        wire = app_wire(_app_text(data))
        return self._out(lambda: self.mesh.broadcast_encoded(wire, only=self._reader)) or []

    def send_to(self, peer: str, data: Any) -> None:
        """App data to one peer, directly; refused when it may not receive directed messages."""
        self._require_own("send-chat", "send")
        self._require_act(data)
        self._require_directed(peer)
        wire = app_wire(_app_text(data))
        self._out(lambda: self.mesh.send_encoded(peer, wire))

    def broadcast_json(self, text: str) -> list[str]:
        """:meth:`broadcast` for data given as JSON text (the page's ``broadcast``): parsed once,
        checked as :class:`App` checks it, and carried without encoding it again."""
        data, text = parse_app_text(text)
        self._require_own("send-chat", "broadcast")
        self._require_act(data)
        return self._out(lambda: self.mesh.broadcast_encoded(app_wire(text), only=self._reader)) or []

    def send_json(self, peer: str, text: str) -> None:
        """:meth:`send_to` for data given as JSON text (the page's ``sendTo``)."""
        data, text = parse_app_text(text)
        self._require_own("send-chat", "send")
        self._require_act(data)
        self._require_directed(peer)
        self._out(lambda: self.mesh.send_encoded(peer, app_wire(text)))

    def json_of(self, data: Any) -> str:
        """Compact JSON text of app data; free for the value being delivered right now (the
        receive check already encoded it), so the page hands it to JS without a second encode."""
        delivering = self._delivering
        if delivering is not None and delivering[0] is data:
            return delivering[1]
        return json_text(data)

    def _reader(self, peer: str) -> bool:
        return self.book.may_perceive(peer, "read-chat")

    def send_idtoken(self, peer: str, jwt: str) -> None:
        self.mesh.send(peer, to_wire(IdToken(jwt=jwt)))

    def publish_schema(self, name: str, version: str, schema: Any) -> list[str]:
        self._require_own("send-chat", "publish a schema")
        wire = to_wire(Schema(name=name, version=version, schema=schema))
        return self._out(lambda: self.mesh.broadcast(wire)) or []

    # ------------------------------------------------------------------ holding

    @property
    def holding(self) -> bool:
        return self._hold is not None and self._hold()

    @property
    def held(self) -> tuple[int, int]:
        """Messages waiting (outgoing, incoming)."""
        return len(self._held_out), len(self._held_in)

    def _out(self, send: Callable[[], Any]) -> Any:
        """Send now, or keep it for when content may flow again (returns None then)."""
        if not self.holding:
            return send()
        if len(self._held_out) >= HELD_MAX:
            self._held_out.popleft()
            self.drops.drop("held-overflow")
        self._held_out.append(send)
        return None

    def release_held(self) -> None:
        """Content may flow again: send what waited, then deliver what arrived meanwhile (from
        members still here)."""
        if self.holding:
            return
        out, self._held_out = self._held_out, deque()
        for send in out:
            try:
                send()
            except Exception:
                log.exception("held send failed")
                self.drops.drop("held-send-error")
        held, self._held_in = self._held_in, deque()
        for sender, raw in held:
            if self.mesh.has(sender):
                self.receive(sender, raw)

    def set_grant(self, peer: str, grant: Grant | Mapping[str, Any] | None) -> Grant:
        """Host/coordinator side: change one grant and distribute the whole map to everyone."""
        snap = self.book.set_grant(peer, grant)
        self.mesh.broadcast(to_wire(Caps.of(snap)))
        if self.on_caps:
            self._safe(self.on_caps)
        return self.book.grant_of(peer)

    def _require_own(self, act: str, doing: str) -> None:
        if not self.book.may_act(self.self_id, "send-chat"):
            raise PermissionError(f"this participant may not {doing}: its grant lacks {act}")

    def _require_act(self, data: Any) -> None:
        if _is_agent_act(data) and not self.book.may_act(self.self_id, "act"):
            raise PermissionError("this participant may not act: its grant lacks act")

    def _require_directed(self, peer: str) -> None:
        if not self.mesh.has(peer):
            raise KeyError(f"{peer!r} is not in the room")
        if not self.book.may_perceive(peer, "receive-directed"):
            raise ValueError(f"{self._name_of(peer)} ({peer}) may not receive directed messages")

    # ------------------------------------------------------------------ receiving

    def receive(self, sender: str, raw: Any) -> None:
        """Mesh callback: one content message from ``sender``; never raises.

        ``app`` and ``chat`` objects take the hand-written checks (same limits as the models, see
        :mod:`kibitz.protocol.content`); everything else, and whatever those checks cannot decide,
        is validated by the pydantic models.
        """
        try:
            if self._hold is not None and self._hold():
                kind = raw.get("k") if isinstance(raw, dict) else None
                if kind not in PASS_WHILE_HELD:
                    if len(self._held_in) >= HELD_MAX:
                        self._held_in.popleft()
                        self.drops.drop("held-overflow")
                    self._held_in.append((sender, raw))
                    return
            if type(raw) is dict:
                kind = raw.get("k")
                if kind == "app":
                    self._receive_app(sender, raw)
                    return
                if kind == "chat":
                    checked = check_chat(raw)
                    if checked is None:
                        self.drops.drop("invalid:chat")
                        return
                    if checked != UNSURE:
                        text, dm = checked
                        self._receive_chat(sender, text, bool(dm))
                        return
            msg = decode_content(raw, self.drops)
            if msg is None:
                return
            self._dispatch(sender, msg)
        except Exception:
            log.exception("content from %s failed", sender)
            self.drops.drop("handler-error")

    def _receive_app(self, sender: str, raw: dict[str, Any]) -> None:
        text = check_app(raw)
        if text is None:
            self.drops.drop("invalid:app")
            return
        data = raw.get("data")
        if not self._allowed(sender, "app", data=data):
            return
        if self.on_app:
            self._delivering = (data, text)
            try:
                self.on_app(sender, data)
            finally:
                self._delivering = None

    def _receive_chat(self, sender: str, text: str, direct: bool) -> None:
        if not self._allowed(sender, "chat", text=text):
            return
        line = self._remember(sender, text, direct=direct)
        if self.on_chat:
            self.on_chat(line)

    def _dispatch(self, sender: str, msg: ContentModel) -> None:
        if isinstance(msg, Caps):
            if self.book.apply(sender, msg.snapshot()) and self.on_caps:
                self._safe(self.on_caps)
            return
        if isinstance(msg, IdToken):
            if self.on_idtoken:
                self.on_idtoken(sender, msg.jwt)
            return
        if isinstance(msg, Chat):
            self._receive_chat(sender, msg.text, bool(msg.dm))
        elif isinstance(msg, App):
            if self._allowed(sender, "app", data=msg.data) and self.on_app:
                self.on_app(sender, msg.data)
        elif isinstance(msg, Schema):
            if not self._allowed(sender, "schema"):
                return
            key = (sender, msg.name)
            if key not in self.schemas and len(self.schemas) >= SCHEMA_KEEP:
                self.drops.drop("schema-cap")
                return
            self.schemas[key] = msg
            if self.on_schema:
                self.on_schema(sender, msg)

    def _allowed(self, sender: str, kind: str, *, text: str = "", data: Any = None) -> bool:
        """Receiver-side enforcement: chat, app data and schemas need ``send-chat``; an agent
        ``act`` envelope needs ``act`` too. Refusals are audited and counted."""
        if not self.book.may_act(sender, "send-chat"):
            self.book.blocked(sender, kind, f"lacks send-chat {text[:80]}".strip())
            self.drops.drop(f"blocked:{kind}")
            return False
        if kind == "app" and _is_agent_act(data) and not self.book.may_act(sender, "act"):
            self.book.blocked(sender, "act", "lacks act")
            self.drops.drop("blocked:act")
            return False
        return True

    def _remember(self, sender: str, text: str, *, direct: bool) -> ChatLine:
        self._seq += 1
        line = ChatLine(f"{sender}:{self._seq}", sender, self._name_of(sender), text, self._now(), direct)
        self.chat.append(line)
        return line

    def _safe(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("callback failed")
            self.drops.drop("callback-error")


def _is_agent_act(data: Any) -> bool:
    if type(data) is dict:  # the usual case, without an ABC isinstance check
        return data.get(AGENT_ENVELOPE) == "act"
    return isinstance(data, Mapping) and data.get(AGENT_ENVELOPE) == "act"


def _app_text(data: Any) -> str:
    """App data as JSON text, refused as :class:`App` refuses it (not plain JSON, too big)."""
    text = json_text(data)
    size = utf8_len(text)
    if size > MAX_APP_BYTES:
        raise ValueError(f"app data of {size} bytes exceeds {MAX_APP_BYTES}")
    return text
