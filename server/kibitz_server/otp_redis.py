"""The email-code store in Redis, for several ``kibitz serve --redis`` nodes: a code asked for on one
node can be typed in on another, and the rate limits count across the whole service, behind the same
:class:`~kibitz.server.otp.OtpStore` seam as the SQLite and memory stores.

Keys (``P`` is the prefix, ``kbz:`` by default):

* ``P otp:<ticket>`` – a hash: ``code_hash`` (``sha256hex(salt + ":" + code)``, never the code),
  ``salt``, ``email``, ``room``, ``nonce``, ``exp`` and ``attempts``; Redis drops it a minute after
  ``exp`` (the store's own clock decides expiry, Redis's TTL only collects the garbage).
* ``P otphit:<key>`` – a hash ``start``, ``count``: one fixed rate-limit window; dropped two windows
  after it started.

"Count one try unless locked or gone" and "count one request unless at the limit" are Lua scripts,
so two nodes can never both let the sixth try or the sixth code through.
"""

from __future__ import annotations

import math
import time

from .otp import OtpRecord
from .redis_pool import bounded_redis, text

ATTEMPT = r"""
local k = KEYS[1]
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', k, 'code_hash', 'salt', 'email', 'room', 'nonce', 'exp', 'attempts')
if not v[1] then return false end
if tonumber(v[6]) <= now then
  redis.call('DEL', k)
  return false
end
local n = tonumber(v[7])
if n <= max then
  n = redis.call('HINCRBY', k, 'attempts', 1)
end
v[7] = tostring(n)
return v
"""

HIT = r"""
local k = KEYS[1]
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', k, 'start', 'count')
if v[1] and now - tonumber(v[1]) < window then
  local count = tonumber(v[2])
  if count >= limit then
    return tostring(tonumber(v[1]) + window - now)
  end
  redis.call('HSET', k, 'count', count + 1)
  return false
end
redis.call('HSET', k, 'start', ARGV[1], 'count', 1)
redis.call('EXPIRE', k, math.ceil(2 * window))
return false
"""

_FIELDS = ("code_hash", "salt", "email", "room", "nonce", "exp", "attempts")


class RedisOtpStore:
    """:class:`~kibitz.server.otp.OtpStore` on Redis (``redis://HOST:PORT/DB``)."""

    def __init__(self, url: str, prefix: str = "kbz:") -> None:
        self.prefix = prefix
        self._r = bounded_redis(url, max_connections=16)
        self._attempt = self._r.register_script(ATTEMPT)
        self._hit = self._r.register_script(HIT)

    def _otp(self, ticket: str) -> str:
        return f"{self.prefix}otp:{ticket}"

    async def put(self, ticket: str, record: OtpRecord) -> None:
        key = self._otp(ticket)
        fields: dict[str | bytes, str] = {
            "code_hash": record.code_hash, "salt": record.salt, "email": record.email,
            "room": record.room, "nonce": record.nonce, "exp": repr(record.exp),
            "attempts": str(record.attempts),
        }
        # Redis's TTL counts on its own clock, the expiry on ours: a minute of slack.
        ttl = max(60, math.ceil(record.exp - time.time()) + 60)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(key, ttl)
            await pipe.execute()

    async def attempt(self, ticket: str, now: float, max_attempts: int) -> OtpRecord | None:
        got = await self._attempt(keys=[self._otp(ticket)], args=[repr(now), max_attempts])
        if not got:
            return None
        code_hash, salt, email, room, nonce, exp, attempts = (text(v) for v in got)
        return OtpRecord(code_hash, salt, email, room, nonce, float(exp), int(attempts))

    async def delete(self, ticket: str) -> None:
        await self._r.delete(self._otp(ticket))

    async def hit(self, key: str, now: float, window: float, limit: int) -> float | None:
        got = await self._hit(keys=[f"{self.prefix}otphit:{key}"], args=[repr(now), repr(window), limit])
        return None if not got else float(text(got))

    async def close(self) -> None:
        await self._r.aclose()


__all__ = ["RedisOtpStore"]
