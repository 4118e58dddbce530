"""Token-bucket arithmetic, Retry-After, the eviction rule, the fair queue and the header format."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission import FairQueue
from gateway.errors import UpstreamQueueFull, UpstreamQueueTimeout
from gateway.ratelimit import (
    BackendError,
    Decision,
    LocalBuckets,
    RedisBuckets,
    _answer,
    rate_headers,
    retry_after,
    take,
)
from gateway.settings import Rate, RedisSettings
from tests.redis_server import RedisServer

RATE = Rate(per_second=2, burst=5)


# --- the bucket ------------------------------------------------------------------------------------


def test_a_full_bucket_serves_its_burst_then_refuses() -> None:
    buckets = LocalBuckets()
    decisions = [buckets.decide("ci", RATE, 0.0) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[-1].wait == pytest.approx(0.5)  # one token at 2/s


def test_refill_is_proportional_to_time_and_capped_at_burst() -> None:
    assert take(0.0, 1.0, RATE) == Decision(True, 1.0, 0.0)  # 2 tokens back, one taken
    assert take(0.0, 1000.0, RATE).remaining == 4.0  # never more than burst
    assert take(0.5, -3.0, RATE) == Decision(False, 0.5, 0.25)  # a clock going back refills nothing


@given(
    tokens=st.floats(0, 0.999),
    per_second=st.floats(0.01, 1000),
    burst=st.integers(1, 1000),
)
def test_retry_after_is_never_early_and_at_most_a_second_late(
    tokens: float, per_second: float, burst: int
) -> None:
    rate = Rate(per_second=per_second, burst=burst)
    refused = take(tokens, 0.0, rate)
    assert not refused.allowed
    seconds = retry_after(refused)
    assert take(refused.remaining, seconds, rate).allowed
    assert seconds == 1 or not take(refused.remaining, seconds - 1, rate).allowed


# --- eviction: bounded state never hands out a fuller bucket ------------------------------------------

RATES = [Rate(per_second=1, burst=3), Rate(per_second=5, burst=2), Rate(per_second=0.5, burst=10)]
events = st.lists(st.tuples(st.integers(0, 7), st.floats(0, 3)), max_size=200)


@settings(max_examples=300)
@given(events=events, size=st.integers(1, 4))
def test_eviction_never_changes_a_decision(events: list[tuple[int, float]], size: int) -> None:
    """A store bounded to ``size`` decides exactly as an unbounded one: it forgets only full buckets."""
    bounded, unbounded = LocalBuckets(size=size), LocalBuckets(size=10**9)
    now = 0.0
    for client, dt in events:
        now += dt
        rate = RATES[client % len(RATES)]
        assert bounded.decide(f"c{client}", rate, now) == unbounded.decide(f"c{client}", rate, now)


def test_state_shrinks_to_its_size_once_buckets_refill() -> None:
    buckets = LocalBuckets(size=2)
    for i in range(10):
        buckets.decide(f"c{i}", RATE, 0.0)
    assert len(buckets) == 10  # nobody is full yet: nothing may be forgotten
    buckets.decide("late", RATE, 100.0)
    assert len(buckets) <= 2


# --- headers ------------------------------------------------------------------------------------------

_POLICY = re.compile(r'"client";q=(\d+);w=(\d+)')
_STATE = re.compile(r'"client";r=(\d+);t=(\d+)')


def test_headers_follow_the_ietf_draft_format() -> None:
    refused = take(0.25, 0.0, RATE)
    headers = dict(rate_headers(RATE, refused))
    policy = _POLICY.fullmatch(headers[b"ratelimit-policy"].decode())
    state = _STATE.fullmatch(headers[b"ratelimit"].decode())
    assert policy is not None and policy.groups() == ("5", "3")  # burst 5, refilled from empty in 2.5 s
    assert state is not None and state.groups() == ("0", "1")


# --- the fair queue -----------------------------------------------------------------------------------


async def _hold(queue: FairQueue, client: str, log: list[str], gate: asyncio.Event) -> None:
    await queue.acquire(client)
    log.append(client)
    await gate.wait()
    queue.release()


async def _fairness(flood: int, others: int) -> tuple[list[str], FairQueue, list[Any]]:
    queue = FairQueue(capacity=1, size=40, timeout=5)
    log: list[str] = []
    gate = asyncio.Event()
    tasks = [asyncio.create_task(_hold(queue, "hog", log, gate)) for _ in range(flood)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(_hold(queue, f"o{i}", log, gate)) for i in range(others)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return log, queue, results


@settings(max_examples=60, deadline=None)
@given(flood=st.integers(1, 100), others=st.integers(1, 5))
def test_one_client_cannot_fill_the_queue_or_starve_others(flood: int, others: int) -> None:
    log, queue, results = asyncio.run(_fairness(flood, others))
    refused = [r for r in results if isinstance(r, UpstreamQueueFull)]
    assert all(r is None or isinstance(r, UpstreamQueueFull) for r in results)
    assert all(f"o{i}" in log for i in range(others))  # every other client got in
    assert log.count("hog") == min(flood, 1 + queue.share)  # one slot + its share of the queue
    assert len(refused) == flood - log.count("hog")
    # round robin: each other client is served within the first (others + 1) turns after the first holder
    first_turns = log[1 : 2 + others * 2]
    assert all(f"o{i}" in first_turns for i in range(others))
    assert queue.holders == 0 and queue.queued == 0


def test_capacity_is_never_exceeded_and_waiters_time_out() -> None:
    async def scenario() -> tuple[int, list[Any]]:
        queue = FairQueue(capacity=3, size=100, timeout=0.2)
        peak = 0

        async def one(i: int) -> None:
            nonlocal peak
            await queue.acquire(f"c{i % 4}")
            peak = max(peak, queue.holders)
            try:
                await asyncio.sleep(0.05)
            finally:
                queue.release()

        results = await asyncio.gather(*(one(i) for i in range(40)), return_exceptions=True)
        return peak, results

    peak, results = asyncio.run(scenario())
    assert peak == 3
    assert any(isinstance(r, UpstreamQueueTimeout) for r in results)  # 40 x 50 ms / 3 > 200 ms
    assert all(r is None or isinstance(r, UpstreamQueueTimeout) for r in results)


def test_a_cancelled_waiter_gives_its_place_back() -> None:
    async def scenario() -> FairQueue:
        queue = FairQueue(capacity=1, size=4, timeout=5)
        await queue.acquire("a")
        waiter = asyncio.create_task(queue.acquire("b"))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        queue.release()
        return queue

    queue = asyncio.run(scenario())
    assert queue.holders == 0 and queue.queued == 0


# --- the Redis store (a real redis-server) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_buckets_do_the_same_arithmetic(redis_server: RedisServer) -> None:
    async def scenario() -> list[Decision]:
        store = RedisBuckets(redis_server.url, RedisSettings(url="redis://unused", prefix="unit", timeout=1))
        try:
            return [await store.take("bucket-math", RATE) for _ in range(6)]
        finally:
            await store.close()

    decisions = asyncio.run(scenario())
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert 0.4 < decisions[-1].wait <= 0.5


def test_redis_down_is_a_backend_error_within_the_timeout() -> None:
    async def scenario() -> float:
        dead = RedisServer()  # never started: nothing listens on its port
        store = RedisBuckets(dead.url, RedisSettings(url="redis://unused", timeout=0.05))
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(BackendError) as info:
                await store.take("x", RATE)
            assert "127.0.0.1" not in str(info.value)  # the URL (maybe a password) never leaks
            return loop.time() - started
        finally:
            await store.close()

    assert asyncio.run(scenario()) < 0.5


def test_decisions_asked_for_together_go_to_redis_in_one_pipeline(redis_server: RedisServer) -> None:
    """Forty requests of one turn: one round trip, and still exactly ``burst`` of them allowed on the
    shared bucket; another client's bucket in the same batch is its own."""
    slow = Rate(per_second=0.001, burst=5)

    async def scenario() -> tuple[list[Decision], list[Decision], int]:
        store = RedisBuckets(redis_server.url, RedisSettings(url="redis://unused", prefix="batch", timeout=1))
        sent = 0
        send = store._send

        async def counted(batch: Any) -> None:
            nonlocal sent
            sent += 1
            await send(batch)

        store._send = counted  # type: ignore[method-assign]
        try:
            shared = asyncio.gather(*(store.take("shared", slow) for _ in range(40)))
            other = asyncio.gather(*(store.take("other", slow) for _ in range(3)))
            return await shared, await other, sent
        finally:
            await store.close()

    shared, other, sent = asyncio.run(scenario())
    assert sent == 1
    assert sum(d.allowed for d in shared) == 5
    assert all(d.allowed for d in other)


