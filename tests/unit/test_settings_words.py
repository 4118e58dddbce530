"""Every config problem is said in the project's own words, never the validation library's or Python's
("Tuple should have at least 1 item after validation", "FileNotFoundError")."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.settings import ConfigError, build_config

GOOD: dict[str, Any] = {
    "upstream": {"url": "http://proget.internal:8624", "timeouts": {"connect": 5}, "tls": {"verify": True}},
    "listen": {"host": "127.0.0.1", "port": 8080},
    "keys": {"read": {"value": "read-key-0123", "expires": "2030-01-01T00:00:00Z"}},
    "trusted_proxies": ["10.0.0.0/8"],
    "native_api": {"allow": ["Feeds_GetFeeds"]},
    "limits": {"max_target_bytes": 8192, "default_client": {"concurrency": 4}},
    "rate_limit": {"backend": "local", "shadow": False},
    "shutdown": {"drain_delay": 1, "timeout": 5},
    "clients": [
        {
            "name": "ci",
            "tokens": ["sha256:" + "a" * 64, {"hash": "sha256:" + "b" * 64, "label": "q4"}],
            "rules": [{"methods": ["GET"], "paths": ["/api/**"], "key": "read"}],
        }
    ],
}
LIBRARY_WORDS = (
    "Input should",
    "should have",
    "validation",
    "Error",
    "Tuple",
    "String should",
    "Value error",
)


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _leaves(v, (*path, k))] + ([path] if path else [])
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _leaves(v, (*path, i))] + [path]
    return [path]


LEAVES = _leaves(GOOD)
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["x", "bogus"]), st.integers(), max_size=2),
)


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ipaddress, given True as a network
@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(LEAVES), value=WRONG)
def test_no_problem_is_in_the_librarys_words(path: tuple[Any, ...], value: Any) -> None:
    doc = copy.deepcopy(GOOD)
    _set(doc, path, value)
    try:
        build_config(doc, env={})
    except ConfigError as err:
        for problem in err.problems:
            assert not any(word in problem for word in LIBRARY_WORDS), problem


def test_the_examples_from_the_issue(tmp_path: Path) -> None:
    doc = copy.deepcopy(GOOD)
    doc["clients"][0]["rules"] = []
    doc["keys"]["read"] = {"file": str(tmp_path / "absent.key")}
    with pytest.raises(ConfigError) as info:
        build_config(doc, env={})
    assert info.value.problems == [
        "clients[0].rules: is empty: give at least 1 entry",
        f"keys.read.file: cannot read {tmp_path / 'absent.key'}: no such file or directory",
    ]


def test_an_issuer_that_does_not_resolve_is_said_in_our_words() -> None:
    """``check`` probes each JWT issuer; aiohttp's ClientConnectorDNSError must not reach the operator."""
    import asyncio

    from gateway.workload_identity import JwtVerifier

    client = {
        "name": "k",
        "jwt": {"issuer": "https://issuer.example.invalid", "audience": "a"},
        "rules": [{"key": "k"}],
    }
    config = build_config(
        {"upstream": {"url": "http://p"}, "keys": {"k": {"value": "key"}}, "clients": [client]}
    )

    async def probe() -> list[str]:
        async with JwtVerifier(config) as verifier:
            return await verifier.probe()

    (problem,) = asyncio.run(probe())
    assert problem == (
        "clients.k.jwt: https://issuer.example.invalid/.well-known/openid-configuration: the host name does not resolve"
    )
