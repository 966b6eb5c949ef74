"""The mesh's wire format: its frames, their size limits, and checking a message before it is queued.

:mod:`kibitz.mesh_stream` writes and reads these frames; nothing here keeps state.

Framing (one data channel, label ``kbz-data`` by default)
    Text frames are JSON objects keyed by ``t``:

    * ``{"t":"hi","v":1,"sid":S,"base":B,"ack":{"sid":R,"s":N}|null,"pa":1}``: first frame on every
      link (``pa``: this end reads acks carried on messages).
      ``S`` is the sender's stream id, ``B`` the oldest sequence it still holds (the next one if
      none); ``ack`` says how far the sender has delivered the *peer's* stream ``R``. Data is
      written only after the peer's ``hi`` arrived, so resends skip what the peer already has.
    * ``{"t":"m","s":N,"d":VALUE}``: message ``N`` whose JSON encoding fits in one chunk. It may
      carry an ack for the other direction, ``{"t":"m","s":N,"a":A,"d":VALUE}``: everything up to
      ``A`` of the *receiver's* stream was delivered (the stream the sender was greeted with on
      this link). Only sent to a peer whose ``hi`` said ``"pa":1`` (it reads ``a``); older peers
      get ``ack`` frames as before, so mixed versions still release their resend buffers.
    * ``{"t":"ack","sid":R,"s":N}``: everything up to ``N`` of stream ``R`` was delivered.
    * ``{"t":"bye"}``: the sender is leaving on purpose (do not park it); older peers ignore it.

    Larger messages travel as binary chunk frames: a 23-byte little-endian header
    (:data:`CHUNK_HEADER`) ``b"KZ" | u8 version=1 | u64 seq | u32 index | u32 count | u32 total``
    followed by at most :data:`CHUNK_SIZE` bytes of the message's UTF-8 JSON; chunks are written in
    order and reassembled by the receiver. A text frame longer than :data:`MAX_TEXT_FRAME` and a
    message larger than :data:`MAX_MESSAGE_BYTES` are refused.
"""

from __future__ import annotations

import json
import struct
from typing import Any, TypeGuard

from kibitz.protocol.base import dumps_compact, make_loads

FRAME_VERSION = 1
CHUNK_SIZE = 64 * 1024
"""Largest message body per frame; well below the SCTP message limit of every stack we meet."""
MAX_MESSAGE_BYTES = 50 * 1024 * 1024
"""Largest message, encoded, we send or reassemble."""
MAX_TEXT_FRAME = CHUNK_SIZE + 1024

CONTROL_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""Encodes ``hi`` and ``ack`` frames (ASCII: the encoder escapes the rest)."""
BYE_FRAME = CONTROL_ENCODER.encode({"t": "bye"})
loads_text = make_loads(json.JSONDecoder())
"""``json.loads`` for a text frame in one call (a BOM or trailing junk fails either way)."""
CHUNK_HEADER = struct.Struct("<2sBQIII")
MAGIC = b"KZ"

Encoded = tuple[str | None, bytes | None, int]
"""A checked message: one frame's text, or the UTF-8 blob to chunk, and its size in bytes."""


def encode(message: Any) -> Encoded:
    """``message`` as compact JSON, checked and sized (``ValueError`` when not plain JSON)."""
    try:
        text = dumps_compact(message)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"message is not plain JSON: {exc}") from None
    return sized(text)


def sized(text: str) -> Encoded:
    """One frame's text for a small message, the UTF-8 blob to chunk for a large one."""
    if text.isascii():
        size = len(text)
        if size <= CHUNK_SIZE:
            return text, None, size
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        raise ValueError("message is not plain JSON: it holds a lone surrogate") from None
    size = len(raw)
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    if size <= CHUNK_SIZE:
        return text, None, size
    return None, raw, size


def is_int(v: object) -> TypeGuard[int]:
    """A JSON integer that fits a sequence number (not a bool, 0 <= v < 2**63)."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63
