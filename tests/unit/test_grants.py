"""Room grants and licence ids: the original's format (golden vectors made with Node's crypto, as
the original's JS would write them), and every way a grant is refused."""

from __future__ import annotations

import base64
import json

import pytest

from kibitz.server.grants import (
    GRANT_TTL_S,
    bearer_token,
    licence_hash,
    licence_sub,
    mint_grant,
    new_licence_token,
    verify_grant,
)

SECRET = b"kibitz-golden-grant-key-0123456789abcdef"
LICENCE = "kbz_lic_golden-licence-token"
SUB = "iC2tkaM4w9Fn7Uef"
# node -e: b64u(JSON.stringify({room, sub, exp})) + "." + b64u(HMAC-SHA256(secret, body))
GOLDEN = [
    ("room-3f9k2mq7p1", 1_800_000_600,
     "eyJyb29tIjoicm9vbS0zZjlrMm1xN3AxIiwic3ViIjoiaUMydGthTTR3OUZuN1VlZiIsImV4cCI6MTgwMDAwMDYwMH0"
     ".U1yFQrSl8WeBq-lElF8zFCa3ThRiY03rWkulUUAlEV4"),
    ("Room_1.a:b-c", 1_700_000_000,
     "eyJyb29tIjoiUm9vbV8xLmE6Yi1jIiwic3ViIjoiaUMydGthTTR3OUZuN1VlZiIsImV4cCI6MTcwMDAwMDAwMH0"
     ".MhaEsmq3qfbw2Ljbdsk0rgLNWzqpliozsyrm4FRa17M"),
]


def test_licence_sub_is_the_first_16_chars_of_b64url_sha256() -> None:
    assert licence_sub(licence_hash(LICENCE)) == SUB


@pytest.mark.parametrize(("room", "exp", "grant"), GOLDEN)
def test_grant_format_matches_the_original_byte_for_byte(room: str, exp: int, grant: str) -> None:
    assert mint_grant(SECRET, room, SUB, now=exp - GRANT_TTL_S) == (grant, exp)
    check = verify_grant(SECRET, grant, room, now=exp - 1)
    assert check.ok and check.sub == SUB


def test_grants_last_600_seconds() -> None:
    grant, exp = mint_grant(SECRET, "room-a", SUB, now=1000.9)
    assert exp == 1600
    assert verify_grant(SECRET, grant, "room-a", 1599.99).ok
    late = verify_grant(SECRET, grant, "room-a", 1600)
    assert not late.ok and late.refusal == "expired" and "expired" in late.reason


def _forge(claims: dict[str, object], secret: bytes = SECRET) -> str:
    import hashlib
    import hmac

    def b64u(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    body = b64u(json.dumps(claims, separators=(",", ":")).encode())
    return body + "." + b64u(hmac.new(secret, body.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize(
    ("grant", "room", "refusal"),
    [
        (GOLDEN[0][2], "room-other", "other-room"),
        (GOLDEN[0][2], None, "no-room"),
        (GOLDEN[0][2], "", "no-room"),
        # a different key: a grant minted by someone else's server
        (_forge({"room": "room-3f9k2mq7p1", "sub": SUB, "exp": 1_800_000_600}, b"x" * 40), "room-3f9k2mq7p1",
         "forged"),
        # the body changed after signing (a longer life)
        (GOLDEN[0][2].replace("MH0", "MX0", 1), "room-3f9k2mq7p1", "forged"),
        # signature swapped in from another grant
        (GOLDEN[0][2].split(".")[0] + "." + GOLDEN[1][2].split(".")[1], "room-3f9k2mq7p1", "forged"),
        ("", "room-3f9k2mq7p1", "malformed"),
        ("no-dot-here", "room-3f9k2mq7p1", "malformed"),
        ("a.b.c", "room-3f9k2mq7p1", "malformed"),
        ("abc.%%%", "room-3f9k2mq7p1", "malformed"),
        ("x" * 2000 + ".y", "room-3f9k2mq7p1", "malformed"),
        # signed, but not the shape of a grant
        (_forge({"room": "room-3f9k2mq7p1", "sub": SUB}), "room-3f9k2mq7p1", "malformed"),
        (_forge({"room": "room-3f9k2mq7p1", "sub": SUB, "exp": "1800000600"}), "room-3f9k2mq7p1",
         "malformed"),
        (_forge({"room": "room-3f9k2mq7p1", "sub": SUB, "exp": True}), "room-3f9k2mq7p1", "malformed"),
        (_forge({"room": "room-3f9k2mq7p1", "sub": 7, "exp": 1_800_000_600}), "room-3f9k2mq7p1", "malformed"),
    ],
)
def test_bad_grants_are_refused_with_a_reason(grant: str, room: str | None, refusal: str) -> None:
    check = verify_grant(SECRET, grant, room, now=1_800_000_000)
    assert not check.ok and check.sub is None
    assert check.refusal == refusal and check.reason


def test_signed_non_json_body_is_malformed_not_a_crash() -> None:
    import hashlib
    import hmac

    body = base64.urlsafe_b64encode(b"\xff\xfe not json").rstrip(b"=").decode()
    mac = base64.urlsafe_b64encode(hmac.new(SECRET, body.encode(), hashlib.sha256).digest()).rstrip(b"=")
    check = verify_grant(SECRET, f"{body}.{mac.decode()}", "room-a", 0)
    assert check.refusal == "malformed"


@pytest.mark.parametrize("room", ["", "has space", "x" * 201, "ümlaut", "a/b"])
def test_grants_are_minted_only_for_rooms_of_the_original_rule(room: str) -> None:
    with pytest.raises(ValueError, match="room must match"):
        mint_grant(SECRET, room, SUB, 0)


def test_licence_tokens_are_long_random_and_prefixed() -> None:
    a, b = new_licence_token(), new_licence_token()
    assert a != b and a.startswith("kbz_lic_") and len(a) >= 8 + 43
    assert len(licence_hash(a)) == 32


@pytest.mark.parametrize(
    ("header", "token", "bad"),
    [
        (None, None, False),
        ("", None, False),
        ("Bearer abc", "abc", False),
        ("bearer   abc  ", "abc", False),
        ("Basic abc", None, True),
        ("Bearer", None, True),
        ("Bearer " + "a" * 300, None, True),
    ],
)
def test_bearer_header(header: str | None, token: str | None, bad: bool) -> None:
    got, reason = bearer_token(header)
    assert got == token
    assert bool(reason) is bad
