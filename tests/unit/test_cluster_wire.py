"""What nodes keep in Redis and say to each other (cluster_wire.py): golden vectors for the formats,
and the Lua scripts run on a real redis-server, checked against the Python side of the same format."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis_fixture import RedisServer, running_redis

from kibitz.server import cluster_wire as wire
from kibitz.server.cluster_wire import Contacts, IdRecord, Kick, Message

BODY = '{"type":"OFFER","src":"alice","dst":"bob","payload":"é"}'.encode()
GOLDEN_BATCH = (
    b'n1\x01Mq\x00bob\x00alice\x00{"type":"OFFER","src":"alice","dst":"bob","payload":"\xc3\xa9"}'
    b"\x01K\x00carol\x007\x01C\x00carol\x007\x00dave\x00erin"
)


def test_golden_vectors() -> None:
    assert wire.token_hash("tok-1") == "4d9bd8f369bde2ff22d22898fd0f6405"
    records: list[wire.Record] = [
        Message("bob", "alice", BODY, True), Kick("carol", 7), Contacts("carol", 7, ("dave", "erin"))
    ]
    assert wire.encode_batch("n1", records) == GOLDEN_BATCH
    assert wire.decode_batch(GOLDEN_BATCH) == ("n1", records, 0)
    assert IdRecord.decode(b"n1 12 abc") == IdRecord("n1", 12, "abc")
    assert IdRecord("n1", 12, "abc").encode() == b"n1 12 abc"
    assert wire.split_queue_value(wire.queue_value("a b", BODY)) == ("a b", BODY)


def test_bodies_keep_their_bytes_and_bad_records_are_counted_not_raised() -> None:
    body = b'{"type":"CANDIDATE",\n "dst" : "x y",  "payload":{"c":"a\\u0000b"}}'
    got = wire.decode_batch(wire.encode_batch("n2", [Message("x y", "z", body, False)]))
    assert got == ("n2", [Message("x y", "z", body, False)], 0)
    leave = Message("x", "gone", b'{"type":"LEAVE","src":"gone","dst":"x"}', False, departure=True)
    golden = b'n2\x01Md\x00x\x00gone\x00{"type":"LEAVE","src":"gone","dst":"x"}'
    assert wire.encode_batch("n2", [leave]) == golden
    assert wire.decode_batch(wire.encode_batch("n2", [leave])) == ("n2", [leave], 0)
    bad = (
        b"n3\x01Zjunk\x01K\x00carol\x00notanumber\x01Mq\x00only-two\x01\xff\xfe"
        b"\x01Mz\x00a\x00b\x00{}\x01K\x00ok\x003"
    )
    assert wire.decode_batch(bad) == ("n3", [Kick("ok", 3)], 5)
    for raw in (None, b"", b"n1 x abc", b"n1 1", b"a b c d"):
        assert IdRecord.decode(raw) is None
    assert wire.split_queue_value(b"no-separator") is None


# ------------------------------------------------------------------------------ scripts on Redis


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as r:
        yield r


@pytest.fixture
async def r(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def p() -> str:
    return f"w{secrets.token_hex(3)}:"


async def alive(r: aioredis.Redis, p: str, *nodes: str) -> None:
    for n in nodes:
        await r.set(f"{p}node:{n}", "{}", px=60_000)


async def claim(r: aioredis.Redis, p: str, id_: str, node: str, tok: str, free: str = "1") -> list[bytes]:
    res = await r.eval(wire.CLAIM, 0, p, id_, node, wire.token_hash(tok), 60_000, free)
    return list(res)


async def test_claim_is_unique_takes_over_with_a_new_epoch_and_frees_a_dead_nodes_ids(
    r: aioredis.Redis, p: str
) -> None:
    await alive(r, p, "A", "B")
    assert await claim(r, p, "carol", "A", "t1") == [b"open", 1, b""]
    assert await claim(r, p, "carol", "B", "t2") == [b"taken", b"A"]
    # same token elsewhere: epoch 2, A is told to close its copy (checked in the route test below)
    assert await claim(r, p, "carol", "B", "t1") == [b"open", 2, b"A"]
    assert IdRecord.decode(await r.get(f"{p}id:carol")) == IdRecord("B", 2, wire.token_hash("t1"))
    # B dies (its registry key expires): anyone may take carol, the epoch still grows
    await r.delete(f"{p}node:B")
    assert await claim(r, p, "carol", "A", "t3") == [b"open", 3, b""]
    # a record naming this node while it holds no socket for the id is stale (release in flight)
    assert await claim(r, p, "carol", "A", "t4", free="0") == [b"taken", b"A"]
    assert await claim(r, p, "carol", "A", "t4", free="1") == [b"open", 4, b""]


async def test_release_and_refresh_act_only_on_a_matching_node_and_epoch(r: aioredis.Redis, p: str) -> None:
    await alive(r, p, "A", "B")
    await claim(r, p, "erin", "A", "t1")
    await claim(r, p, "erin", "B", "t1")  # epoch 2 on B
    assert await r.eval(wire.RELEASE, 0, p, "A", "erin", 1) == 0  # A's stale epoch: nothing
    assert await r.get(f"{p}id:erin") is not None
    tok = wire.token_hash("t1")
    # A refreshing what it thinks it holds learns it lost it (same token: a takeover)
    assert await r.eval(wire.REFRESH, 0, p, "A", 60_000, "erin", 1, tok) == b"s"
    await claim(r, p, "erin", "B", "t1")  # epoch 3
    await r.set(f"{p}id:erin", f"B 3 {wire.token_hash('other')}")
    assert await r.eval(wire.REFRESH, 0, p, "A", 60_000, "erin", 1, tok) == b"t"
    # after Redis lost the record, the holder writes it back
    await r.delete(f"{p}id:frank")
    assert await r.eval(wire.REFRESH, 0, p, "A", 60_000, "frank", 5, tok) == b"k"
    assert IdRecord.decode(await r.get(f"{p}id:frank")) == IdRecord("A", 5, tok)
    assert await r.eval(wire.RELEASE, 0, p, "A", "frank", 5) == 1
    assert await r.get(f"{p}id:frank") is None


async def test_route_publishes_what_python_decodes_queues_the_rest_and_runs_a_batch_once(
    r: aioredis.Redis, p: str, redis_server: RedisServer
) -> None:
    await alive(r, p, "A", "B")
    await claim(r, p, "bob", "B", "tb")
    sub = aioredis.Redis.from_url(redis_server.url)
    ps = sub.pubsub(ignore_subscribe_messages=True)
    await ps.subscribe(f"{p}ch:B")
    args = [p, "A", 1, 2, 10_000]
    frames = [("bob", "alice", BODY, "q"), ("ghost", "alice", b"{}", "q"), ("ghost", "alice", b"[]", "q"),
              ("ghost", "alice", b"1", "q"), ("gone", "alice", b"2", "n"), ("bob", "x y", b"3", "n"),
              ("bob", "left", b"4", "d"), ("ghost", "left", b"5", "d")]
    for f in frames:
        args += f
    assert await r.eval(wire.ROUTE, 0, *args) == b"dqqfxddx"
    assert await r.eval(wire.ROUTE, 0, *args) == b"dqqfxddx"  # the same batch again: not re-run
    msg = await _next(ps)
    delivered = [Message("bob", "alice", BODY, True), Message("bob", "x y", b"3", False),
                 Message("bob", "left", b"4", False, departure=True)]
    assert msg is not None and wire.decode_batch(msg) == ("A", delivered, 0)
    assert await _next(ps, 0.3) is None  # published once
    assert await r.lrange(f"{p}q:ghost", 0, -1) == [b"alice\x00{}", b"alice\x00[]"]
    # the claim pops the queue, and the expiry script finds nothing left to take back
    assert await claim(r, p, "ghost", "A", "tg") == [b"open", 1, b"", b"alice\x00{}", b"alice\x00[]"]
    assert await r.eval(wire.UNQUEUE, 0, p, "ghost", b"alice\x00{}") == b"0"
    # a kick from a takeover is a batch too
    await claim(r, p, "bob", "A", "tb")
    kick = await _next(ps)
    assert kick is not None and wire.decode_batch(kick) == ("A", [Kick("bob", 2)], 0)
    await ps.aclose()
    await sub.aclose()


async def _next(ps: aioredis.client.PubSub, timeout: float = 2.0) -> bytes | None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        msg = await ps.get_message(timeout=0.1)
        if msg is not None and msg["type"] == "message":
            data = msg["data"]
            assert isinstance(data, bytes)
            return data
    return None