def test_a_redis_that_forgot_the_script_is_given_it_again(redis_server: RedisServer) -> None:
    """After SCRIPT FLUSH (or a restart) the next batch loads the script and still decides, on the
    same bucket: five allowed in all, then refused."""
    slow = Rate(per_second=0.001, burst=5)

    async def scenario() -> list[bool]:
        store = RedisBuckets(redis_server.url, RedisSettings(url="redis://unused", prefix="flush", timeout=1))
        admin = aioredis.Redis.from_url(redis_server.url)
        try:
            first = await asyncio.gather(*(store.take("f", slow) for _ in range(3)))
            await admin.script_flush()
            assert await admin.script_exists(store._sha) == [False]
            second = await asyncio.gather(*(store.take("f", slow) for _ in range(3)))
            return [d.allowed for d in first + second]
        finally:
            await admin.aclose()
            await store.close()

    assert asyncio.run(scenario()) == [True] * 5 + [False]


@pytest.mark.parametrize("size", [1, 8])
def test_a_stalled_redis_fails_each_waiting_decision_at_its_deadline_and_recovers(size: int) -> None:
    """redis-server stopped (SIGSTOP) with decisions in flight: every caller gets BackendError within
    its deadline, none hangs; once it runs again, decisions come back."""

    async def scenario(server: RedisServer) -> tuple[list[BaseException | Decision], float, Decision]:
        store = RedisBuckets(server.url, RedisSettings(url="redis://unused", prefix="stall", timeout=0.2))
        loop = asyncio.get_running_loop()
        try:
            await store.take("warm", RATE)  # connected before the stall
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)
            started = loop.time()
            try:
                stalled = await asyncio.gather(
                    *(store.take(f"c{i}", RATE) for i in range(size)), return_exceptions=True
                )
                elapsed = loop.time() - started
            finally:
                server.process.send_signal(signal.SIGCONT)
            for _ in range(50):
                with contextlib.suppress(BackendError):
                    return stalled, elapsed, await store.take("after", RATE)
                await asyncio.sleep(0.05)
            raise AssertionError("no decision after redis-server came back")
        finally:
            await store.close()

    server = RedisServer().start()
    try:
        stalled, elapsed, after = asyncio.run(scenario(server))
    finally:
        server.stop()
    assert [type(d) for d in stalled] == [BackendError] * size
    assert elapsed < 1.0
    assert after.allowed


