"""Admission to ProGet: per-client rate, concurrency and upload limits, then a global in-flight cap.

``Admission.admit`` is the one entry the pipeline calls, after the policy decided and the request was
rewritten, so refused or unauthenticated requests never count against ProGet's capacity. Checks run
cheapest first: the token bucket, the client's requests in flight, its streaming uploads, then a slot
under ``upstream.max_in_flight``. The slots are held until the response has ended, so a streamed
download keeps its place for as long as ProGet is serving it.

Concurrency and upload limits are per replica on purpose: a shared counter would have to be released
by a process that may die mid-request (leaking slots until a lease expires) and would add a Redis round
trip to the end of every request; with N replicas the effective bound is N times the configured value,
which is what ProGet sees anyway, since its own cap is also about connections, not clients. Rates are
shared through Redis because they are about totals over time, which add up across replicas.

Shadow mode (``rate_limit.shadow``) decides everything the same way but refuses nothing: the audit
line gets ``limit: would_refuse:<code>`` and the refusal counter ``mode="shadow"``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from gateway import metrics
from gateway.audit import Flow
from gateway.errors import (
    ConcurrencyLimited,
    RateLimitBackendUnavailable,
    RateLimited,
    Throttled,
    UploadsLimited,
    UpstreamQueueFull,
    UpstreamQueueTimeout,
)
from gateway.ratelimit import BackendError, Buckets, LocalBuckets, RedisBuckets, rate_headers, retry_after
from gateway.settings import ClientLimits, ClientSettings, Config, Rate

QUEUE_RETRY_AFTER = 1  # seconds: slots free up as fast as ProGet answers; a short retry is right


class FairQueue:
    """At most ``capacity`` holders; beyond that, a bounded FIFO queue that is fair across clients.

    Fairness, two ways: (1) waiters sit in one FIFO sub-queue per client and a freed slot goes to the
    sub-queues in turn (round robin), so a client's place does not depend on how many requests another
    client has queued; (2) one client may hold at most ``share`` of the ``size`` queue places (half by
    default), so one runaway client can never fill the queue and leave others nothing but 503s.
    """

    def __init__(self, capacity: int, size: int, timeout: float, share: int | None = None) -> None:
        self.capacity, self.size, self.timeout = capacity, size, timeout
        self.share = share if share is not None else max(1, size // 2)
        self.holders = 0
        self.queued = 0
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}  # dict order = round-robin order

    async def acquire(self, client: str) -> None:
        """Take a slot, waiting in the queue if needed; raise ``UpstreamQueueFull`` / ``...Timeout``."""
        if self.holders < self.capacity and self.queued == 0:
            self.holders += 1
            return
        mine = self._waiting.get(client)
        if self.queued >= self.size or (mine is not None and len(mine) >= self.share):
            raise UpstreamQueueFull(QUEUE_RETRY_AFTER)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, deque()).append(future)
        self._count(+1)
        try:
            async with asyncio.timeout(self.timeout):
                await future
        except BaseException as exc:
            if future.done() and not future.cancelled():
                self.release()  # the slot arrived as we gave up: pass it on
            else:
                self._forget(client, future)
            if isinstance(exc, TimeoutError):
                raise UpstreamQueueTimeout(QUEUE_RETRY_AFTER) from None
            raise

    def release(self) -> None:
        """Hand the slot to the next client in turn, or free it."""
        while self._waiting:
            client, waiters = next(iter(self._waiting.items()))
            future = waiters.popleft()
            del self._waiting[client]
            if waiters:
                self._waiting[client] = waiters  # to the back of the round
            self._count(-1)
            if not future.done():
                future.set_result(None)
                return
        self.holders -= 1

    def _forget(self, client: str, future: asyncio.Future[None]) -> None:
        waiters = self._waiting.get(client)
        if waiters is not None and future in waiters:
            waiters.remove(future)
            self._count(-1)
            if not waiters:
                del self._waiting[client]

    def _count(self, delta: int) -> None:
        self.queued += delta
        metrics.QUEUE_DEPTH.set(self.queued)


@dataclass(frozen=True, slots=True)
class _Counter:
    """Per-client counts of something in flight (requests, uploads), in this process."""

    counts: dict[str, int]

    def try_enter(self, client: str, limit: int | None) -> bool:
        if limit is not None and self.counts.get(client, 0) >= limit:
            return False
        self.counts[client] = self.counts.get(client, 0) + 1
        return True

    def leave(self, client: str) -> None:
        left = self.counts[client] - 1
        if left:
            self.counts[client] = left
        else:
            del self.counts[client]


def effective_limits(client: ClientSettings, default: ClientLimits) -> ClientLimits:
    """The client's own limits, each missing one taken from ``limits.default_client``."""
    own = client.limits
    return ClientLimits(
        rate=own.rate or default.rate,
        concurrency=own.concurrency or default.concurrency,
        uploads=own.uploads or default.uploads,
    )


def _shared_state_of(config: Config) -> tuple[object, ...]:
    """What the buckets and the upstream queue are built from: a reload that changes none of it keeps them."""
    rl, up = config.settings.rate_limit, config.settings.upstream
    return (rl.backend, rl.redis, config.redis_url, up.max_in_flight, up.queue)


