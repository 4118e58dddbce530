"""``proget-gateway demo``: a zero-config first run on loopback.

Starts the clearly labelled ProGet stand-in (gateway/standin.py — not ProGet) and the real gateway
with config/demo.yaml, then prints curl commands that show a token being mapped to a key, a key in
the query moved into X-ApiKey, and an unlisted Native API method refused. Ctrl-C stops both.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from importlib import resources
from pathlib import Path

from gateway.settings import Config, build_config, read_document

DEMO_TOKEN = "pgw_demo_token_for_the_ci_client_000000000"  # noqa: S105 - published demo value
DEMO_KEYS = {"demo-proget-key-read": "demo-read", "demo-proget-key-push": "demo-push"}


def demo_config_path() -> Path:
    """config/demo.yaml from the wheel (gateway/_data) or, in a checkout, from the repository."""
    packaged = resources.files("gateway").joinpath("_data/demo.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


def free_port(preferred: int) -> int:
    """``preferred`` if it can be bound on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def demo_config(upstream_url: str, port: int, admin_port: int) -> Config:
    path = demo_config_path()
    raw = read_document(path)
    if not isinstance(raw, dict):
        raise TypeError(f"{path} is not a mapping")
    raw["upstream"] = {"url": upstream_url}
    raw["listen"] = {"host": "127.0.0.1", "port": port}
    raw["admin"] = {"host": "127.0.0.1", "port": admin_port}
    return build_config(raw, source=str(path), base=path.parent)


def _cli() -> str:
    """This very command, runnable from any shell (the README's install does not activate the venv)."""
    script = Path(sys.argv[0])
    if script.name == "proget-gateway":
        return str(script.resolve())
    return f"{sys.executable} -m gateway"


def instructions(gw: str, admin: str) -> str:
    t = DEMO_TOKEN
    return f"""
proget-gateway demo — gateway on {gw}, admin on {admin}
The upstream is a ProGet STAND-IN (not ProGet): its /__standin/echo shows what "ProGet" received.

1. A gateway token is mapped to a scoped ProGet key (look for "x-apikey": "demo-proget-key-read"):
   curl -s -H 'Authorization: Bearer {t}' {gw}/__standin/echo
2. A token in the query string is removed and normalized into X-ApiKey (the query arrives without it):
   curl -s '{gw}/__standin/echo?key={t}&name=demo'
3. A Native API method that is not on the allowlist is refused by the gateway (403, never forwarded):
   curl -si -H 'X-ApiKey: {t}' -X POST {gw}/api/json/Users_CreateOrUpdateUser
   ...while an allowed one goes through:
   curl -s -H 'X-ApiKey: {t}' {gw}/api/json/Feeds_GetFeeds
4. No credential at all → 401 with a Basic challenge; an unknown token → 401 token_unknown:
   curl -si {gw}/api/management/feeds/list
   curl -si -H 'Authorization: Bearer pgw_not_a_known_token' {gw}/api/management/feeds/list
5. Explain a decision without sending anything:
   DEMO_TOKEN={t} \\
     {_cli()} explain --config {demo_config_path()} --token-env DEMO_TOKEN PUT {gw}/nuget/internal/
6. Metrics and health: curl -s {admin}/metrics | grep proget_gateway_requests ; curl -s {admin}/readyz
7. The status page (health, refusals by client, an explain form): open {admin}/ in a browser.

Audit lines (one JSON line per request) follow below. Press Ctrl-C to stop both.
"""


def run_demo(port: int = 8080, admin_port: int = 9090) -> int:
    import logging

    from gateway import audit
    from gateway.cli import _run
    from gateway.server import serve
    from gateway.standin import Standin, StandinServer

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    audit.configure()
    with StandinServer(Standin(keys=DEMO_KEYS, anonymous="none")) as standin:
        gw_port, adm_port = free_port(port), free_port(admin_port)
        config = demo_config(standin.url, gw_port, adm_port)
        print(instructions(f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{adm_port}"), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            _run(serve(config))
    print("demo stopped", file=sys.stderr)
    return 0
