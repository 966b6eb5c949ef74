"""The original engine's compact signed token: ``b64url(JSON payload) + "." + b64url(r‖s)``.

The signature is ECDSA P-256/SHA-256 (:mod:`kibitz.crypto.p256`, raw 64-byte ``r‖s``) over the
ASCII bytes of the base64url body, so a token WebCrypto signed verifies here and the reverse.
The same format carries invites ``{name, room, exp}``, host commands and agent key assertions;
what a payload means (expiry, audience, room, replay) is the caller's business, checked only after
:func:`verify_token` has returned the payload.

ECDSA is malleable: ``(r, n-s)`` is a second valid signature of the same body, and we accept it
(WebCrypto does not normalise ``s``). A replay filter must therefore key on the body (or a nonce /
``iat`` inside the payload), never on the whole token text or the signature.

:func:`verify_token` never raises on what a peer sends. It returns the payload (a ``dict``) or a
:class:`Refusal` whose ``reason`` is one short stable word (:data:`REFUSAL_REASONS`) a caller can
count and switch on, plus a human ``detail``. Checks, in order, each before any work it guards:
the length cap, exactly one dot, strict base64url of both halves (:mod:`kibitz.crypto.b64`), a
64-byte signature, the signature itself, and only then the payload: UTF-8, strict JSON (no
``NaN``/``Infinity``, no duplicate keys, no lone surrogates, nesting at most :data:`MAX_DEPTH`),
an object at the top.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, get_args

from kibitz.crypto.b64 import b64url_decode, b64url_encode
from kibitz.crypto.p256 import SIGNATURE_BYTES, PrivateKey, PublicKey

MAX_TOKEN_CHARS = 8192
MAX_DEPTH = 16

RefusalReason = Literal["oversize", "malformed", "bad-signature", "bad-json", "not-object"]
REFUSAL_REASONS: tuple[RefusalReason, ...] = get_args(RefusalReason)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a token was refused: ``reason`` is stable (count it), ``detail`` is for people."""

    reason: RefusalReason
    detail: str


def _strict_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


# A string literal, or an unterminated one running to the end: never backtracks, so linear time.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside string literals (counted before ``json.loads``
    recurses, so deep input cannot exhaust the stack, which under Pyodide is small)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def strict_json(text: str) -> Any:
    """``json.loads`` for text from a peer, or ``ValueError``: nesting at most :data:`MAX_DEPTH`
    (counted before the parser recurses), no ``NaN``/``Infinity``, no duplicate keys, no lone
    surrogates. Used for every signed payload (compact tokens here, JWTs in :mod:`kibitz.identity`)."""
    if _depth(text) > MAX_DEPTH:
        raise ValueError(f"nests deeper than {MAX_DEPTH}")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_strict_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates (\ud800) cannot travel on
    except RecursionError:
        raise ValueError("nests too deep") from None
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate") from None
    return value


def _encode_payload(payload: Mapping[str, object]) -> bytes:
    if not isinstance(payload, Mapping):
        raise TypeError(f"token payload must be a mapping, got {type(payload).__name__}")
    if not all(isinstance(key, str) for key in payload):
        raise TypeError("token payload keys must be str")
    text = json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if _depth(text) > MAX_DEPTH:
        raise ValueError(f"token payload nests deeper than {MAX_DEPTH}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("token payload holds a lone surrogate") from None


def sign_token(key: PrivateKey, payload: Mapping[str, object], *, max_chars: int = MAX_TOKEN_CHARS) -> str:
    """A compact token for ``payload`` (compact JSON, keys in the mapping's order, UTF-8).

    Raises ``TypeError``/``ValueError`` for what :func:`verify_token` would refuse: a non-JSON
    value, NaN, nesting deeper than :data:`MAX_DEPTH`, a token longer than ``max_chars``.
    """
    if not isinstance(key, PrivateKey):
        raise TypeError(f"sign_token needs a PrivateKey, got {type(key).__name__}")
    body = b64url_encode(_encode_payload(payload))
    token = body + "." + b64url_encode(key.sign(body.encode("ascii")))
    if len(token) > max_chars:
        raise ValueError(f"token would be {len(token)} characters, over the cap of {max_chars}")
    return token


def verify_token(
    pub: PublicKey, token: object, *, max_chars: int = MAX_TOKEN_CHARS
) -> dict[str, Any] | Refusal:
    """The payload of ``token`` if ``pub`` signed it, else a :class:`Refusal`. Never raises on
    ``token``; a ``pub`` that is not a :class:`PublicKey` is a programming error (``TypeError``)."""
    if not isinstance(pub, PublicKey):
        raise TypeError(f"verify_token needs a PublicKey, got {type(pub).__name__}")
    if not isinstance(token, str):
        return Refusal("malformed", f"a token is text, got {type(token).__name__}")
    if len(token) > max_chars:
        return Refusal("oversize", f"{len(token)} characters, over the cap of {max_chars}")
    dots = token.count(".")
    if dots != 1:
        return Refusal("malformed", f"a token has exactly one '.', this one has {dots}")
    body, sig_text = token.split(".")
    try:
        signature = b64url_decode(sig_text)
        b64url_decode(body)  # strict: a second spelling of the same body is refused, not verified
    except ValueError as exc:
        return Refusal("malformed", str(exc))
    if len(signature) != SIGNATURE_BYTES:
        return Refusal("malformed", f"the signature is {len(signature)} bytes, not {SIGNATURE_BYTES}")
    if not pub.verify(signature, body.encode("ascii")):
        return Refusal("bad-signature", "the signature does not match this key and body")
    # Signed by the key holder from here on; still checked, since a key holder's software can err.
    raw = b64url_decode(body)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal("bad-json", "the payload is not UTF-8")
    try:
        value = strict_json(text)
    except ValueError as exc:
        return Refusal("bad-json", f"the payload is not strict JSON ({exc})")
    if not isinstance(value, dict):
        return Refusal("not-object", f"the payload is a JSON {type(value).__name__}, not an object")
    return value
