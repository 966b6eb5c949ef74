"""Peer-to-peer content over the data mesh: chat, app data, identity tokens, grants, schemas.

Every message is a JSON object with the kind under ``k`` (as in the original engine). The sender is
the mesh link's peer, never a field, so nobody can speak for someone else; display names come from
the roster. Unknown kinds are ignored and counted: that is how a newer peer talks to an older one.

The mesh delivers already-parsed JSON values, so :func:`decode_content` accepts a parsed object as
well as raw text. App data may be far larger than one frame (the mesh chunks it), up to
:data:`MAX_APP_BYTES` encoded; the original's 256 KiB cap would break the 10 MB broadcast the
product promises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from kibitz.capabilities import CapsSnapshot, Grant
from kibitz.protocol.base import DropCounter, WireModel, decode

MAX_CHAT_CHARS = 500
MAX_APP_BYTES = 16 * 1024 * 1024
MAX_JWT_CHARS = 8192
MAX_SCHEMA_NAME = 120
MAX_SCHEMA_VERSION = 64
MAX_SCHEMA_BYTES = 64 * 1024
MAX_CAPS_GRANTS = 256
MAX_CONTENT_BYTES = MAX_APP_BYTES + 1024
"""Largest raw content frame :func:`decode_content` looks at."""


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON; ``ValueError`` if it is not plain JSON."""
    try:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON-serialisable: {exc}") from None


class ContentModel(WireModel):
    KIND_KEY: ClassVar[str] = "k"


class Chat(ContentModel):
    """A chat line. ``dm`` only tells the UI it was sent directly; routing is the mesh's job."""

    k: Literal["chat"] = "chat"
    text: str = Field(min_length=1, max_length=MAX_CHAT_CHARS)
    dm: bool | None = None


class App(ContentModel):
    """Application data from ``broadcast``/``sendTo``: any JSON value."""

    k: Literal["app"] = "app"
    data: Any = None

    @field_validator("data")
    @classmethod
    def _bounded(cls, v: Any) -> Any:
        size = json_size(v)
        if size > MAX_APP_BYTES:
            raise ValueError(f"app data of {size} bytes exceeds {MAX_APP_BYTES}")
        return v


class IdToken(ContentModel):
    """A verified-identity token (OIDC / email JWT), sent once to each roster peer."""

    k: Literal["idtoken"] = "idtoken"
    jwt: str = Field(min_length=1, max_length=MAX_JWT_CHARS)


class Caps(ContentModel):
    """The room's whole grant map at a version stamp (see :class:`kibitz.capabilities.CapabilityBook`)."""

    k: Literal["caps"] = "caps"
    grants: dict[str, Grant] = Field(default_factory=dict, max_length=MAX_CAPS_GRANTS)
    v: int = Field(default=0, ge=0)
    by: str = Field(default="", max_length=128)

    def snapshot(self) -> CapsSnapshot:
        return CapsSnapshot(self.v, self.by, dict(self.grants))

    @classmethod
    def of(cls, snap: CapsSnapshot) -> Caps:
        return cls(grants=dict(snap.grants), v=snap.version, by=snap.author)


class Schema(ContentModel):
    """An app's published data schema, newest per (sender, name) wins."""

    k: Literal["schema"] = "schema"
    name: str = Field(min_length=1, max_length=MAX_SCHEMA_NAME)
    version: str = Field(min_length=1, max_length=MAX_SCHEMA_VERSION)
    schema_: Any = Field(default=None, alias="schema")

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    @field_validator("schema_")
    @classmethod
    def _bounded(cls, v: Any) -> Any:
        if json_size(v) > MAX_SCHEMA_BYTES:
            raise ValueError(f"schema exceeds {MAX_SCHEMA_BYTES} bytes")
        return v


Content = Chat | App | IdToken | Caps | Schema

CONTENT_FAMILY: dict[str, type[ContentModel]] = {
    "chat": Chat,
    "app": App,
    "idtoken": IdToken,
    "caps": Caps,
    "schema": Schema,
}


def to_wire(message: ContentModel) -> dict[str, Any]:
    """The JSON object the mesh carries (its own framing sizes and chunks it)."""
    out: dict[str, Any] = message.model_dump(mode="json", exclude_none=True)
    if isinstance(message, App) and "data" not in out:
        out["data"] = None
    return out


def encode_content(message: ContentModel) -> str:
    """Compact JSON text of one content message (raises ``ValueError`` when too big)."""
    text = json.dumps(to_wire(message), separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > MAX_CONTENT_BYTES:
        raise ValueError(f"content of {len(text)} chars exceeds {MAX_CONTENT_BYTES} bytes")
    return text


def decode_content(raw: str | bytes | Mapping[str, Any] | Any, drops: DropCounter) -> ContentModel | None:
    """One content message from raw text or an already-parsed object; ``None`` (counted) if unusable."""
    if isinstance(raw, str | bytes):
        return decode(raw, CONTENT_FAMILY, drops, kind_key="k", max_bytes=MAX_CONTENT_BYTES)
    if not isinstance(raw, Mapping):
        drops.drop("not-object")
        return None
    kind = raw.get("k")
    if not isinstance(kind, str):
        drops.drop("no-kind")
        return None
    model = CONTENT_FAMILY.get(kind)
    if model is None:
        drops.drop("unknown-kind")
        return None
    try:
        return model.model_validate(raw)
    except (ValidationError, RecursionError, ValueError):
        drops.drop(f"invalid:{kind}")
        return None
