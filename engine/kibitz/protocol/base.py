"""Shared rules for every wire message: JSON text, a kind tag, size limits, counted drops.

Receiving never raises. A frame that is too big, not JSON, not an object, or fails validation is
dropped and counted by reason; an unknown kind is ignored and counted too (that is how a newer
peer can talk to an older one). Senders get a clear ``ValueError`` instead, before anything leaves.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 256 * 1024
"""Hard cap on one decoded message; the mesh chunks anything larger before it gets here."""


class WireModel(BaseModel):
    """Base for wire messages: immutable, unknown fields ignored (forward compatibility)."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)

    KIND_KEY: ClassVar[str] = "t"


M = TypeVar("M", bound=WireModel)


class DropCounter:
    """Why inbound frames were dropped; exported as metrics and checked by tests."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()

    def drop(self, reason: str) -> None:
        self.by_reason[reason] += 1

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def __repr__(self) -> str:
        return f"DropCounter({dict(self.by_reason)})"


def _not_json(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_dumps_compact() -> Callable[[Any], str]:
    slow: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                                                  allow_nan=False).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return slow
    try:
        # What JSONEncoder.encode builds on every call, built once. No circular-reference markers:
        # a cycle ends in RecursionError instead of ValueError, and every caller catches both.
        enc = make(None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, False)
        if "".join(enc({"a": [1, "é", None]}, 0)) != '{"a":[1,"é",null]}':
            return slow
    except Exception:  # pragma: no cover - a runtime whose _json differs: stay correct
        return slow

    def dumps_compact(value: Any) -> str:
        return "".join(enc(value, 0))

    return dumps_compact


dumps_compact: Callable[[Any], str] = _make_dumps_compact()
"""Compact JSON text, non-ASCII kept, NaN/Infinity refused (``ValueError``), non-JSON types
``TypeError``: ``json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``
without rebuilding an encoder per call."""


def make_loads(decoder: json.JSONDecoder) -> Callable[[str], Any]:
    """``decoder.decode`` minus its Python-level wrapper when the text is one bare value.

    The C scanner reads one value from the start; only if it stops short (surrounding whitespace,
    trailing junk) or fails does ``decoder.decode`` run, to give the same verdict and the same error.
    """
    # typeshed types make_scanner as a class taking itself; at runtime it takes the decoder.
    scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(decoder)  # type: ignore[arg-type]
    decode = decoder.decode

    def loads(text: str) -> Any:
        try:
            value, end = scan(text, 0)
        except (StopIteration, ValueError):
            return decode(text)
        return value if end == len(text) else decode(text)

    return loads


_loads_str = make_loads(json.JSONDecoder())


def loads(text: str | bytes) -> Any:
    """Exactly ``json.loads`` (bytes included), faster for the usual frame: one bare JSON value."""
    if type(text) is str and not text.startswith("\ufeff"):
        return _loads_str(text)
    return json.loads(text)


def encode(message: WireModel) -> str:
    """Compact JSON text, without fields left at ``None``."""
    text = json.dumps(message.model_dump(mode="json", exclude_none=True), separators=(",", ":"))
    if len(text.encode()) > MAX_FRAME_BYTES:
        raise ValueError(f"message of {len(text)} bytes exceeds the {MAX_FRAME_BYTES}-byte frame limit")
    return text


def decode(
    raw: str | bytes,
    family: Mapping[str, type[M]],
    drops: DropCounter,
    *,
    kind_key: str = "t",
    max_bytes: int = MAX_FRAME_BYTES,
) -> M | None:
    """Parse one frame into the model its kind names, or count why not and return ``None``."""
    if len(raw) > max_bytes:
        drops.drop("oversize")
        return None
    try:
        obj: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        drops.drop("not-json")
        return None
    return decode_object(obj, family, drops, kind_key=kind_key)


def decode_object(
    obj: Any, family: Mapping[str, type[M]], drops: DropCounter, *, kind_key: str = "t"
) -> M | None:
    """Validate an already-parsed frame into the model its kind names, or count why not."""
    if not isinstance(obj, Mapping):
        drops.drop("not-object")
        return None
    kind = obj.get(kind_key)
    if not isinstance(kind, str):
        drops.drop("no-kind")
        return None
    model = family.get(kind)
    if model is None:
        drops.drop("unknown-kind")
        return None
    try:
        return model.model_validate(obj)
    except (ValidationError, RecursionError, ValueError):
        drops.drop(f"invalid:{kind}")
        return None
