"""ProGet's secret-bearing routes are reached only by a rule that names them, in every spelling a
server might route there; `/v2/_auth` is never relayed; `check` names every rule that reaches one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.canonical import canonicalize
from gateway.errors import GatewayError, SecretRouteBlocked, SecretRouteNotNamed
from gateway.policy import decide
from gateway.secret_routes import SECRET_ROUTES, names, naming_rules, secret_route
from gateway.settings import build_config, token_hash

WIDE = ["/**", "/api/**", "/api/*/**", "/api/api-*/**", "/npm/**", "/v2/**"]


def _config(paths: list[str]) -> object:
    return build_config(
        {
            "upstream": {"url": "http://proget.internal:8624/"},
            "keys": {"k": {"value": "proget-key-0123456789"}},
            "clients": [
                {
                    "name": "c",
                    "tokens": [f"sha256:{token_hash('pgw_' + 'x' * 30)}"],
                    "rules": [{"paths": paths, "key": "k"}],
                }
            ],
        }
    )


SECRET_PATHS = [
    "/api/api-keys/list",
    "/api/api-keys/create",
    "/api/security/users/list",
    "/api/settings/list",
    "/api/management/connectors/get/x",
    "/api/storage",
    "/npm/internal/-/user/org.couchdb.user:me",
    "/npm/internal/-/npm/v1/tokens",
]


def _spell(path: str, flips: list[bool]) -> str:
    """Any case, some characters percent-encoded (the canonical path decodes unreserved escapes)."""
    out = []
    for i, ch in enumerate(path):
        flip = flips[i % len(flips)] if flips else False
        out.append(ch.upper() if flip and ch.isalpha() else ch)
    return "".join(out)


@settings(max_examples=400, deadline=None)
@given(
    path=st.sampled_from(SECRET_PATHS),
    flips=st.lists(st.booleans(), min_size=1, max_size=8),
    glob=st.sampled_from(WIDE),
)
def test_a_wildcard_rule_never_reaches_a_secret_route(path: str, flips: list[bool], glob: str) -> None:
    config = _config([glob])
    client = config.clients["c"]  # type: ignore[attr-defined]
    try:
        target = canonicalize(_spell(path, flips).encode())
        decide(client, "GET", target, config)  # type: ignore[arg-type]
    except GatewayError as error:
        assert error.status in (400, 403)
        return
    pytest.fail(f"{glob} allowed {path}")


@pytest.mark.parametrize("path", SECRET_PATHS)
def test_a_rule_that_names_the_route_allows_it(path: str) -> None:
    route = secret_route(path)
    assert route is not None
    glob = route.glob.replace("*/", "internal/", 1) if "/*/" in route.glob else route.glob
    config = _config([glob])
    decision = decide(config.clients["c"], "GET", canonicalize(path.encode()), config)  # type: ignore[attr-defined,arg-type]
    assert decision.key == "k"
    assert naming_rules(config)  # type: ignore[arg-type]


def test_v2_auth_is_never_relayed_whatever_the_rules_say() -> None:
    config = _config(["/v2/_auth", "/v2/**", "/**"])
    with pytest.raises(SecretRouteBlocked):
        decide(config.clients["c"], "GET", canonicalize(b"/v2/_auth?service=x&scope=y"), config)  # type: ignore[attr-defined,arg-type]


def test_ordinary_routes_are_not_secret_and_wide_rules_do_not_warn() -> None:
    for path in (
        "/api/packages/internal/list",
        "/nuget/internal/v3/index.json",
        "/npm/internal/left-pad",
        "/v2/internal/app/manifests/1",
    ):
        assert secret_route(path) is None
    assert naming_rules(_config(WIDE)) == []  # type: ignore[arg-type]
    with pytest.raises(SecretRouteNotNamed):
        decide(
            _config(["/api/**"]).clients["c"],
            "GET",
            canonicalize(b"/api/api-keys/list"),
            _config(["/api/**"]),
        )  # type: ignore[attr-defined,arg-type]


@pytest.mark.parametrize("route", SECRET_ROUTES, ids=lambda r: r.glob)
def test_only_literal_globs_name_a_route(route: object) -> None:
    assert not names("/**", route)  # type: ignore[arg-type]
    assert not names("/api/**", route)  # type: ignore[arg-type]


def _fullwidth(ch: str) -> str:
    return chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch


SPELLINGS = {
    "upper": str.upper,
    "percent": lambda ch: "".join(f"%{b:02X}" for b in ch.encode()),
    "fullwidth": _fullwidth,  # NFKC folds U+FF41 to a and U+FF0F to /
    "backslash": lambda ch: "\\" if ch == "/" else ch,
    "as is": lambda ch: ch,
}


@settings(max_examples=500, deadline=None)
@given(
    path=st.sampled_from(SECRET_PATHS),
    picks=st.lists(st.sampled_from(sorted(SPELLINGS)), min_size=1, max_size=12),
    dots=st.booleans(),
)
def test_every_spelling_of_a_secret_route_is_recognised(path: str, picks: list[str], dots: bool) -> None:
    """Whatever mix of case, percent-escapes, full-width forms and backslashes spells the path (and
    trailing dots on its segments), the generous reading finds the route; the leading ``/`` stays."""
    spelled = "/" + "".join(SPELLINGS[picks[i % len(picks)]](ch) for i, ch in enumerate(path[1:]))
    if dots:
        spelled = spelled.replace("/", "./").replace("%2F", ".%2F")
    assert secret_route(spelled) is not None, spelled
