"""Room ids are a frozen ABI shared with the original engine: golden values, not re-derivations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kibitz import room_peer_id
from kibitz.ids import PEER_ID_PATTERN, new_member_id, normalize_room


@pytest.mark.parametrize(
    ("room", "expected"),
    [
        ("My Room!", "kbz-v1-my-room"),
        ("room-3f9k2mq7p1", "kbz-v1-room-3f9k2mq7p1"),
        ("  --Hello__World--  ", "kbz-v1-hello-world"),
        ("ÜBER café", "kbz-v1-ber-caf"),
        ("a" * 50, "kbz-v1-" + "a" * 40),
        # Cut after trimming: a dash at position 40 survives, exactly as in the original.
        ("a" * 39 + " b", "kbz-v1-" + "a" * 39 + "-"),
        ("123", "kbz-v1-123"),
    ],
)
def test_golden_room_ids(room: str, expected: str) -> None:
    assert room_peer_id(room) == expected


@pytest.mark.parametrize("room", ["", "   ", "!!!", "---", "日本語"])
def test_empty_after_normalisation_is_a_clear_value_error(room: str) -> None:
    with pytest.raises(ValueError, match="no letters or digits"):
        room_peer_id(room)


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        room_peer_id(42)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_normalised_room_is_a_valid_slug(room: str) -> None:
    slug = normalize_room(room)
    assert len(slug) <= 40
    assert set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert not slug.startswith("-")
    assert "--" not in slug
    assert normalize_room(slug) == slug.rstrip("-")  # idempotent up to a dash left by the cut


def test_member_ids_are_valid_and_distinct() -> None:
    ids = {new_member_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(PEER_ID_PATTERN.match(i) and i.startswith("kbz-m-") for i in ids)
