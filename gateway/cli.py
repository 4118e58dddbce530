"""``proget-gateway``: serve, check, token new, explain, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from gateway import __version__
from gateway.secret_routes import naming_rules
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
        _run(serve(config, watch=not args.no_reload))
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
    for warning in [*naming_rules(config), *lifetime_warnings(config, datetime.now(UTC))]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


WARN_BEFORE = timedelta(days=14)


def lifetime_warnings(config: Config, now: datetime) -> list[str]:
    """Tokens and keys that have expired or will within :data:`WARN_BEFORE` (rotation reminders)."""
    out = []
    for client in config.settings.clients:
        for t in client.tokens:
            if t.not_after is not None and t.not_after - now < WARN_BEFORE:
                name = f"token {t.label!r}" if t.label else f"token sha256:{t.hash[7:15]}…"
                out.append(f"client {client.name!r}: {name} {_ends(t.not_after, now)}")
    for key, source in config.settings.keys.items():
        if source.expires is not None and source.expires - now < WARN_BEFORE:
            out.append(f"key {key!r} {_ends(source.expires, now)}")
    return out


def _ends(when: datetime, now: datetime) -> str:
    stamp = f"{when.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return f"expired at {stamp}" if when <= now else f"expires at {stamp} (in {(when - now).days} day(s))"


async def _probe_issuers(config: Config) -> list[str]:
    """Fetch each JWT issuer's discovery document and key set once, as the gateway will."""
    from gateway.workload_identity import JwtVerifier

    async with JwtVerifier(config) as verifier:
        return await verifier.probe()


def cmd_token_new(args: argparse.Namespace) -> int:
    token = "pgw_" + secrets.token_urlsafe(32)
    entry = f'"sha256:{token_hash(token)}"'
    if args.expires or args.label:
        label = args.label or (f"{args.client}-{datetime.now(UTC):%Y%m%d}" if args.client else None)
        fields = [f"hash: {entry}"] + ([f"label: {label}"] if label else [])
        if args.expires:
            fields.append(f"not_after: {_end_of_validity(args.expires):%Y-%m-%dT%H:%M:%SZ}")
        entry = "{" + ", ".join(fields) + "}"
    print(f"token:  {token}")
    print(
        "config: paste the line below into the client's tokens list"
        + (f" ({args.client})" if args.client else "")
    )
    print(f"  tokens: [{entry}]")
    return 0


_DURATION = re.compile(r"(\d+)([dh])")


def _end_of_validity(text: str) -> datetime:
    """``90d``, ``36h`` from now, or an ISO date/time (UTC when no zone is given)."""
    found = _DURATION.fullmatch(text.strip())
    if found:
        n, unit = int(found[1]), found[2]
        return datetime.now(UTC).replace(microsecond=0) + (
            timedelta(days=n) if unit == "d" else timedelta(hours=n)
        )
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"error: --expires {text!r}: give a duration (90d, 36h) or an ISO date") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


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
    s.add_argument(
        "--no-reload",
        action="store_true",
        help="do not watch the config and the files it reads (SIGHUP still reloads)",
    )
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
    tn.add_argument("--expires", metavar="WHEN", help="end of validity: a duration (90d, 36h) or an ISO date")
    tn.add_argument("--label", help="a name for the token in the audit line (default: CLIENT-YYYYMMDD)")
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