@pytest.mark.parametrize("reply", [[1, b"4"], b"OK", [b"x", b"1", b"0"], None])
def test_a_reply_that_is_not_the_scripts_answer_is_a_backend_error(reply: object) -> None:
    async def scenario() -> None:
        answer: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        _answer(answer, reply)
        with pytest.raises(BackendError):
            await answer

    asyncio.run(scenario())


# --- config ---------------------------------------------------------------------------------------------


def _config(**extra: Any) -> dict[str, Any]:
    return {
        "upstream": {"url": "http://proget:8624"},
        "keys": {"read": {"value": "k"}},
        "clients": [{"name": "ci", "anonymous": True, "rules": [{"key": "read"}]}],
        **extra,
    }


def test_limit_settings_report_every_problem_without_the_url(tmp_path: Any) -> None:
    from gateway.settings import ConfigError, build_config

    secret = tmp_path / "redis-url"
    secret.write_text("http://:hunter2@redis:6379\n")
    raw = _config(
        limits={"default_client": {"rate": {"per_second": 0, "burst": 1}, "concurrency": 0}},
        rate_limit={"backend": "redis", "redis": {"url_file": str(secret)}, "on_backend_error": "maybe"},
    )
    raw["upstream"]["queue"] = {"max": -1}
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    found = "\n".join(info.value.problems)
    for where in ("per_second", "concurrency", "queue.max", "on_backend_error"):
        assert where in found
    assert "hunter2" not in found


