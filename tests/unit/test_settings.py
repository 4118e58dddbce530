from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import ConfigError, TokenRecord, build_config, load_config, token_hash
from tests.certs import certificates

ROOT = Path(__file__).resolve().parents[2]
HASH = "sha256:" + token_hash("pgw_t")

GOOD: dict[str, Any] = {
    "upstream": {"url": "http://proget.internal:8624/"},
    "keys": {"read": {"env": "K_READ"}, "push": {"value": "push-key"}},
    "native_api": {"allow": ["Feeds_GetFeeds"]},
    "clients": [
        {"name": "ci", "tokens": [HASH], "rules": [{"methods": ["GET"], "key": "read"}]},
        {"name": "pod", "anonymous": True, "rules": [{"native": ["feeds_getfeeds"], "key": "push"}]},
    ],
}
ENV = {"K_READ": "read-key"}


def problems(raw: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_config(raw, env=ENV if env is None else env)
    return info.value.problems


def test_valid_config_is_frozen_and_indexed() -> None:
    config = build_config(GOOD, env=ENV)
    assert config.settings.upstream.url == "http://proget.internal:8624"
    assert config.token_index == {token_hash("pgw_t"): TokenRecord("ci")}
    assert config.anonymous is not None and config.anonymous.name == "pod"
    assert config.keys["read"].secret.get_secret_value() == "read-key"
    assert config.native_allow == frozenset({"feeds_getfeeds"})
    with pytest.raises(Exception, match="frozen"):
        config.settings.listen.port = 1  # type: ignore[misc]


def test_every_problem_is_reported_at_once() -> None:
    raw = copy.deepcopy(GOOD)
    raw["bogus"] = 1
    raw["clients"][0]["tokens"] = ["sha256:ABC"]
    raw["clients"][0]["rules"].append({"paths": ["/a/b**"], "key": "nope"})
    raw["clients"][1]["rules"][0]["native"] = ["Users_DeleteUser"]
    raw["clients"].append({"name": "ci", "anonymous": True, "rules": [{"key": "read"}]})
    found = problems(raw, env={})
    assert sorted(found) == sorted(
        [
            "bogus: unknown setting (a typo? config/example.yaml lists every setting)",
            "clients[0].tokens[0].hash: a token must be 'sha256:' followed by 64 lowercase hex digits",
            "clients[0].rules[1].paths[0]: malformed glob '/a/b**': '**' must be a whole segment; no ?, [ ] or spaces",
            "clients[0].rules[1].key: unknown key 'nope' (define it under 'keys')",
            "clients[1].rules[0].native[0]: 'Users_DeleteUser' is not in native_api.allow",
            "clients[2].name: duplicate client name 'ci' (also clients[0])",
            "clients: more than one anonymous client (clients[1], clients[2]); at most one is allowed",
            "keys.read.env: environment variable K_READ is not set",
        ]
    )


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"upstream": {"url": "ftp://x"}}, "upstream.url: must be an http:// or https:// URL with a host"),
        (
            {"upstream": {"url": "http://u:p@x"}},
            "upstream.url: must not carry credentials; keys go in 'keys'",
        ),
        ({"upstream": {"url": "http://x/proget"}}, "upstream.url: must be an origin"),
        ({"keys": {"read": {"env": "A", "value": "b"}}}, "keys.read: give exactly one of env, file, value"),
        ({"keys": {"read": {"value": "has space"}}}, "keys.read: the key is empty or has characters"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "trusted_proxies[0]"),
        ({"public_url": "https://gw.example/path"}, "public_url: must be an origin"),
        (
            {"limits": {"max_rewrite_body_bytes": 2048, "max_inspected_bytes_in_flight": 1024}},
            "limits: max_inspected_bytes_in_flight must be at least max_rewrite_body_bytes",
        ),
        (
            {"listen": {"port": 8080}, "admin": {"port": 8080}},
            "admin.port: 8080 is also listen.port; the admin endpoints never share",
        ),
    ],
)
def test_field_problems(patch: dict[str, Any], expected: str) -> None:
    raw = {**copy.deepcopy(GOOD), **patch}
    found = problems(raw)
    assert any(p.startswith(expected) for p in found), found


def test_rule_shape_problems() -> None:
    raw = copy.deepcopy(GOOD)
    raw["clients"][0]["rules"] = [
        {"native": ["Feeds_GetFeeds"], "paths": ["/x"], "key": "read"},
        {"methods": [], "key": "read"},
    ]
    raw["clients"][0]["tokens"] = []
    found = problems(raw)
    assert "clients[0]: a client needs 'tokens', 'jwt' or 'anonymous: true'" in found
    assert any("takes no paths or feeds" in p for p in found)
    assert any("'methods' is empty" in p for p in found)


def test_secret_values_never_appear_in_problems(tmp_path: Path) -> None:
    raw = copy.deepcopy(GOOD)
    raw["keys"]["bad"] = {"value": "secret value with spaces"}
    raw["keys"]["missing"] = {"file": str(tmp_path / "nope")}
    found = problems(raw)
    assert not any("secret value" in p for p in found)
    assert any(p.startswith("keys.missing.file: cannot read") for p in found)


