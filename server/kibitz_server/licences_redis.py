"""The licence store in Redis, for several ``kibitz serve --redis`` nodes: one set of licences and one
meter for the whole service, behind the same :class:`~kibitz.server.licences.LicenceStore` seam.

Keys (``P`` is the prefix, ``kbz:`` by default):

* ``P lic:<id>`` – a hash: ``key_hash`` (hex), ``label``, ``cap`` (empty = none), ``created``,
  ``revoked`` (empty = active). The token itself is never stored, only its SHA-256.
* ``P lichash:<hex of the hash>`` – the id, for lookups by the presented token's digest.
* ``P licids`` – the set of ids (``kibitz licence list``).
* ``P use:<month>`` – a hash of licence id → credentials metered that month; ``P usemonths`` –
  the months seen.

Adding and metering are Lua scripts, so they are atomic across nodes exactly as the SQLite store's
statements are across processes: "add one unless at the cap" can never hand out the last unit twice.
Redis holds this state in memory: run it with persistence (AOF or RDB) where licences matter; the
tests run it without.
"""

from __future__ import annotations

from typing import Any

from .licences import Licence, Usage
from .redis_pool import bounded_redis, text

ADD = r"""
local P, id, h = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. 'lic:' .. id) == 1 or redis.call('EXISTS', P .. 'lichash:' .. h) == 1 then
  return 0
end
redis.call('HSET', P .. 'lic:' .. id, 'key_hash', h, 'label', ARGV[4], 'cap', ARGV[5], 'created', ARGV[6],
           'revoked', '')
redis.call('SET', P .. 'lichash:' .. h, id)
redis.call('SADD', P .. 'licids', id)
return 1
"""

REVOKE = r"""
local k = ARGV[1] .. 'lic:' .. ARGV[2]
local revoked = redis.call('HGET', k, 'revoked')
if not revoked or revoked ~= '' then return 0 end
redis.call('HSET', k, 'revoked', ARGV[3])
return 1
"""

METER = r"""
local k, id = ARGV[1] .. 'use:' .. ARGV[3], ARGV[2]
local n = tonumber(redis.call('HGET', k, id) or '0')
if ARGV[4] ~= '' and n >= tonumber(ARGV[4]) then return false end
redis.call('SADD', ARGV[1] .. 'usemonths', ARGV[3])
return redis.call('HINCRBY', k, id, 1)
"""

_FIELDS = ("key_hash", "label", "cap", "created", "revoked")


class RedisLicenceStore:
    """:class:`~kibitz.server.licences.LicenceStore` on Redis (``redis://HOST:PORT/DB``)."""

    def __init__(self, url: str, prefix: str = "kbz:") -> None:
        self.prefix = prefix
        self._r = bounded_redis(url, max_connections=32)
        self._add = self._r.register_script(ADD)
        self._revoke = self._r.register_script(REVOKE)
        self._meter = self._r.register_script(METER)

    def _licence(self, id_: str, values: list[Any]) -> Licence | None:
        if values[0] is None:
            return None
        h, label, cap, created, revoked = (v.decode() if isinstance(v, bytes) else "" for v in values)
        return Licence(
            id=id_, key_hash=bytes.fromhex(h), label=label, monthly_cap=int(cap) if cap else None,
            created=float(created or 0), revoked=float(revoked) if revoked else None,
        )

    async def add(self, licence: Licence) -> None:
        cap = "" if licence.monthly_cap is None else str(licence.monthly_cap)
        args = [self.prefix, licence.id, licence.key_hash.hex(), licence.label, cap, repr(licence.created)]
        if not await self._add(args=args):
            raise ValueError(f"licence {licence.id} already exists")

    async def by_hash(self, key_hash: bytes) -> Licence | None:
        found = await self._r.get(f"{self.prefix}lichash:{key_hash.hex()}")
        return await self.by_id(text(found)) if found else None

    async def by_id(self, licence_id: str) -> Licence | None:
        return self._licence(licence_id, await self._r.hmget(f"{self.prefix}lic:{licence_id}", _FIELDS))

    async def revoke(self, licence_id: str, at: float) -> bool:
        return bool(await self._revoke(args=[self.prefix, licence_id, repr(at)]))

    async def all(self) -> list[Licence]:
        ids = sorted(text(m) for m in await self._r.smembers(f"{self.prefix}licids"))
        found = [await self.by_id(i) for i in ids]
        return sorted((lic for lic in found if lic is not None), key=lambda lic: (lic.created, lic.id))

    async def meter(self, licence_id: str, month: str, cap: int | None) -> int | None:
        n = await self._meter(args=[self.prefix, licence_id, month, "" if cap is None else cap])
        return None if n is None else int(n)

    async def usage(self, month: str | None = None) -> list[Usage]:
        if month:
            months = [month]
        else:
            months = sorted(text(m) for m in await self._r.smembers(f"{self.prefix}usemonths"))
        rows: list[Usage] = []
        for m in months:
            counts = await self._r.hgetall(f"{self.prefix}use:{m}")
            rows += [Usage(text(k), m, int(v)) for k, v in counts.items()]
        return sorted(rows, key=lambda u: (u.month, u.licence_id))

    async def close(self) -> None:
        await self._r.aclose()
