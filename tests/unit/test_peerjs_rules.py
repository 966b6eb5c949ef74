"""The offline queue the broker and the hub share (kibitz.server.peerjs_rules)."""

from __future__ import annotations

from kibitz.server.peerjs_rules import OfflineQueues, valid_id


def test_bounds_per_id_and_in_all_and_a_full_queue_leaves_nothing_behind() -> None:
    q: OfflineQueues[str] = OfflineQueues(per_id=2, total=3)
    assert q.push("a", 0.0, "x", "1") and q.push("a", 0.0, "y", "2")
    assert not q.push("a", 0.0, "x", "3")  # per id
    assert q.push("b", 0.0, "x", "4")
    assert not q.push("c", 0.0, "x", "5")  # in all: no empty queue is left for "c"
    assert set(q.by_id) == {"a", "b"} and q.count == 3
    # The sweep after the bound was hit must not trip over an empty queue (it did: IndexError).
    assert q.expire(10.0, 5.0) == (3, [("a", "x"), ("a", "y"), ("b", "x")])
    assert q.by_id == {} and q.count == 0


def test_take_returns_in_order_and_expire_owes_one_expire_per_sender() -> None:
    q: OfflineQueues[bytes] = OfflineQueues(per_id=10, total=10)
    for at, src in [(0.0, "x"), (1.0, "x"), (2.0, "y"), (6.0, "x")]:
        assert q.push("d", at, src, src.encode())
    assert q.expire(6.5, 5.0) == (2, [("d", "x")])  # two of x's frames, one EXPIRE
    assert q.take("d") == [("y", b"y"), ("x", b"x")] and q.count == 0 and q.take("d") is None


def test_ids() -> None:
    assert valid_id("abc-1_2 x") and not valid_id("") and not valid_id("a" * 257) and not valid_id(7)
    assert not valid_id("-a") and not valid_id("a b!")
