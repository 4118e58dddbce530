"""Limits that protect ProGet, against the real gateway process, the stand-in and a real redis-server."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.standin import StandinServer
from tests.e2e.conftest import TOKEN_CI, TOKEN_READER, Gateway, running_gateway
from tests.redis_server import RedisServer

CI = {"X-ApiKey": TOKEN_CI}
READER = {"X-ApiKey": TOKEN_READER}
Mutate = Callable[[dict[str, Any]], None]


def limits(ci: dict[str, Any], **rate_limit: Any) -> Mutate:
    def mutate(config: dict[str, Any]) -> None:
        config["clients"][0]["limits"] = ci
        if rate_limit:
            config["rate_limit"] = rate_limit

    return mutate


def metric(gw: Gateway, name: str, **labels: str) -> float:
    text = httpx.get(gw.admin_url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _concurrent(gw: Gateway, requests: list[tuple[str, str, dict[str, str]]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30, limits=limits, trust_env=False) as client:
        return await asyncio.gather(*(client.request(m, p, headers=h) for m, p, h in requests))


def concurrent(gw: Gateway, requests: list[tuple[str, str, dict[str, str]]]) -> list[httpx.Response]:
    return asyncio.run(_concurrent(gw, requests))


def codes(responses: list[httpx.Response]) -> Counter[str]:
    return Counter(r.headers.get("x-gateway-error", str(r.status_code)) for r in responses)


# --- per client ------------------------------------------------------------------------------------------


def test_a_client_over_its_rate_gets_429_while_another_is_unaffected(
    tmp_path: Path, standin_server: StandinServer
) -> None:
    with running_gateway(tmp_path, standin_server, limits({"rate": {"per_second": 0.5, "burst": 3}})) as gw:
        with httpx.Client(base_url=gw.url, timeout=10, trust_env=False) as client:
            ci = [client.get("/__standin/echo", headers=CI) for _ in range(5)]
            reader = [client.get("/api/anything", headers=READER) for _ in range(10)]
            assert [r.status_code for r in ci] == [200, 200, 200, 429, 429]
            assert {r.status_code for r in reader} == {404}  # the stand-in's answer: forwarded, not limited
            refused = ci[-1]
            assert refused.headers["x-gateway-error"] == "rate_limited"
            assert refused.json()["error"] == "rate_limited"
            assert refused.headers["retry-after"] == "2"  # one token at 0.5/s
            assert refused.headers["ratelimit-policy"] == '"client";q=3;w=6'
            assert re.fullmatch(r'"client";r=0;t=2', refused.headers["ratelimit"])
            assert gw.last_audit(refused.headers["x-request-id"])["reason"] == "rate_limited"
            time.sleep(2.05)
            assert client.get("/__standin/echo", headers=CI).status_code == 200
        ci_forwarded = [r for r in gw.standin.requests if r.raw_path == "/__standin/echo"]
        assert len(ci_forwarded) == 4  # refused requests never reached ProGet
        assert metric(gw, "proget_gateway_limit_refusals_total", client="ci", mode="enforce") == 2


def test_concurrency_cap_holds(tmp_path: Path, standin_server: StandinServer) -> None:
    with running_gateway(tmp_path, standin_server, limits({"concurrency": 2})) as gw:
        responses = concurrent(gw, [("GET", "/__standin/slow?seconds=1", CI)] * 6)
        assert codes(responses) == {"200": 2, "concurrency_limited": 4}
        assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 429)
        assert gw.standin.peak_in_flight == 2
        assert concurrent(gw, [("GET", "/__standin/slow?seconds=0.01", CI)] * 2)[0].status_code == 200


def test_upload_cap_holds(tmp_path: Path, standin_server: StandinServer) -> None:
    async def upload(client: httpx.AsyncClient) -> httpx.Response:
        async def body() -> Any:
            for _ in range(10):
                yield b"x" * 1000
                await asyncio.sleep(0.1)

        headers = {**CI, "content-type": "application/octet-stream"}
        return await client.post("/__standin/sink", content=body(), headers=headers)

    async def scenario(gw: Gateway) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30, trust_env=False) as client:
            uploads = [upload(client) for _ in range(3)]
            small = client.get("/__standin/echo", headers=CI)  # not an upload: not counted
            return await asyncio.gather(*uploads, small)

    with running_gateway(tmp_path, standin_server, limits({"uploads": 1})) as gw:
        responses = asyncio.run(scenario(gw))
        assert codes(responses[:3]) == {"201": 1, "uploads_limited": 2}
        assert responses[3].status_code == 200


# --- global cap ----------------------------------------------------------------------------------------------


def test_the_global_cap_bounds_what_proget_sees_with_300_at_once(
    tmp_path: Path, standin_server: StandinServer
) -> None:
    def mutate(config: dict[str, Any]) -> None:
        config["upstream"]["max_in_flight"] = 8
        config["upstream"]["queue"] = {"max": 500, "timeout": 30}

    with running_gateway(tmp_path, standin_server, mutate) as gw:
        requests = [("GET", "/__standin/slow?seconds=0.05", CI if i % 2 else READER) for i in range(300)]
        responses = concurrent(gw, requests)
        assert codes(responses) == {"200": 300}
        assert gw.standin.peak_in_flight == 8
        assert metric(gw, "proget_gateway_upstream_queue_wait_seconds_count") == 300
        assert metric(gw, "proget_gateway_upstream_queue_depth") == 0


def test_a_full_or_slow_queue_answers_503_with_retry_after(
    tmp_path: Path, standin_server: StandinServer
) -> None:
    def mutate(config: dict[str, Any]) -> None:
        config["upstream"]["max_in_flight"] = 1
        config["upstream"]["queue"] = {"max": 2, "timeout": 0.5}

    with running_gateway(tmp_path, standin_server, mutate) as gw:
        responses = concurrent(gw, [("GET", "/__standin/slow?seconds=1.5", CI)] * 5)
        # one is served, one waits (a client's share is half the queue) and times out, three are refused
        assert codes(responses) == {"200": 1, "upstream_queue_timeout": 1, "upstream_queue_full": 3}
        assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 503)
        assert metric(gw, "proget_gateway_limit_refusals_total", reason="upstream_queue_full") == 3
        assert metric(gw, "proget_gateway_upstream_errors_total") == 0  # ProGet did not fail


# --- shadow mode ------------------------------------------------------------------------------------------------


def test_shadow_mode_refuses_nothing_and_counts_what_it_would_have(
    tmp_path: Path, standin_server: StandinServer
) -> None:
    ci = {"rate": {"per_second": 0.01, "burst": 2}, "concurrency": 1}
    with running_gateway(tmp_path, standin_server, limits(ci, shadow=True)) as gw:
        with httpx.Client(base_url=gw.url, timeout=10, trust_env=False) as client:
            responses = [client.get("/__standin/echo", headers=CI) for _ in range(5)]
        assert [r.status_code for r in responses] == [200] * 5
        marks = [gw.last_audit(r.headers["x-request-id"])["limit"] for r in responses]
        assert marks == [None, None] + ["would_refuse:rate_limited"] * 3
        assert metric(gw, "proget_gateway_limit_refusals_total", reason="rate_limited", mode="shadow") == 3
        assert metric(gw, "proget_gateway_limit_refusals_total", mode="enforce") == 0
        parallel = concurrent(gw, [("GET", "/__standin/slow?seconds=0.5", CI)] * 3)
        assert codes(parallel) == {"200": 3}
        shadow_concurrency = metric(gw, "proget_gateway_limit_refusals_total", reason="concurrency_limited")
        assert shadow_concurrency == 2


# --- across replicas: Redis ------------------------------------------------------------------------------


def redis_limits(
    server: RedisServer, rate: dict[str, Any], on_error: str = "allow", tmp: Path | None = None
) -> Mutate:
    """Buckets in ``server``; with ``tmp``, its URL is read from a file there (a mounted Secret)."""
    backend: dict[str, Any] = {"url": server.url, "timeout": 0.05, "prefix": f"e2e{server.port}"}
    if tmp is not None:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "redis-url").write_text(server.url + "\n")
        backend["url_file"] = str(tmp / "redis-url")
        del backend["url"]
    return limits({"rate": rate}, backend="redis", redis=backend, on_backend_error=on_error)


def _hammer(gw: Gateway, until: float, out: list[int], cap: int = 20000) -> None:
    with httpx.Client(base_url=gw.url, timeout=5, trust_env=False) as client:
        for _ in range(cap):
            if time.monotonic() >= until:
                return
            out.append(client.get("/__standin/echo", headers=CI).status_code)


def test_two_gateways_share_one_rate_through_redis(tmp_path: Path, standin_server: StandinServer) -> None:
    server = RedisServer().start()
    rate = {"per_second": 20, "burst": 5}
    try:
        with (
            running_gateway(tmp_path / "a", standin_server, redis_limits(server, rate)) as a,
            running_gateway(tmp_path / "b", standin_server, redis_limits(server, rate)) as b,
        ):
            results: list[list[int]] = [[], []]
            started = time.monotonic()
            threads = [
                threading.Thread(target=_hammer, args=(gw, started + 10, out))
                for gw, out in zip((a, b), results, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            admitted = sum(r.count(200) for r in results)
            expected = rate["burst"] + rate["per_second"] * elapsed
            print(f"admitted {admitted} in {elapsed:.1f}s across two gateways; expected {expected:.0f}")
            assert all(r.count(200) > 20 for r in results)  # both replicas took part
            assert all(set(r) <= {200, 429} for r in results)
            assert abs(admitted - expected) <= 0.1 * rate["per_second"] * elapsed
    finally:
        server.stop()


def test_redis_outage_follows_on_backend_error_and_recovers(
    tmp_path: Path, standin_server: StandinServer
) -> None:
    server = RedisServer(password="redis-secret-4711").start()
    rate = {"per_second": 1000, "burst": 1000}
    allow_mutate = redis_limits(server, rate, "allow", tmp_path / "allow")
    try:
        with (
            running_gateway(tmp_path / "allow", standin_server, allow_mutate) as allow,
            running_gateway(tmp_path / "deny", standin_server, redis_limits(server, rate, "deny")) as deny,
        ):
            assert _status(allow) == _status(deny) == (200, None)
            server.stop()
            started = time.monotonic()
            assert _status(allow) == (200, "backend_error")
            assert _status(deny) == (503, "rate_limit_backend_unavailable")
            assert time.monotonic() - started < 2  # bounded by rate_limit.redis.timeout, never a hang
            assert metric(allow, "proget_gateway_rate_limit_backend_errors_total", backend="redis") >= 1
            server.start()
            deadline = time.monotonic() + 10
            while _status(deny)[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _status(allow) == (200, None)
            assert _status(deny) == (200, None)
            for gw in (allow, deny):
                assert server.password is not None and server.password not in gw.log_path.read_text()
    finally:
        server.stop()


def _status(gw: Gateway) -> tuple[int, str | None]:
    """The status of one request, and the audit line's limit mark (or the refusal code)."""
    response = httpx.get(gw.url + "/__standin/echo", headers=CI, timeout=10, trust_env=False)
    line = gw.last_audit(response.headers["x-request-id"])
    return response.status_code, line["limit"] if response.status_code == 200 else line["reason"]
