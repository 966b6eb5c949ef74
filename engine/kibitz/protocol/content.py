"""Peer-to-peer content over the data mesh: chat, app data, identity tokens, grants, schemas.

Every message is a JSON object with the kind under ``k`` (as in the original engine). The sender is
the mesh link's peer, never a field, so nobody can speak for someone else; display names come from
the roster. Unknown kinds are ignored and counted: that is how a newer peer talks to an older one.

The mesh delivers already-parsed JSON values, so :func:`decode_content` accepts a parsed object as
well as raw text. App data may be far larger than one frame (the mesh chunks it), up to
:data:`MAX_APP_BYTES` encoded; the original's 256 KiB cap would break the 10 MB broadcast the
product promises.

The hot kinds (``app`` and ``chat``) also have hand-written checks, :func:`check_app` and
:func:`check_chat`, that the router uses instead of building a model per message. They enforce the
same limits as :class:`App` and :class:`Chat`, which stay the schema of record: a check either
agrees with the model or (``chat`` only) answers :data:`UNSURE` and leaves the input to it. A
property test holds the two paths to the same verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal

from pydantic import ConfigDict, Field, field_validator

from kibitz.capabilities import CapsSnapshot, Grant
from kibitz.protocol.base import DropCounter, WireModel, decode, decode_object, dumps_compact, make_loads

MAX_CHAT_CHARS = 500
MAX_APP_BYTES = 16 * 1024 * 1024
MAX_JWT_CHARS = 8192
MAX_SCHEMA_NAME = 120
MAX_SCHEMA_VERSION = 64
MAX_SCHEMA_BYTES = 64 * 1024
MAX_CAPS_GRANTS = 256
MAX_CONTENT_BYTES = MAX_APP_BYTES + 1024
"""Largest raw content frame :func:`decode_content` looks at."""


def json_text(value: Any) -> str:
    """``value`` as compact JSON text (UTF-8 encodable); ``ValueError`` if it is not plain JSON."""
    try:
        text = dumps_compact(value)
        if not text.isascii():
            text.encode()  # a lone surrogate cannot travel as UTF-8
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON-serialisable: {exc}") from None
    return text


def utf8_len(text: str) -> int:
    """Bytes of ``text`` as UTF-8 (``ValueError`` for a lone surrogate), without copying ASCII."""
    return len(text) if text.isascii() else len(text.encode())


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON; ``ValueError`` if it is not plain JSON."""
    return utf8_len(json_text(value))


def _finite(literal: str) -> float:
    value = float(literal)
    if value - value != 0.0:  # inf - inf is nan
        raise ValueError(f"number {literal[:20]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_strict_loads: Final = make_loads(json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant))
"""Python's json accepts NaN/Infinity and turns 1e999 into inf; app data must be plain JSON."""

APP_TEXT_EXPANSION = 5
"""Re-encoding parsed JSON compactly grows it at most 4.5× (``1e15`` → ``1000000000000000.0``);
strings, whitespace and escapes only shrink. Text this many times under the limit needs no
re-encoding to know it fits."""


def parse_app_text(text: str) -> tuple[Any, str]:
    """App data given as JSON text (from the page): its value and the JSON text to carry.

    Raises ``ValueError`` for anything :class:`App` would refuse (not one JSON value, NaN or an
    infinite number, a lone surrogate, over :data:`MAX_APP_BYTES`). The text is carried as given
    unless it might hide a lone surrogate (a ``\\u`` escape) or might be near the limit; then the
    value is re-encoded, exactly as :class:`App` measures it.
    """
    if not isinstance(text, str):
        raise ValueError(f"app data must be JSON text, got {type(text).__name__}")
    try:
        value = _strict_loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"app data is not plain JSON: {exc}") from None
    size = utf8_len(text)
    if "\\u" in text or size * APP_TEXT_EXPANSION > MAX_APP_BYTES:
        text = json_text(value)
        size = utf8_len(text)
        if size > MAX_APP_BYTES:
            raise ValueError(f"app data of {size} bytes exceeds {MAX_APP_BYTES}")
    return value, text


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
    sig: str | None = Field(default=None, max_length=MAX_JWT_CHARS)
    """The host's signature over the map (rooms whose host holds a key; see kibitz.authority)."""

    def snapshot(self) -> CapsSnapshot:
        return CapsSnapshot(self.v, self.by, dict(self.grants), self.sig)

    @classmethod
    def of(cls, snap: CapsSnapshot) -> Caps:
        return cls(grants=dict(snap.grants), v=snap.version, by=snap.author, sig=snap.sig)


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


_NOT_STR: Final = (int, float, bool, list, dict)
"""JSON types that a lax ``str`` field refuses (bytes, str subclasses and the like are the model's)."""

UNSURE: Final = "unsure"
"""A fast check's answer when only the pydantic model can decide (a rare, lax-coerced input)."""


def check_app(obj: Mapping[str, Any]) -> str | None:
    """The data's compact JSON text when :class:`App` accepts ``obj`` (its ``k`` is ``"app"``), else None."""
    # json_text and utf8_len, inlined: this runs for every app message received.
    try:
        text = dumps_compact(obj.get("data"))
        if text.isascii():
            return text if len(text) <= MAX_APP_BYTES else None
        size = len(text.encode())  # UnicodeEncodeError (a ValueError) for a lone surrogate
    except (TypeError, ValueError, RecursionError):
        return None
    return text if size <= MAX_APP_BYTES else None


def check_chat(obj: Mapping[str, Any]) -> tuple[str, bool | None] | Literal["unsure"] | None:
    """``(text, dm)`` when :class:`Chat` accepts ``obj`` (its ``k`` is ``"chat"``), None when it refuses,
    :data:`UNSURE` when only the model can tell (``dm`` that is not a bool or null, a ``str`` subclass)."""
    text = obj.get("text")
    if type(text) is not str:
        return None if text is None or type(text) in _NOT_STR else UNSURE
    if not 1 <= len(text) <= MAX_CHAT_CHARS:
        return None
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return None
    dm = obj.get("dm")
    if dm is None or dm is True or dm is False:
        return text, dm
    return UNSURE


def app_wire(data_text: str) -> str:
    """The wire text of an app message whose data is already JSON text (one encode, not two)."""
    return '{"k":"app","data":' + data_text + "}"


def chat_wire(text: str, *, dm: bool = False) -> str:
    """The wire text of a chat line (the caller has checked the text as :class:`Chat` would)."""
    return '{"k":"chat","text":' + json_text(text) + (',"dm":true}' if dm else "}")


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
    return decode_object(raw, CONTENT_FAMILY, drops, kind_key="k")
