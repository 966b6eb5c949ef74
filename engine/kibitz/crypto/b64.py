"""Strict base64url without padding (RFC 4648 §5), the encoding of every key, token and blob.

There is exactly one text for each byte string: :func:`b64url_decode` refuses padding, whitespace,
characters outside ``A-Z a-z 0-9 - _``, an impossible length and non-zero trailing bits, each with
a ``ValueError`` whose message names the problem. A lenient decoder would let one token have
several spellings (a replay filter keyed on the text would then miss copies) and would quietly
accept pasted garbage.
"""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
_OUTSIDE = re.compile(r"[^A-Za-z0-9_-]")


def b64url_encode(data: bytes) -> str:
    """``data`` as base64url text with no ``=`` padding."""
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of canonical, unpadded base64url ``text``; ``ValueError`` says what is wrong."""
    if not isinstance(text, str):
        raise TypeError(f"b64url: expected str, got {type(text).__name__}")
    if _ALPHABET.fullmatch(text) is None:
        found = _OUTSIDE.search(text)
        assert found is not None
        at, char = found.start(), found.group()
        if char == "=":
            raise ValueError(f"b64url: padding '=' is not allowed (at {at})")
        if char.isspace():
            raise ValueError(f"b64url: whitespace is not allowed (at {at})")
        if char in "+/":
            raise ValueError(f"b64url: {char!r} is standard base64, not base64url (at {at})")
        raise ValueError(f"b64url: character {char!r} is not in the alphabet (at {at})")
    if len(text) % 4 == 1:
        raise ValueError(f"b64url: impossible length {len(text)} (a multiple of 4 plus 1)")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:  # pragma: no cover - the checks above leave nothing for it
        raise ValueError(f"b64url: {exc}") from None
    if b64url_encode(data) != text:
        raise ValueError("b64url: non-canonical (the last character has unused bits set)")
    return data
