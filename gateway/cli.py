"""``proget-gateway``: serve, check, token new, explain, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from gateway import __version__
from gateway.settings import Config, ConfigError, load_config, token_hash

CONFIG_ENV = "PROGET_GATEWAY_CONFIG"


def _config_path(value: str | None) -> Path:
    path = value or os.environ.get(CONFIG_ENV)
    if not path:
        print(f"error: give --config PATH or set {CONFIG_ENV}", file=sys.stderr)
        raise SystemExit(2)  # a usage error, like every invalid config
    return Path(path)


def _print_problems(err: ConfigError) -> None:
    print(f"{err.source}: {len(err.problems)} problem(s)", file=sys.stderr)
    for problem in err.problems:
        print(f"  {problem}", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import audit
    from gateway.server import ListenError, serve

    try:
        config = load_config(_config_path(args.config))
    except ConfigError as err:
        _print_problems(err)
        return 2
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    audit.configure()
    try:
        _run(serve(config))
    except ListenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(coro)  # type: ignore[arg-type]


def cmd_check(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    try:
        config = load_config(path, resolve_keys=not args.no_keys)
    except ConfigError as err:
        _print_problems(err)
        return 2
    s = config.settings
    if config.jwt_clients and not args.offline:
        problems = asyncio.run(_probe_issuers(config))
        if problems:
            _print_problems(ConfigError(str(path), problems))
            return 2
    allowed = len(s.native_api.allow)
    print(f"{path}: ok — {len(s.clients)} client(s), {len(s.keys)} key(s), {allowed} Native API method(s)")
    return 0


async def _probe_issuers(config: Config) -> list[str]:
    """Fetch each JWT issuer's discovery document and key set once, as the gateway will."""
    from gateway.workload_identity import JwtVerifier

    async with JwtVerifier(config) as verifier:
        return await verifier.probe()


def cmd_token_new(args: argparse.Namespace) -> int:
    token = "pgw_" + secrets.token_urlsafe(32)
    print(f"token:  {token}")
    print(
        "config: paste the line below into the client's tokens list"
        + (f" ({args.client})" if args.client else "")
    )
    print(f'  tokens: ["sha256:{token_hash(token)}"]')
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from gateway.explain import explain

    try:
        config = load_config(_config_path(args.config), resolve_keys=False)  # names only: no secret read
    except ConfigError as err:
        _print_problems(err)
        return 2
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if token is None:
            print(f"error: environment variable {args.token_env} is not set", file=sys.stderr)
            return 2
    parts = urlsplit(args.url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines, allowed = explain(config, args.method.upper(), target.encode("latin-1"), token)
    print("\n".join(lines))
    return 0 if allowed else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(port=args.port, admin_port=args.admin_port)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="proget-gateway",
        description="Authenticating reverse proxy for Inedo ProGet.",
        allow_abbrev=False,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway", allow_abbrev=False)
    s.add_argument("--config", help=f"config file (default: ${CONFIG_ENV})")
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser(
        "check", help="validate a config; print every problem; exit 0 valid, 2 invalid", allow_abbrev=False
    )
    c.add_argument("--config", help=f"config file (default: ${CONFIG_ENV})")
    c.add_argument(
        "--offline", action="store_true", help="do not fetch JWT issuers' discovery documents and keys"
    )
    c.add_argument(
        "--no-keys",
        action="store_true",
        help="do not read the keys' env/file sources (check a config away from its secrets)",
    )
    c.set_defaults(func=cmd_check)
    t = sub.add_parser("token", help="gateway tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tn = tsub.add_parser(
        "new", help="print a fresh token and the sha256 line for the config", allow_abbrev=False
    )
    tn.add_argument("--client", help="the client the token is for (shown in the output)")
    tn.set_defaults(func=cmd_token_new)
    e = sub.add_parser(
        "explain",
        help="dry-run the policy for one request (network only to fetch a JWT issuer's keys)",
        allow_abbrev=False,
    )
    e.add_argument("--config", help=f"config file (default: ${CONFIG_ENV})")
    who = e.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--token-env", metavar="VAR", help="read the client's token from this environment variable"
    )
    who.add_argument("--anonymous", action="store_true", help="a request with no credential")
    e.add_argument("method")
    e.add_argument("url", help="a URL or a path, e.g. /nuget/internal/v3/index.json")
    e.set_defaults(func=cmd_explain)
    d = sub.add_parser(
        "demo",
        help="run a ProGet stand-in and the gateway on loopback, with example curls",
        allow_abbrev=False,
    )
    d.add_argument("--port", type=int, default=8080, help="gateway port (a free one if busy)")
    d.add_argument("--admin-port", type=int, default=9090, help="admin port (a free one if busy)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
