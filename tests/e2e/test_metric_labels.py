"""Metric label values stay bounded: random paths, queries and tokens sent through the real gateway never show
up in /metrics, and every label value is from a small known set (client names, codes, status classes)."""

from __future__ import annotations

import re

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from tests.e2e.conftest import TOKEN_CI, TOKEN_READER, Gateway

# "zq" prefix: a needle can never be a number or a word /metrics contains anyway (a false positive)
SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=4, max_size=16).map(
    lambda s: "zq" + s
)
SAMPLE = re.compile(r"^[a-z_:]+\{(?P<labels>.*)\} ", re.M)
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def known_codes() -> set[str]:
    """Every stable error code in gateway/errors.py (walks the one exception tree)."""
    codes: set[str] = set()
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        cls = todo.pop()
        codes.add(str(getattr(cls, "code", "")))
        todo.extend(cls.__subclasses__())
    return codes


ALLOWED: dict[str, set[str]] = {
    "client": {"ci", "reader", "-"},
    "decision": {"allow", "deny", "error"},
    "status_class": {f"{n}xx" for n in range(1, 6)} | {"none"},
    "direction": {"in", "out"},
    "who": {"all", "anonymous"},
    "result": {"success", "failure"},
    "component": {"database", "license", "service", "replication_server", "replication_client"},
    "version": {"2026.1.0"},  # the stand-in's ProGet version
    "le": set(),  # numeric bucket bounds, checked separately
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.lists(SEGMENT, min_size=1, max_size=4),
    query=SEGMENT,
    token=SEGMENT,
    known=st.sampled_from([TOKEN_CI, TOKEN_READER, None]),
    method=st.sampled_from(["GET", "PUT", "DELETE", "POST"]),
)
def test_no_label_value_carries_a_path_query_or_token(
    gateway: Gateway, path: list[str], query: str, token: str, known: str | None, method: str
) -> None:
    secret = "pgw_" + token
    headers = {"X-ApiKey": known if known else secret}
    url = "/api/" + "/".join(path) + "?q=" + query
    httpx.request(method, gateway.url + url, headers=headers, timeout=10)
    text = httpx.get(gateway.admin_url + "/metrics").text
    values = [(k, v) for m in SAMPLE.finditer(text) for k, v in LABEL.findall(m["labels"])]
    assert values
    for needle in [*path, query, secret, token]:
        assert needle not in text, f"{needle!r} reached /metrics"
    codes = known_codes() | {"ok"}
    for key, value in values:
        if key == "le":
            assert value == "+Inf" or float(value) >= 0
        elif key in ("code", "reason"):
            assert value in codes, f"{key}={value!r} is not an error code"
        elif key in ALLOWED:
            assert value in ALLOWED[key], f"{key}={value!r} unbounded"
        else:
            assert key in ("mode", "backend"), f"unexpected label {key}"
