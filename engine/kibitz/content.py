"""Content over the mesh with capabilities enforced on both ends.

:class:`ContentRouter` glues the data mesh, the content protocol and the capability book:

* **Senders withhold.** A chat or app broadcast goes only to peers that may ``read-chat``; a
  directed send needs the addressee's ``receive-directed`` and is refused with a clear error
  otherwise. This peer refuses to emit what its own grant lacks (an honest read-only agent fails
  loudly instead of being silently dropped everywhere).
* **Receivers drop.** Chat, app data and schemas from a peer lacking ``send-chat`` (and agent
  ``act`` envelopes from a peer lacking ``act``) are dropped and written to the audit feed, so a
  tampered client that ignores its own grant still cannot post.
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
    MAX_CHAT_CHARS,
    App,
    Caps,
    Chat,
    ContentModel,
    IdToken,
    Schema,
    decode_content,
    to_wire,
)

log = logging.getLogger(__name__)

CHAT_KEEP = 50
SCHEMA_KEEP = 200
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
        self._was_authority = False
        mesh.on_message = self.receive

    # ------------------------------------------------------------------ room facts

    def update_room(
        self, metas: Mapping[str, Mapping[str, Any] | None], *, host: str | None, coordinator: str | None
    ) -> None:
        """The roster or its authorities changed: update the mesh and the book, re-send the map.

        ``metas`` maps every member id (ourselves included) to its roster ``meta``.
        """
        # The book first: adopting a held link replays frames, and a map among them must find
        # its sender already known as the authority.
        self.book.set_members(metas)
        if self.book.set_authority(host=host, coordinator=coordinator) and self.on_caps:
            self._safe(self.on_caps)
        self.mesh.set_members(metas)
        others = {m for m in metas if m != self.self_id}
        joined = others - self._known
        self._known = others
        authority = self.book.is_authority(self.self_id)
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
        msg = to_wire(Chat(text=text, dm=True if to else None))
        if to is None:
            self.mesh.broadcast(msg, only=lambda p: self.book.may_perceive(p, "read-chat"))
        else:
            self._require_directed(to)
            self.mesh.send(to, msg)
        line = self._remember(self.self_id, text, direct=to is not None)
        return line

    def broadcast(self, data: Any) -> list[str]:
        """App data to every peer that may perceive it; returns the recipients."""
        self._require_own("send-chat", "broadcast")
        self._require_act(data)
        readers = lambda p: self.book.may_perceive(p, "read-chat")  # noqa: E731
        return self.mesh.broadcast(to_wire(App(data=data)), only=readers)

    def send_to(self, peer: str, data: Any) -> None:
        """App data to one peer, directly; refused when it may not receive directed messages."""
        self._require_own("send-chat", "send")
        self._require_act(data)
        self._require_directed(peer)
        self.mesh.send(peer, to_wire(App(data=data)))

    def send_idtoken(self, peer: str, jwt: str) -> None:
        self.mesh.send(peer, to_wire(IdToken(jwt=jwt)))

    def publish_schema(self, name: str, version: str, schema: Any) -> list[str]:
        self._require_own("send-chat", "publish a schema")
        return self.mesh.broadcast(to_wire(Schema(name=name, version=version, schema=schema)))

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
        if peer not in self.mesh.members:
            raise KeyError(f"{peer!r} is not in the room")
        if not self.book.may_perceive(peer, "receive-directed"):
            raise ValueError(f"{self._name_of(peer)} ({peer}) may not receive directed messages")

    # ------------------------------------------------------------------ receiving

    def receive(self, sender: str, raw: Any) -> None:
        """Mesh callback: one content message from ``sender``; never raises."""
        msg = decode_content(raw, self.drops)
        if msg is None:
            return
        try:
            self._dispatch(sender, msg)
        except Exception:
            log.exception("content from %s failed", sender)
            self.drops.drop("handler-error")

    def _dispatch(self, sender: str, msg: ContentModel) -> None:
        if isinstance(msg, Caps):
            if self.book.apply(sender, msg.snapshot()) and self.on_caps:
                self._safe(self.on_caps)
            return
        if isinstance(msg, IdToken):
            if self.on_idtoken:
                self.on_idtoken(sender, msg.jwt)
            return
        if not self._allowed(sender, msg):
            return
        if isinstance(msg, Chat):
            line = self._remember(sender, msg.text, direct=bool(msg.dm))
            if self.on_chat:
                self.on_chat(line)
        elif isinstance(msg, App):
            if self.on_app:
                self.on_app(sender, msg.data)
        elif isinstance(msg, Schema):
            key = (sender, msg.name)
            if key not in self.schemas and len(self.schemas) >= SCHEMA_KEEP:
                self.drops.drop("schema-cap")
                return
            self.schemas[key] = msg
            if self.on_schema:
                self.on_schema(sender, msg)

    def _allowed(self, sender: str, msg: ContentModel) -> bool:
        kind = msg.k  # type: ignore[attr-defined]
        if not self.book.may_act(sender, "send-chat"):
            detail = msg.text[:80] if isinstance(msg, Chat) else ""
            self.book.blocked(sender, str(kind), f"lacks send-chat {detail}".strip())
            self.drops.drop(f"blocked:{kind}")
            return False
        if isinstance(msg, App) and _is_agent_act(msg.data) and not self.book.may_act(sender, "act"):
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
    return isinstance(data, Mapping) and data.get(AGENT_ENVELOPE) == "act"
