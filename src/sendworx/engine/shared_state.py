"""The sending policy's state shared by the nodes of a cluster, in Redis (`redis_url` in the
policy): the limits' and the circuit breakers' counters and the senders on hold, as KumoMTA
shares its throttles.

Limit counters are per-minute buckets (per ten minutes for the day) in one hash per rule,
sender and window, updated by one Lua script, so that checking and counting are one atomic
step across every engine: a message counts until its whole bucket has left the window (at
most a minute longer than the exact sliding window of `limits.py`).

Breaker counters (`breaker.py` keeps the same ones for a lone engine): a sorted set of the
sender's messages by birth, keyed by message id, so a message counted again (an engine
restarted before its first attempt was recorded) counts once; a sorted set of its distinct
recipients by when last seen; and per-minute buckets of recipients delivered and failed.
Scripts count and answer the totals in one step; `breaker.py` judges them, for every engine
alike.

Holds are one hash, hold id -> JSON; an engine adds the holds it finds there to its own and
never drops one because Redis forgot it (a release reaches each node through the API,
`cascade_to_nodes`).

When Redis does not answer, limits and breakers fall back to this engine's own counters
(fail-open), which the log says once per outage and `sendworx_redis_up` shows; holds already
recorded stay in `holds.json` whatever Redis says.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from dataclasses import asdict

import redis.asyncio as redis
from redis.exceptions import RedisError

from sendworx.engine.breaker import Breakers, messages_reason, results_reason
from sendworx.engine.limits import SendingLimits
from sendworx.shared.holds import Hold, parse_hold_id
from sendworx.shared.policy import BreakerRule, LimitRule

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


_COUNT_MESSAGE = """
local now, window, birth = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local since = now - window
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
if birth > since then
  redis.call('ZADD', KEYS[1], birth, ARGV[4])
  for i = 5, #ARGV do
    redis.call('ZADD', KEYS[2], 'GT', birth, ARGV[i])
  end
  redis.call('EXPIRE', KEYS[1], math.ceil(window) + 60)
  redis.call('EXPIRE', KEYS[2], math.ceil(window) + 60)
end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
"""

_COUNT_RESULTS = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local bucket = math.floor(now / 60) * 60
redis.call('HINCRBY', KEYS[1], bucket .. ':ok', tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[1], bucket .. ':failed', tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[1], math.ceil(window) + 120)
local fields = redis.call('HGETALL', KEYS[1])
local ok, failed = 0, 0
for i = 1, #fields, 2 do
  local name, value = fields[i], tonumber(fields[i + 1])
  local separator = string.find(name, ':')
  local start, kind = tonumber(string.sub(name, 1, separator - 1)), string.sub(name, separator + 1)
  if start + 60 <= now - window then
    redis.call('HDEL', KEYS[1], name)
  elseif kind == 'ok' then
    ok = ok + value
  else
    failed = failed + value
  end
end
return {ok, failed}
"""


def _breaker_keys(rule_name: str, key: str) -> list[str]:
    """Messages, recipients and results of one sender under one breaker."""
    return [f"sendworx:breaker:{rule_name}:{key}:{kind}" for kind in ("m", "r", "x")]


class SharedState:
    def __init__(self, url: str, limits: SendingLimits, breakers: Breakers) -> None:
        self.url = url
        self._local = limits
        self._breakers = breakers
        self._client = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
        )
        self._admit = self._client.register_script(_ADMIT)
        self._count_message = self._client.register_script(_COUNT_MESSAGE)
        self._count_results = self._client.register_script(_COUNT_RESULTS)
        self.up = True
        self.errors = 0

    async def close(self) -> None:
        await self._client.aclose()

    def _failed(self, error: Exception) -> None:
        self.errors += 1
        if self.up:
            log.error(
                "Redis at %s does not answer (%s); limits and breakers use this engine's "
                "own counters until it does",
                _without_password(self.url),
                error,
            )
        self.up = False

    def _answered(self) -> None:
        if not self.up:
            log.info(
                "Redis at %s answers again; limits and breakers are shared",
                _without_password(self.url),
            )
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

    async def count_message(
        self,
        rule: BreakerRule,
        key: str,
        message_id: str,
        recipients: tuple[str, ...],
        when: float,
        now: float,
    ) -> str | None:
        """As `Breakers.count_message`, counted in Redis for every engine sharing it; with
        this engine's own counters while Redis does not answer."""
        members = sorted(set(map(str.lower, recipients)))
        try:
            messages, distinct = await self._count_message(
                keys=_breaker_keys(rule.name, key)[:2],
                args=[repr(now), rule.window_minutes * 60, repr(when), message_id, *members],
            )
        except (RedisError, OSError) as error:
            self._failed(error)
            return self._breakers.count_message(rule, key, recipients, when, now)
        self._answered()
        return messages_reason(rule, int(messages), int(distinct))

    async def count_results(
        self, rule: BreakerRule, key: str, delivered: int, failed: int, now: float
    ) -> str | None:
        """As `Breakers.count_results`, in Redis (this engine's counters while it fails)."""
        if not rule.failure_share or not (delivered or failed):
            return None
        try:
            ok, failures = await self._count_results(
                keys=_breaker_keys(rule.name, key)[2:],
                args=[repr(now), rule.window_minutes * 60, delivered, failed],
            )
        except (RedisError, OSError) as error:
            self._failed(error)
            return self._breakers.count_results(rule, key, delivered, failed, now)
        self._answered()
        return results_reason(rule, int(ok), int(failures))

    async def forget_breaker(self, rule_name: str, key: str) -> None:
        """A released sender counts afresh on every engine."""
        await self._tell(self._client.delete(*_breaker_keys(rule_name, key)))

    async def publish_hold(self, hold: Hold) -> None:
        await self._tell(self._client.hset(HOLDS_KEY, hold.hold_id, json.dumps(asdict(hold))))

    async def forget_hold(self, hold_id: str) -> None:
        await self._tell(self._client.hdel(HOLDS_KEY, hold_id))

    async def _tell(self, request: Awaitable[object]) -> None:
        """A change whose answer does not matter; Redis not answering is counted, not raised."""
        try:
            await request
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
