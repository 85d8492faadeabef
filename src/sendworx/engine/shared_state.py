"""The sending policy's state shared by the nodes of a cluster, in Redis (`redis_url` in the
policy): the limits' counters and the senders on hold, as KumoMTA shares its throttles.

Counters are per-minute buckets (per ten minutes for the day) in one hash per rule, sender
and window, updated by one Lua script, so that checking and counting are one atomic step
across every engine: a message counts until its whole bucket has left the window (at most a
minute longer than the exact sliding window of `limits.py`). Holds are one hash, hold id ->
JSON; an engine adds the holds it finds there to its own and never drops one because Redis
forgot it (a release reaches each node through the API, `cascade_to_nodes`).

When Redis does not answer, limits fall back to this engine's own counters (fail-open),
which the log says once per outage and `sendworx_redis_up` shows; holds already recorded
stay in `holds.json` whatever Redis says.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import redis.asyncio as redis
from redis.exceptions import RedisError

from sendworx.engine.limits import SendingLimits
from sendworx.shared.holds import Hold, parse_hold_id
from sendworx.shared.policy import LimitRule

log = logging.getLogger("sendworx.engine")
TIMEOUT_SECONDS = 0.5
HOLDS_KEY = "sendworx:holds"

_ADMIT = """
local now = tonumber(ARGV[1])
local recipients = tonumber(ARGV[2])

local function free_at(key, seconds, bucket, max_messages, max_recipients)
  if max_messages == 0 and max_recipients == 0 then return 0 end
  local fields = redis.call('HGETALL', key)
  local oldest = now - seconds
  local buckets, starts = {}, {}
  local messages, total = 0, 0
  for i = 1, #fields, 2 do
    local name, value = fields[i], tonumber(fields[i + 1])
    local start, kind = tonumber(string.sub(name, 1, -3)), string.sub(name, -1)
    if start + bucket <= oldest then
      redis.call('HDEL', key, name)
    else
      if buckets[start] == nil then
        buckets[start] = {0, 0}
        table.insert(starts, start)
      end
      if kind == 'm' then
        buckets[start][1] = value
        messages = messages + value
      else
        buckets[start][2] = value
        total = total + value
      end
    end
  end
  local need = recipients
  if max_recipients > 0 and need > max_recipients then need = max_recipients end
  local function fits()
    return (max_messages == 0 or messages + 1 <= max_messages)
       and (max_recipients == 0 or total + need <= max_recipients)
  end
  if fits() then return 0 end
  table.sort(starts)
  for _, start in ipairs(starts) do
    messages = messages - buckets[start][1]
    total = total - buckets[start][2]
    if fits() then return start + bucket + seconds end
  end
  return now + seconds
end

local hour = free_at(KEYS[1], 3600, 60, tonumber(ARGV[3]), tonumber(ARGV[4]))
local day = free_at(KEYS[2], 86400, 600, tonumber(ARGV[5]), tonumber(ARGV[6]))
local free = math.max(hour, day)
if free > 0 then return tostring(free) end
local hour_bucket = math.floor(now / 60) * 60
local day_bucket = math.floor(now / 600) * 600
redis.call('HINCRBY', KEYS[1], hour_bucket .. ':m', 1)
redis.call('HINCRBY', KEYS[1], hour_bucket .. ':r', recipients)
redis.call('HINCRBY', KEYS[2], day_bucket .. ':m', 1)
redis.call('HINCRBY', KEYS[2], day_bucket .. ':r', recipients)
redis.call('EXPIRE', KEYS[1], 3660)
redis.call('EXPIRE', KEYS[2], 87000)
return '0'
"""


class SharedState:
    def __init__(self, url: str, local: SendingLimits) -> None:
        self.url = url
        self._local = local
        self._client = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
        )
        self._admit = self._client.register_script(_ADMIT)
        self.up = True
        self.errors = 0

    async def close(self) -> None:
        await self._client.aclose()

    def _failed(self, error: Exception) -> None:
        self.errors += 1
        if self.up:
            log.error(
                "Redis at %s does not answer (%s); limits use this engine's own counters "
                "until it does",
                _without_password(self.url),
                error,
            )
        self.up = False

    def _answered(self) -> None:
        if not self.up:
            log.info("Redis at %s answers again; limits are shared", _without_password(self.url))
        self.up = True

    async def admit(self, rule: LimitRule, key: str, recipients: int, now: float) -> float:
        """As `SendingLimits.admit`, counted in Redis for every engine sharing it; with this
        engine's own counters while Redis does not answer."""
        keys = [f"sendworx:limit:{rule.name}:{key}:{window}" for window in ("h", "d")]
        caps = (
            rule.messages_per_hour,
            rule.recipients_per_hour,
            rule.messages_per_day,
            rule.recipients_per_day,
        )
        try:
            answer = await self._admit(keys=keys, args=[repr(now), recipients, *caps])
        except (RedisError, OSError) as error:
            self._failed(error)
            return self._local.admit(rule, key, recipients, now)
        self._answered()
        return float(answer)

    async def publish_hold(self, hold: Hold) -> None:
        try:
            await self._client.hset(HOLDS_KEY, hold.hold_id, json.dumps(asdict(hold)))
        except (RedisError, OSError) as error:
            self._failed(error)
        else:
            self._answered()

    async def forget_hold(self, hold_id: str) -> None:
        try:
            await self._client.hdel(HOLDS_KEY, hold_id)
        except (RedisError, OSError) as error:
            self._failed(error)
        else:
            self._answered()

    async def holds(self) -> list[Hold]:
        """The holds recorded by every engine (none while Redis does not answer)."""
        try:
            entries = await self._client.hgetall(HOLDS_KEY)
        except (RedisError, OSError) as error:
            self._failed(error)
            return []
        self._answered()
        holds = []
        for value in entries.values():
            try:
                document = json.loads(value)
                scope, key = parse_hold_id(f"{document['scope']}:{document['key']}")
                reason, since = str(document["reason"]), float(document["since"])
                holds.append(Hold(scope, key, str(document["rule"]), reason, since))
            except (ValueError, KeyError, TypeError):
                continue  # not ours, or damaged: never trusted, never fatal
        return holds


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}://{'***@' if at else ''}{host}"
