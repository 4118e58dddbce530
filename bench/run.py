"""Speed and memory of proget-gateway beside yardsticks, on loopback. Prints figures; asserts nothing.

Upstream: nginx serving a small answer, a 1 GiB file and an upload sink, so the upstream is never the
bottleneck. In front of it, one at a time:
  nginx proxy_pass            — the C baseline, the ceiling for any proxy here
  naive Starlette + httpx     — relay only, to measure the client library (bench/naive_proxy.py)
  naive Starlette + aiohttp   — relay only, same stack, the other client
  proget-gateway              — the full pipeline: token → client → policy → rewrite → stream → audit

For each: small-request throughput and latency (wrk, 32 connections, a gateway token in X-ApiKey),
1 GiB download and 1 GiB upload (curl), and the proxy's peak resident memory (VmHWM).

    .venv/bin/python bench/run.py [--seconds 10] [--size-mib 1024]

Needs nginx, wrk and curl (bench/setup.sh installs them).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from gateway.settings import token_hash

TOKEN = "pgw_bench_" + "0" * 40
KEY = "bench-proget-key"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def process(args: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        try:
            wait_port(port)
        except RuntimeError:
            raise RuntimeError(f"{args[0]} did not start:\n{log.read_text()[-2000:]}") from None
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def nginx_conf(tmp: Path, port: int, body: str) -> Path:
    conf = tmp / f"nginx-{port}.conf"
    conf.write_text(
        f"""
daemon off; master_process off; worker_processes 1; error_log stderr warn; pid {tmp}/nginx-{port}.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; keepalive_requests 100000;
  client_body_temp_path {tmp}/body-{port}; proxy_temp_path {tmp}/proxy-{port};
  fastcgi_temp_path {tmp}/f-{port}; uwsgi_temp_path {tmp}/u-{port}; scgi_temp_path {tmp}/s-{port};
  server {{ listen 127.0.0.1:{port}; {body} }}
}}
"""
    )
    return conf


def upstream_body(tmp: Path) -> str:
    return f"""
    client_max_body_size 0;
    location = /api/small {{ default_type application/json; return 200 '{{"Feed_Name":"internal","ok":true}}'; }}
    location = /api/upload {{ root {tmp}/up; dav_methods PUT; create_full_put_path on; }}
    location /api/files/ {{ alias {tmp}/files/; }}
"""


def proxy_body(upstream: int) -> str:
    return f"""
    client_max_body_size 0;
    location / {{ proxy_pass http://127.0.0.1:{upstream}; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_request_buffering off; proxy_buffering off; proxy_buffer_size 256k; proxy_buffers 4 256k; proxy_busy_buffers_size 512k; }}
"""


def gateway_config(tmp: Path, upstream: int, port: int) -> Path:
    config = {
        "upstream": {"url": f"http://127.0.0.1:{upstream}"},
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "keys": {"bench": {"value": KEY}},
        "clients": [
            {"name": "bench", "tokens": [f"sha256:{token_hash(TOKEN)}"], "rules": [{"key": "bench"}]}
        ],
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wrk(port: int, seconds: int) -> tuple[float, str, str]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c32",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"X-ApiKey: {TOKEN}",
            f"http://127.0.0.1:{port}/api/small",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses on {port}:\n{out}")
    return rps, p50, p99


def curl_seconds(args: list[str]) -> float:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total}",
            "-H",
            f"X-ApiKey: {TOKEN}",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(name: str, port: int, proc: subprocess.Popen[bytes], big: Path, mib: int, seconds: int) -> str:
    subprocess.run(
        ["wrk", "-t1", "-c4", "-d1s", f"http://127.0.0.1:{port}/api/small", "-H", f"X-ApiKey: {TOKEN}"],
        capture_output=True,
        check=True,
    )  # warm-up
    rps, p50, p99 = wrk(port, seconds)
    down = curl_seconds([f"http://127.0.0.1:{port}/api/files/big.bin"])
    up = curl_seconds(["-T", str(big), f"http://127.0.0.1:{port}/api/upload"])
    row = (
        f"| {name:<26} | {rps:>9,.0f} | {p50:>7} | {p99:>7} | {mib / down:>8,.0f} | {mib / up:>8,.0f} "
        f"| {peak_rss_mib(proc.pid):>7.0f} |"
    )
    print(row, flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run bench/setup.sh")
    with tempfile.TemporaryDirectory(prefix="pgw-bench-") as t:
        tmp = Path(t)
        (tmp / "files").mkdir()
        (tmp / "up").mkdir()  # nginx stores each upload here (WebDAV PUT): it reads the whole body first
        big = tmp / "files" / "big.bin"
        with big.open("wb") as f:
            f.truncate(args.size_mib * 1024 * 1024)
        log = tmp / "bench.log"
        up_port = free_port()
        print(
            f"{os.cpu_count()} CPUs; wrk -t2 -c32 -d{args.seconds}s GET /api/small; {args.size_mib} MiB transfers\n"
        )
        print(
            "| proxy                      |    req/s  |    p50  |    p99  | down MB/s | up MB/s | RSS MiB |"
        )
        print(
            "|----------------------------|----------:|--------:|--------:|----------:|--------:|--------:|"
        )
        upstream = ["nginx", "-c", str(nginx_conf(tmp, up_port, upstream_body(tmp)))]
        with process(upstream, up_port, log):
            candidates = {
                "nginx proxy_pass": lambda p: ["nginx", "-c", str(nginx_conf(tmp, p, proxy_body(up_port)))],
                "naive Starlette + httpx": lambda p: [
                    sys.executable,
                    "bench/naive_proxy.py",
                    "--client",
                    "httpx",
                    "--upstream",
                    f"http://127.0.0.1:{up_port}",
                    "--port",
                    str(p),
                ],
                "naive Starlette + aiohttp": lambda p: [
                    sys.executable,
                    "bench/naive_proxy.py",
                    "--client",
                    "aiohttp",
                    "--upstream",
                    f"http://127.0.0.1:{up_port}",
                    "--port",
                    str(p),
                ],
                "proget-gateway": lambda p: [
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    "--config",
                    str(gateway_config(tmp, up_port, p)),
                ],
            }
            for name, command in candidates.items():
                port = free_port()
                with process(command(port), port, log) as proc:
                    measure(name, port, proc, big, args.size_mib, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
