"""What the limits cost on small requests: limits off, local buckets, Redis buckets. Prints; asserts nothing.

Upstream: nginx answering a small JSON body (as in bench/run.py). The gateway runs three times with the
same client, once per mode; wrk drives GET /api/small with a gateway token at 32 connections. The
limits are set high enough never to refuse, so the figures are the cost of deciding, not of refusing.

    .venv/bin/python bench/ratelimit_cost.py [--seconds 10]

Needs nginx, wrk (bench/setup.sh) and redis-server (.ci/system-deps.sh).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    BEARER,
    KEY,
    LOAD_CORE,
    PROXY_CORE,
    TOKEN,
    free_port,
    nginx_conf,
    pinned,
    process,
    upstream_body,
    wait_port,
    wrk,
)

from gateway.settings import token_hash

HIGH = {"rate": {"per_second": 1_000_000, "burst": 1_000_000}, "concurrency": 100000}


def config(tmp: Path, upstream: int, port: int, mode: str, redis_port: int) -> Path:
    client: dict[str, Any] = {
        "name": "bench",
        "tokens": [f"sha256:{token_hash(TOKEN)}"],
        "rules": [{"key": "bench"}],
    }
    doc: dict[str, Any] = {
        "upstream": {"url": f"http://127.0.0.1:{upstream}"},
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "keys": {"bench": {"value": KEY}},
        "clients": [client],
    }
    if mode != "limits off":
        client["limits"] = HIGH
        doc["upstream"]["max_in_flight"] = 1000
    if mode == "redis":
        redis = {"url": f"redis://127.0.0.1:{redis_port}/0", "timeout": 0.5}
        doc["rate_limit"] = {"backend": "redis", "redis": redis}
    path = tmp / f"gateway-{mode.replace(' ', '-')}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgw-rl-bench-") as name:
        tmp = Path(name)
        log = tmp / "bench.log"
        up_port, redis_port = free_port(), free_port()
        nginx = ["nginx", "-c", str(nginx_conf(tmp, up_port, upstream_body(tmp)))]
        redis = [
            "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        # as in bench/run.py: the gateway alone on its core; nginx, redis-server and wrk on the other
        with (
            process(pinned(LOAD_CORE, nginx), up_port, log),
            process(pinned(LOAD_CORE, redis), redis_port, log),
        ):
            print(f"{os.cpu_count()} CPUs; wrk -t1 -c32 -d{args.seconds}s GET /api/small")
            print(f"{'mode':<12} {'req/s':>9} {'p50':>9} {'p99':>9} {'vs off':>8}")
            baseline = 0.0
            for mode in ("limits off", "local", "redis"):
                port = free_port()
                command = [sys.executable, "-m", "gateway", "serve", "--config"]
                gateway = pinned(PROXY_CORE, [*command, str(config(tmp, up_port, port, mode, redis_port))])
                with process(gateway, port, log):
                    wait_port(port)
                    wrk(port, 1, BEARER)  # warm up
                    rps, p50, p99, _ = wrk(port, args.seconds, BEARER)
                baseline = baseline or rps
                print(
                    f"{mode:<12} {rps:>9.0f} {p50:>7.2f}ms {p99:>7.2f}ms {rps / baseline - 1:>+8.1%}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