def test_redis_url_is_read_from_the_file_and_limits_fall_back_to_the_default(tmp_path: Any) -> None:
    from gateway.admission import effective_limits
    from gateway.settings import build_config

    secret = tmp_path / "redis-url"
    secret.write_text("redis://:pw@127.0.0.1:6379/0\n")
    raw = _config(
        limits={"default_client": {"rate": {"per_second": 50, "burst": 200}, "concurrency": 32}},
        rate_limit={"backend": "redis", "redis": {"url_file": str(secret)}},
    )
    raw["clients"][0]["limits"] = {"uploads": 4}
    config = build_config(raw)
    assert (
        config.redis_url is not None and config.redis_url.get_secret_value() == "redis://:pw@127.0.0.1:6379/0"
    )
    assert "pw@" not in repr(config)
    limits = effective_limits(config.clients["ci"], config.settings.limits.default_client)
    assert (limits.rate, limits.concurrency, limits.uploads) == (Rate(per_second=50, burst=200), 32, 4)


# --- admission: shadow mode and backend errors (a failing store stands in for Redis here) --------------------


class _BrokenStore:
    async def take(self, client: str, rate: Rate) -> Decision:
        raise BackendError("ConnectionError")

    async def close(self) -> None:
        return None


def _admission(buckets: Any = None, burst: int = 1, **rate_limit: Any) -> Any:
    from gateway.admission import Admission
    from gateway.settings import build_config

    raw = _config(
        rate_limit=rate_limit, limits={"default_client": {"rate": {"per_second": 1, "burst": burst}}}
    )
    raw["upstream"]["max_in_flight"] = 1
    raw["upstream"]["queue"] = {"max": 0, "timeout": 1}
    return Admission(build_config(raw), buckets)


def _flow() -> Any:
    from gateway.audit import Flow

    return Flow(request_id="r", method="GET", peer="-")


def test_backend_errors_follow_on_backend_error() -> None:
    from gateway.errors import RateLimitBackendUnavailable

    async def scenario() -> tuple[Any, Any]:
        allowed = _flow()
        async with _admission(_BrokenStore(), on_backend_error="allow").admit(allowed, "ci", upload=False):
            pass
        denied = _flow()
        with pytest.raises(RateLimitBackendUnavailable):
            async with _admission(_BrokenStore(), on_backend_error="deny").admit(denied, "ci", upload=False):
                pass
        return allowed, denied

    allowed, _ = asyncio.run(scenario())
    assert allowed.limit == "backend_error"


def test_shadow_mode_notes_the_first_refusal_and_lets_everything_through() -> None:
    async def scenario() -> list[str | None]:
        admission = _admission(shadow=True)
        flows = [_flow() for _ in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            for flow in flows:  # all held at once: over the rate and over the cap + empty queue
                await stack.enter_async_context(admission.admit(flow, "ci", upload=False))
        return [f.limit for f in flows]

    assert asyncio.run(scenario()) == [None, "would_refuse:rate_limited", "would_refuse:rate_limited"]


def test_enforced_cap_with_no_queue_refuses_at_once() -> None:
    async def scenario() -> None:
        admission = _admission(burst=10)
        async with admission.admit(_flow(), "ci", upload=False):
            with pytest.raises(UpstreamQueueFull):
                async with admission.admit(_flow(), "ci", upload=False):
                    pass

    asyncio.run(scenario())
