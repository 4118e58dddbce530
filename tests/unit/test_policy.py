from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.canonical import Route, Target
from gateway.errors import GatewayError, NativeMethodNotAllowed, NoMatchingRule
from gateway.policy import decide, glob_regex, rule_matches
from gateway.settings import build_config, token_hash


def target(
    path: str, route: Route = Route.OTHER, native: str | None = None, feed: str | None = None
) -> Target:
    return Target(path=path, query=b"", route=route, native_method=native, feed_type=None, feed=feed)


RAW: dict[str, Any] = {
    "upstream": {"url": "http://p"},
    "keys": {
        "push": {"value": "k1"},
        "read": {"value": "k2"},
        "native": {"value": "k3"},
        "feed": {"value": "k4"},
    },
    "native_api": {"allow": ["Feeds_GetFeeds", "Licenses_GetLicenses"]},
    "clients": [
        {
            "name": "ci",
            "tokens": ["sha256:" + token_hash("t")],
            "rules": [
                {"methods": ["PUT", "POST"], "paths": ["/nuget/internal/**"], "key": "push"},
                {"feeds": ["Team-Feed"], "methods": ["DELETE"], "key": "feed"},
                {"methods": ["GET", "HEAD"], "key": "read"},
                {"native": ["feeds_getfeeds"], "key": "native"},
            ],
        }
    ],
}
CONFIG = build_config(RAW, env={})
CI = CONFIG.clients["ci"]


@pytest.mark.parametrize(
    ("method", "t", "key", "rule"),
    [
        ("PUT", target("/nuget/internal"), "push", 0),
        ("POST", target("/NuGet/Internal/package/x"), "push", 0),
        ("DELETE", target("/npm/team-feed/x", Route.FEED, feed="team-feed"), "feed", 1),
        ("GET", target("/nuget/internal/v3/index.json"), "read", 2),
        ("HEAD", target("/anything"), "read", 2),
        ("GET", target("/api/json/Feeds_GetFeeds", Route.NATIVE, "Feeds_GetFeeds"), "native", 3),
        ("POST", target("/api/json/FEEDS_GETFEEDS", Route.NATIVE, "FEEDS_GETFEEDS"), "native", 3),
    ],
)
def test_first_matching_rule_wins(method: str, t: Target, key: str, rule: int) -> None:
    decision = decide(CI, method, t, CONFIG)
    assert (decision.key, decision.rule, decision.client) == (key, rule, "ci")


@pytest.mark.parametrize(
    ("method", "t", "error"),
    [
        ("PUT", target("/nuget/other/x"), NoMatchingRule),
        ("PUT", target("/nuget/internalx"), NoMatchingRule),
        ("DELETE", target("/npm/other/x", Route.FEED, feed="other"), NoMatchingRule),
        ("OPTIONS", target("/x"), NoMatchingRule),
        (
            "GET",
            target("/api/json/Licenses_GetLicenses", Route.NATIVE, "Licenses_GetLicenses"),
            NoMatchingRule,
        ),
        ("GET", target("/api/json/Users_GetUsers", Route.NATIVE, "Users_GetUsers"), NativeMethodNotAllowed),
    ],
)
def test_refusals(method: str, t: Target, error: type[Exception]) -> None:
    with pytest.raises(error):
        decide(CI, method, t, CONFIG)


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        (
            "/nuget/internal/**",
            ["/nuget/internal", "/nuget/internal/", "/nuget/internal/a/b"],
            ["/nuget/internalx", "/nuget"],
        ),
        ("/npm/*/x", ["/npm/a/x", "/npm//x"], ["/npm/a/b/x", "/npm/a/x/y"]),
        ("/a/*.tgz", ["/a/p.tgz", "/A/P.TGZ"], ["/a/b/p.tgz", "/a/ptgz"]),
        ("/**", ["/", "/a/b"], []),
        ("/a/b", ["/a/b"], ["/a/b/", "/a/bc"]),
    ],
)
def test_globs(pattern: str, yes: list[str], no: list[str]) -> None:
    regex = glob_regex(pattern)
    assert all(regex.fullmatch(p) for p in yes)
    assert not any(regex.fullmatch(p) for p in no)


_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_RULES = st.lists(
    st.fixed_dictionaries(
        {"key": st.just("read")},
        optional={
            "methods": st.lists(st.sampled_from(_METHODS), min_size=1, max_size=3, unique=True),
            "paths": st.lists(st.sampled_from(["/a/**", "/a/b", "/*/b", "/c/**"]), min_size=1, max_size=2),
        },
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    rules=_RULES,
    method=st.sampled_from([*_METHODS, "PROPFIND", "get"]),
    path=st.sampled_from(["/a/b", "/a", "/x/b", "/c/d/e", "/"]),
)
def test_the_method_index_picks_what_a_scan_of_every_rule_picks(
    rules: list[dict[str, Any]], method: str, path: str
) -> None:
    """Whatever the rules and the method (one outside the index too), the decision is the first rule of
    all, in order, that matches: the per-method index only skips rules that cannot."""
    config = build_config(
        {**RAW, "clients": [{"name": "c", "tokens": RAW["clients"][0]["tokens"], "rules": rules}]}, env={}
    )
    client, t = config.clients["c"], target(path)
    expected = next((i for i, rule in enumerate(client.rules) if rule_matches(rule, method, t)), None)
    try:
        got: int | None = decide(client, method, t, config).rule
    except GatewayError:
        got = None
    assert got == expected


def test_a_client_that_is_not_the_configs_own_is_scanned_whole() -> None:
    """A same-named client from elsewhere (a test, the explain command) is never judged by the index of
    the config's client of that name."""
    other = build_config(
        {**RAW, "clients": [{**RAW["clients"][0], "rules": [{"methods": ["DELETE"], "key": "push"}]}]}, env={}
    )
    assert decide(other.clients["ci"], "DELETE", target("/x"), CONFIG).key == "push"
