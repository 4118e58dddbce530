"""Token buckets per client: the arithmetic, an in-process store and a Redis store shared by replicas.

A bucket holds up to ``burst`` tokens and refills at ``per_second``; each request takes one. The state
is ``(tokens, stamp)``, refilled lazily when the client next asks, so an idle client costs nothing.

Bounded state without handing out fresh buckets (Envoy's weakness): a bucket is only ever forgotten
once it has refilled to ``burst``, because a forgotten bucket comes back full and a full one is then
exactly what the client would have had anyway. The local store drops full buckets when it grows past
its size; Redis expires a key after the time a bucket takes to refill from empty, i.e. only when full.
The store is keyed by the configured client name, so it can never hold more than the configured clients.

Redis: one Lua script per decision (atomic, no read-modify-write race between replicas), run by
EVALSHA (loaded again if Redis forgot it), the decisions of one event-loop turn in one pipeline, on
the server's clock (``TIME``) so replicas' clocks cannot disagree about refill; a bounded connection
pool and a deadline per decision. Any failure is reported as ``BackendError``; the caller applies
``on_backend_error``. redis-py reconnects by itself on the next call, so recovery needs nothing from
us.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.settings import Rate, RedisSettings

POLICY = "client"  # the policy name in RateLimit-Policy / RateLimit


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: float  # tokens left after this request
    wait: float  # seconds until one token is back (0 when allowed)


class BackendError(Exception):
    """The shared store failed or was too slow; never carries the store's URL."""


def take(tokens: float, elapsed: float, rate: Rate) -> Decision:
    """Refill a bucket holding ``tokens`` after ``elapsed`` seconds, then try to take one token."""
    level = min(float(rate.burst), tokens + max(0.0, elapsed) * rate.per_second)
    if level >= 1.0:
        return Decision(True, level - 1.0, 0.0)
    return Decision(False, level, (1.0 - level) / rate.per_second)


def retry_after(decision: Decision) -> int:
    """Whole seconds (Retry-After has no fractions), rounded up so a retry then is never early."""
    return max(1, math.ceil(decision.wait - 1e-9))


def rate_headers(rate: Rate, decision: Decision) -> list[tuple[bytes, bytes]]:
    """``RateLimit-Policy`` and ``RateLimit`` as in draft-ietf-httpapi-ratelimit-headers-11
    (https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/): structured-field lists
    ``"name";q=<quota>;w=<window s>`` and ``"name";r=<remaining>;t=<s until quota is available>``.
    A token bucket maps to quota ``burst`` over the window it takes to refill from empty.
    """
    window = max(1, math.ceil(rate.burst / rate.per_second))
    remaining = int(decision.remaining)
    reset = retry_after(decision) if not decision.allowed else 0
    return [
        (b"ratelimit-policy", f'"{POLICY}";q={rate.burst};w={window}'.encode()),
        (b"ratelimit", f'"{POLICY}";r={remaining};t={reset}'.encode()),
    ]


class Buckets(Protocol):
    async def take(self, client: str, rate: Rate) -> Decision: ...

    async def close(self) -> None: ...


class LocalBuckets:
    """Buckets in this process. ``size`` is a soft bound: only full buckets are ever dropped."""

    def __init__(self, size: int = 10000) -> None:
        self._size = size
        self._state: OrderedDict[str, tuple[float, float, Rate]] = OrderedDict()  # oldest use first

    def decide(self, client: str, rate: Rate, now: float) -> Decision:
        tokens, stamp, _ = self._state.pop(client, (float(rate.burst), now, rate))
        decision = take(tokens, now - stamp, rate)
        self._state[client] = (decision.remaining, now, rate)
        if len(self._state) > self._size:
            self._drop_full(now)
        return decision

    def _drop_full(self, now: float) -> None:
        """Forget buckets that have refilled to ``burst``: for them, forgetting changes nothing."""
        for name, (tokens, stamp, rate) in list(self._state.items()):
            if tokens + (now - stamp) * rate.per_second >= rate.burst:
                del self._state[name]
                if len(self._state) <= self._size:
                    return

    def __len__(self) -> int:
        return len(self._state)

    async def take(self, client: str, rate: Rate) -> Decision:
        return self.decide(client, rate, asyncio.get_running_loop().time())

    async def close(self) -> None:
        return None