def test_key_from_file_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("file-key\n")
    raw = copy.deepcopy(GOOD)
    raw["keys"]["read"] = {"file": "k"}
    config = build_config(raw, base=tmp_path, env={})
    assert config.keys["read"].x_apikey == b"file-key"
    assert repr(config.keys["read"]) == "UpstreamKey(name='read')"


def test_shipped_configs_validate(tmp_path: Path) -> None:
    load_config(ROOT / "config" / "demo.yaml")
    secret = tmp_path / "nuget-push"
    secret.write_text("k")
    text = (
        (ROOT / "config" / "example.yaml").read_text().replace("/run/secrets/proget/nuget-push", str(secret))
    )
    (tmp_path / "example.yaml").write_text(text)
    config = load_config(tmp_path / "example.yaml", env={"PROGET_KEY_FEEDS_READ": "r"})
    assert [c.name for c in config.settings.clients] == ["ci-nuget", "sidecar"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("upstream:\n  url: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith("line ")


def test_cross_client_problems_come_in_the_same_run_as_the_others() -> None:
    raw = copy.deepcopy(GOOD)
    raw["bogus"] = 1
    raw["trusted_proxies"] = ["10.0.0.0/33"]
    raw["clients"].append({"name": "other", "tokens": [HASH], "rules": [{"key": "read"}]})
    assert problems(raw) == [
        "trusted_proxies[0]: must be an IP network such as 10.0.0.0/8",
        "bogus: unknown setting (a typo? config/example.yaml lists every setting)",
        "clients[2].tokens: a token hash is also used by 'ci'",
    ]


def test_names_are_matched_whole() -> None:
    raw = copy.deepcopy(GOOD)
    raw["clients"][0]["name"] = "bad client!"
    raw["keys"]["-x"] = {"value": "k"}
    found = problems(raw)
    assert any(p.startswith("clients[0].name: has characters or a form not allowed here") for p in found)
    assert any(p.startswith("keys.-x: has characters or a form not allowed here") for p in found)


def test_strip_request_headers_are_validated_all_at_once() -> None:
    raw = {**GOOD, "strip_request_headers": ["X-Corp-User", "x_site_*", "a b", "*", "Content-*", "HOST", 3]}
    assert problems(raw) == [
        "strip_request_headers[2]: 'a b' is not a header name (letters, digits, !#$%&'+.^_`|~-; a final '*')",
        "strip_request_headers[3]: '*' is not a header name (letters, digits, !#$%&'+.^_`|~-; a final '*')",
        "strip_request_headers[4]: 'Content-*' would strip content-type, content-encoding, content-length,"
        " which ProGet must receive as checked",
        "strip_request_headers[5]: 'HOST' would strip host, which ProGet must receive as checked",
        "strip_request_headers[6]: must be text (a string)",
    ]
    ok = build_config({**GOOD, "strip_request_headers": ["X-Corp-User", "x_site_*"]}, env=ENV)
    assert ok.settings.strip_request_headers == ("X-Corp-User", "x_site_*")


def test_tracing_must_say_where_spans_go_and_carries_no_credential() -> None:
    from gateway.settings import tracing_wanted

    assert problems({**GOOD, "tracing": {"sample_ratio": 0.5}}) == [
        "tracing.otlp_endpoint: required (or set OTEL_EXPORTER_OTLP_ENDPOINT): where spans are sent"
    ]
    assert build_config({**GOOD, "tracing": {}}, env={**ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert problems({**GOOD, "tracing": {"otlp_endpoint": "http://u:secret@c:4318", "sample_ratio": 2}}) == [
        "tracing.otlp_endpoint: must not carry credentials; use OTEL_EXPORTER_OTLP_HEADERS",
        "tracing.sample_ratio: must be at most 1",
    ]
    plain = build_config(GOOD, env=ENV).settings
    traced = build_config({**GOOD, "tracing": {"otlp_endpoint": "http://c:4318/"}}, env=ENV).settings
    assert traced.tracing is not None and traced.tracing.otlp_endpoint == "http://c:4318"
    assert (tracing_wanted(plain, {}), tracing_wanted(traced, {})) == (False, True)
    assert tracing_wanted(plain, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing_wanted(traced, {"OTEL_SDK_DISABLED": "true"})


def test_the_upstream_ca_file_is_read_from_the_config_folder_and_must_load(tmp_path: Path) -> None:
    """A missing or unreadable bundle is a config problem (check, start and reload), not a traceback."""
    ca, _, _ = certificates(tmp_path)
    (tmp_path / "junk.pem").write_text("not a certificate")

    def with_ca(name: str) -> dict[str, Any]:
        raw = copy.deepcopy(GOOD)
        raw["upstream"] = {"url": "https://proget.internal", "tls": {"ca_file": name}}
        return raw

    config = build_config(with_ca(ca.name), env=ENV, base=tmp_path)
    assert config.settings.upstream.tls.ca_file == ca  # relative: from the config's folder
    for name, reason in [("missing.pem", "No such file"), ("junk.pem", "no PEM certificate in it")]:
        with pytest.raises(ConfigError) as info:
            build_config(with_ca(name), env=ENV, base=tmp_path)
        assert [p for p in info.value.problems if p.startswith("upstream.tls.ca_file:")] == [
            f"upstream.tls.ca_file: {tmp_path / name} cannot be read as CA certificates ({reason}"
            + ("" if reason != "No such file" else " or directory")
            + ")"
        ]
