"""The licence store, both implementations: hashes only, revocation, and atomic metering with caps,
also under concurrency (many requests at once, and several processes' connections on one file)."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kibitz.server.grants import licence_hash, licence_sub, new_licence_token
from kibitz.server.licences import (
    Licence,
    LicenceStore,
    MemoryLicenceStore,
    SqliteLicenceStore,
    check_licence,
    month_of,
)
from kibitz.server.licences_redis import RedisLicenceStore


def make_licence(cap: int | None = None, label: str = "", created: float = 1.0) -> tuple[str, Licence]:
    token = new_licence_token()
    digest = licence_hash(token)
    return token, Licence(licence_sub(digest), digest, label, cap, created)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LicenceStore]:
    s: LicenceStore
    if request.param == "memory":
        s = MemoryLicenceStore()
    elif request.param == "sqlite":
        s = SqliteLicenceStore(tmp_path / "state" / "licences.sqlite3")
    else:  # several nodes: the service's Redis (a real redis-server), a key prefix per test
        url = request.getfixturevalue("redis_session").url
        s = RedisLicenceStore(url, f"lic{secrets.token_hex(4)}:")
    yield s
    await s.close()


def test_month_is_utc() -> None:
    assert month_of(1_767_225_599) == "2025-12"  # 2025-12-31 23:59:59 UTC
    assert month_of(1_767_225_600) == "2026-01"


async def test_add_find_revoke_list(store: LicenceStore) -> None:
    token, lic = make_licence(cap=5, label="dana@example", created=10.0)
    _, other = make_licence(created=20.0)
    await store.add(lic)
    await store.add(other)
    with pytest.raises(ValueError, match="already exists"):
        await store.add(lic)
    assert await store.by_hash(licence_hash(token)) == lic
    assert await store.by_hash(licence_hash(token + "x")) is None
    assert await store.by_id(lic.id) == lic
    assert [x.id for x in await store.all()] == [lic.id, other.id]

    assert await store.revoke(lic.id, 99.0) is True
    assert await store.revoke(lic.id, 100.0) is False  # already revoked
    assert await store.revoke("nobody", 100.0) is False
    revoked = await store.by_hash(licence_hash(token))
    assert revoked is not None and revoked.revoked == 99.0 and not revoked.active
    found, why = check_licence(revoked, licence_hash(token))
    assert found is None and "revoked" in why


async def test_check_licence_compares_the_digest() -> None:
    token, lic = make_licence()
    assert check_licence(lic, licence_hash(token)) == (lic, "")
    assert check_licence(lic, licence_hash("other"))[0] is None  # a store that returned a wrong row
    assert check_licence(None, licence_hash(token))[1] == "the licence is not known here"


async def test_meter_counts_per_licence_and_month_up_to_the_cap(store: LicenceStore) -> None:
    assert [await store.meter("a", "2026-01", 3) for _ in range(5)] == [1, 2, 3, None, None]
    assert await store.meter("a", "2026-02", 3) == 1  # a new month, a new allowance
    assert await store.meter("b", "2026-01", None) == 1  # no cap
    assert await store.meter("c", "2026-01", 0) is None  # cap 0: nothing
    usage = await store.usage()
    assert [(u.licence_id, u.month, u.credentials) for u in usage] == [
        ("a", "2026-01", 3), ("b", "2026-01", 1), ("a", "2026-02", 1)]
    assert [(u.licence_id, u.credentials) for u in await store.usage("2026-02")] == [("a", 1)]


async def test_concurrent_requests_never_exceed_the_cap(store: LicenceStore) -> None:
    got = await asyncio.gather(*(store.meter("hot", "2026-03", 25) for _ in range(200)))
    assert sorted(n for n in got if n is not None) == list(range(1, 26))
    assert got.count(None) == 175


async def test_sqlite_store_keeps_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "licences.sqlite3"
    store = SqliteLicenceStore(path)
    token, lic = make_licence(label="x")
    await store.add(lic)
    await store.close()
    assert token.encode() not in path.read_bytes()
    assert (path.stat().st_mode & 0o777) == 0o600
    reopened = SqliteLicenceStore(path)  # it survives a restart
    assert await reopened.by_hash(licence_hash(token)) == lic
    await reopened.close()


def test_sqlite_metering_is_atomic_across_connections(tmp_path: Path) -> None:
    """Several server processes share the file: 8 threads, each with its own store (connection),
    meter at once; exactly the cap is handed out and the counter equals the successes."""
    path = tmp_path / "licences.sqlite3"
    results: list[int | None] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        async def run() -> list[int | None]:
            store = SqliteLicenceStore(path)
            try:
                await store.usage()  # connect (and create the schema) before the race
                start.wait()
                return [await store.meter("shared", "2026-04", 60) for _ in range(15)]
            finally:
                await store.close()

        got = asyncio.run(run())
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 120
    assert sorted(n for n in results if n is not None) == list(range(1, 61))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT credentials FROM usage").fetchall() == [(60,)]


async def test_redis_store_keeps_only_hashes_and_two_nodes_share_one_meter(redis_session: Any) -> None:
    """Two nodes' stores on one Redis: a licence added through one is found through the other, the
    token is nowhere in Redis, and metering from both at once never passes the cap."""
    import redis.asyncio as aioredis

    prefix = f"lic{secrets.token_hex(4)}:"
    a, b = RedisLicenceStore(redis_session.url, prefix), RedisLicenceStore(redis_session.url, prefix)
    token, lic = make_licence(cap=40, label="x")
    await a.add(lic)
    assert await b.by_hash(licence_hash(token)) == lic
    with pytest.raises(ValueError, match="already exists"):
        await b.add(lic)
    got = await asyncio.gather(*(s.meter(lic.id, "2026-05", 40) for s in (a, b) for _ in range(50)))
    assert sorted(n for n in got if n is not None) == list(range(1, 41))
    assert await b.revoke(lic.id, 5.0) and not await a.revoke(lic.id, 6.0)
    assert (await a.by_id(lic.id)) == replace(lic, revoked=5.0)
    r = aioredis.Redis.from_url(redis_session.url)
    for key in await r.keys(f"{prefix}*"):
        kind = await r.type(key)
        if kind == b"string":
            values = [await r.get(key)]
        elif kind == b"hash":
            values = list((await r.hgetall(key)).values())
        else:
            values = list(await r.smembers(key))
        assert all(token.encode() not in (v or b"") for v in values)
    await r.aclose()
    await a.close()
    await b.close()