# KEYS[1] bucket; ARGV rate, burst. Returns {allowed, remaining, wait} (numbers as strings: Lua
# numbers would be truncated to integers on the way back).
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(s[1]) or burst
local ts = tonumber(s[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(tokens), tostring(wait)}
"""


class RedisBuckets:
    """Buckets in Redis, one atomic script call per decision, bounded in time and connections.

    The decisions asked for in one turn of the event loop travel together: one pipeline, one pooled
    connection, one round trip. Under load many requests reach admission in the same turn, and
    redis-py's per-call path (pool, packing, parsing) is what a decision costs: ~83 µs of CPU for a
    lone script call against ~30 µs each in a pipeline of 16 (bench/README.md, "Cost of the limits").
    Each decision still has its own deadline and its own answer; a batch that fails fails each of its
    decisions with ``BackendError``.
    """

    def __init__(self, url: str, settings: RedisSettings) -> None:
        self._timeout = settings.timeout
        self._prefix = settings.prefix
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=settings.max_connections,
            timeout=settings.timeout,  # waiting for a free connection
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
            retry=Retry(NoBackoff(), 0),  # the caller decides; a retry would only stretch the deadline
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._sha = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()  # Redis's name for it
        self._waiting: list[tuple[str, Rate, asyncio.Future[Decision]]] = []  # for the next batch
        self._sending: set[asyncio.Task[None]] = set()  # batches on the wire (a reference each)

    async def take(self, client: str, rate: Rate) -> Decision:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Decision] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._send_waiting)  # after every request of this turn has asked
        self._waiting.append((f"{self._prefix}:rl:{client}", rate, answer))
        try:
            async with asyncio.timeout(self._timeout):
                return await answer
        except TimeoutError:
            raise BackendError("TimeoutError") from None

    def _send_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[str, Rate, asyncio.Future[Decision]]]) -> None:
        """One pipeline for the batch; each answer (or error) to its own caller, if it still waits."""
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._run_script(batch)
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            replies = [exc] * len(batch)  # the message could carry the URL: only the type is passed on
        for (_, _, answer), reply in zip(batch, replies, strict=True):
            if not answer.done():  # its caller may have given up at its own deadline
                _answer(answer, reply)

    async def _run_script(self, batch: list[tuple[str, Rate, asyncio.Future[Decision]]]) -> list[object]:
        """EVALSHA for each decision; a Redis that does not know the script (restarted, flushed) is
        given it once and asked again. redis-py's own script helper on a pipeline asks ``SCRIPT
        EXISTS`` first on every batch: a round trip each time for what is nearly always known."""
        replies = await self._pipeline(batch)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            await self._redis.script_load(_SCRIPT)
            replies = await self._pipeline(batch)
        return replies

    async def _pipeline(self, batch: list[tuple[str, Rate, asyncio.Future[Decision]]]) -> list[object]:
        pipe = self._redis.pipeline(transaction=False)
        for key, rate, _ in batch:
            pipe.evalsha(self._sha, 1, key, repr(rate.per_second), rate.burst)
        replies: list[object] = await pipe.execute(raise_on_error=False)
        return replies

    async def close(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        await self._redis.aclose()


def _answer(answer: asyncio.Future[Decision], reply: object) -> None:
    """The script's ``[allowed, remaining, wait]`` as a decision; anything else is the backend's error,
    never a guessed decision."""
    if isinstance(reply, BaseException):
        answer.set_exception(BackendError(type(reply).__name__))
        return
    try:
        if not isinstance(reply, list) or len(reply) != 3:
            raise TypeError("not the script's answer")
        allowed, remaining, wait = int(reply[0]), float(reply[1]), float(reply[2])
    except (TypeError, ValueError) as exc:
        answer.set_exception(BackendError(type(exc).__name__))
        return
    answer.set_result(Decision(bool(allowed), remaining, wait))