class Admission:
    """The limits of one process; built once from the config, closed with the app."""

    def __init__(self, config: Config, buckets: Buckets | None = None) -> None:
        settings = config.settings
        self._take_limits(config)
        self._backend = settings.rate_limit.backend
        self._built_from = _shared_state_of(config)
        self._buckets = buckets or _buckets(config)
        self._requests = _Counter({})
        self._uploads = _Counter({})
        upstream = settings.upstream
        self._queue = (
            FairQueue(upstream.max_in_flight, upstream.queue.max, upstream.queue.timeout)
            if upstream.max_in_flight is not None
            else None
        )

    async def close(self) -> None:
        await self._buckets.close()

    def follow(self, config: Config) -> bool:
        """Take a reloaded config's limits, keeping buckets, counters and the queue; False when the
        backend or the upstream cap changed, so a new Admission must be built instead."""
        if _shared_state_of(config) != self._built_from:
            return False
        self._take_limits(config)
        return True

    def _take_limits(self, config: Config) -> None:
        s = config.settings
        self._limits = {c.name: effective_limits(c, s.limits.default_client) for c in s.clients}
        self._policy = s.rate_limit

    def admit(self, flow: Flow, client: str, upload: bool) -> _Admitted:
        """Hold the client's and ProGet's slots for the body of the ``async with``, or raise 429/503."""
        return _Admitted(self, flow, client, upload)

    def _take_slots(
        self, flow: Flow, client: str, upload: bool, held: _Held
    ) -> Coroutine[None, None, None] | None:
        """Take what needs no waiting at once; return what must be awaited, if anything. Without a
        rate or an upstream cap nothing is awaited: no coroutine is built (~1 µs a request)."""
        limits = self._limits[client]
        if limits.rate is None and self._queue is None:
            self._count_in(flow, client, upload, limits, held)
            return None
        return self._take_waiting(flow, client, upload, limits, held)

    async def _take_waiting(
        self, flow: Flow, client: str, upload: bool, limits: ClientLimits, held: _Held
    ) -> None:
        if limits.rate is not None:
            await self._check_rate(flow, client, limits.rate)
        self._count_in(flow, client, upload, limits, held)
        if self._queue is not None:
            await self._wait_for_slot(flow, client, self._queue, held)

    def _count_in(self, flow: Flow, client: str, upload: bool, limits: ClientLimits, held: _Held) -> None:
        self._enter(flow, client, self._requests, limits.concurrency, ConcurrencyLimited, held)
        if upload:
            self._enter(flow, client, self._uploads, limits.uploads, UploadsLimited, held)

    async def _check_rate(self, flow: Flow, client: str, rate: Rate) -> None:
        try:
            decision = await self._buckets.take(client, rate)
        except BackendError:
            metrics.LIMIT_BACKEND_ERRORS.labels(self._backend).inc()
            if self._policy.on_backend_error == "deny":
                self._refuse(flow, client, RateLimitBackendUnavailable(QUEUE_RETRY_AFTER))
            flow.limit = flow.limit or "backend_error"
            return
        if not decision.allowed:
            headers = rate_headers(rate, decision)
            self._refuse(flow, client, RateLimited(retry_after(decision), headers))

    def _enter(
        self,
        flow: Flow,
        client: str,
        counter: _Counter,
        limit: int | None,
        error: type[Throttled],
        held: _Held,
    ) -> None:
        if counter.try_enter(client, limit):
            held.append(lambda: counter.leave(client))
        else:
            self._refuse(flow, client, error(1))

    async def _wait_for_slot(self, flow: Flow, client: str, queue: FairQueue, held: _Held) -> None:
        if self._policy.shadow:  # never wait; count what a full queue would refuse
            if queue.holders >= queue.capacity + queue.size:
                self._refuse(flow, client, UpstreamQueueFull(QUEUE_RETRY_AFTER))
            queue.holders += 1
            held.append(lambda: _leave_shadow(queue))
            return
        started = time.perf_counter()
        try:
            await queue.acquire(client)
        except Throttled as error:
            self._refuse(flow, client, error)
        finally:
            metrics.QUEUE_WAIT.observe(time.perf_counter() - started)
        metrics.IN_FLIGHT.inc()
        held.append(metrics.IN_FLIGHT.dec)
        held.append(queue.release)

    def _refuse(self, flow: Flow, client: str, error: Throttled) -> None:
        """Raise ``error``, or in shadow mode only note it (the first one) and carry on."""
        mode = "shadow" if self._policy.shadow else "enforce"
        metrics.LIMIT_REFUSALS.labels(client, error.code, mode).inc()
        if mode == "enforce":
            raise error
        flow.limit = flow.limit or f"would_refuse:{error.code}"


def _leave_shadow(queue: FairQueue) -> None:
    queue.holders -= 1


_Held = list[Callable[[], object]]  # what to give back, in the order taken


class _Admitted:
    """The slots one request holds; given back, last taken first, however the request ends.

    A class rather than ``asynccontextmanager`` + ``AsyncExitStack``: those cost ~7 µs a request."""

    __slots__ = ("_admission", "_client", "_flow", "_held", "_upload")

    def __init__(self, admission: Admission, flow: Flow, client: str, upload: bool) -> None:
        self._admission, self._flow, self._client, self._upload = admission, flow, client, upload
        self._held: _Held = []

    async def __aenter__(self) -> None:
        try:
            waiting = self._admission._take_slots(self._flow, self._client, self._upload, self._held)
            if waiting is not None:
                await waiting
        except BaseException:
            self._give_back()
            raise

    async def __aexit__(self, *_: object) -> None:
        self._give_back()

    def _give_back(self) -> None:
        held = self._held
        while held:
            held.pop()()


def _buckets(config: Config) -> Buckets:
    redis = config.settings.rate_limit.redis
    if config.settings.rate_limit.backend == "redis" and redis is not None and config.redis_url is not None:
        return RedisBuckets(config.redis_url.get_secret_value(), redis)
    return LocalBuckets()
