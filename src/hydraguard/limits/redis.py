"""Redis limiter: the GCRA of `limits.gcra` in atomic Lua scripts on Redis server time.

Every gateway process behind one Redis shares exact limits: all quotas and concurrency slots of a
request are checked and charged in one script, so two processes cannot both take the last unit.
Concurrency slots are sorted sets of leases scored by their expiry, so a crashed gateway's slots
come back after `lease_ttl` seconds. All keys of one request must live on one Redis node (no
Redis Cluster hash-slot spreading; use a single primary or Sentinel).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hydraguard.limits.base import LimiterUnavailable, QuotaState, Slot, Verdict
from hydraguard.limits.gcra import Quota

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local nq = tonumber(ARGV[1])
local ns = tonumber(ARGV[2])
local lease = ARGV[3]
local idx = 4
local new_tats = {}
local out = {1}
for i = 1, nq do
  local limit = tonumber(ARGV[idx]); local period = tonumber(ARGV[idx + 1]); local cost = tonumber(ARGV[idx + 2])
  idx = idx + 3
  local interval = period / limit
  local tat = tonumber(redis.call('GET', KEYS[i]))
  local base = now
  if tat and tat > now then base = tat end
  local new_tat = base + cost * interval
  local allow_at = new_tat - period
  if allow_at > now + 1e-6 then
    local remaining = math.max(math.floor((period - (base - now)) / interval + 1e-6), 0)
    local retry = -1
    if cost <= limit then retry = allow_at - now end
    return {0, i, string.format('%.17g', retry), string.format('%.17g', base - now), remaining}
  end
  new_tats[i] = new_tat
  out[#out + 1] = math.max(math.floor((period - (new_tat - now)) / interval + 1e-6), 0)
  out[#out + 1] = string.format('%.17g', new_tat - now)
end
for j = 1, ns do
  local key = KEYS[nq + j]
  local limit = tonumber(ARGV[idx]); idx = idx + 2
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= limit then
    return {0, nq + j, '1', '0', 0}
  end
end
for i = 1, nq do
  redis.call('SET', KEYS[i], string.format('%.17g', new_tats[i]), 'PX', math.ceil((new_tats[i] - now) * 1000) + 1)
end
idx = 4 + 3 * nq
for j = 1, ns do
  local ttl = tonumber(ARGV[idx + 1]); idx = idx + 2
  redis.call('ZADD', KEYS[nq + j], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[nq + j], math.ceil(ttl * 1000))
end
return out
"""

_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 2]); local period = tonumber(ARGV[3 * i - 1]); local delta = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if not tat or tat < now then tat = now end
  local new_tat = tat + delta * period / limit
  if new_tat <= now then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], string.format('%.17g', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1)
  end
end
return 1
"""


class RedisLimiter:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "hg:",
        lease_ttl: float = 900.0,
    ) -> None:
        self._redis = client
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self._acquire = client.register_script(_ACQUIRE)
        self._adjust = client.register_script(_ADJUST)

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.25, **kwargs: object) -> RedisLimiter:
        client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, **kwargs)  # type: ignore[arg-type]

    def _k(self, key: str) -> str:
        return f"{self.prefix}l:{key}"

    async def acquire(self, quotas: Sequence[Quota], slots: Sequence[Slot], lease: str) -> Verdict:
        keys = [self._k(q.key) for q in quotas] + [self._k(s.key) for s in slots]
        args: list[object] = [len(quotas), len(slots), lease]
        for q in quotas:
            args += [q.limit, repr(q.period), q.cost]
        for s in slots:
            args += [s.limit, repr(self.lease_ttl)]
        try:
            reply = await self._acquire(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(str(exc)) from exc
        if int(reply[0]) == 0:
            index = int(reply[1]) - 1
            retry = float(reply[2])
            if index < len(quotas):
                q = quotas[index]
                state = QuotaState(q.name, q.limit, int(reply[4]), float(reply[3]))
                return Verdict(False, (state,), denied_by=q.name, retry_after=float("inf") if retry < 0 else retry)
            return Verdict(False, (), denied_by=slots[index - len(quotas)].name, retry_after=retry)
        states = tuple(
            QuotaState(q.name, q.limit, int(reply[1 + 2 * i]), float(reply[2 + 2 * i])) for i, q in enumerate(quotas)
        )
        return Verdict(True, states, lease=lease, slots=tuple(slots))

    async def adjust(self, quotas: Sequence[Quota]) -> None:
        if not quotas:
            return
        args: list[object] = []
        for q in quotas:
            args += [q.limit, repr(q.period), q.cost]
        try:
            await self._adjust(keys=[self._k(q.key) for q in quotas], args=args)
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(str(exc)) from exc

    async def release(self, slots: Sequence[Slot], lease: str) -> None:
        if not slots:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for s in slots:
                    pipe.zrem(self._k(s.key), lease)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(str(exc)) from exc

    async def held(self, key: str) -> int:
        return int(await self._redis.zcard(self._k(key)))

    async def close(self) -> None:
        await self._redis.aclose()
